"""Fixtures for call tests: the whole chain over real sockets, checked for protocol faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.stack import StackFactory, stack_factory


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    async with stack_factory(tmp_path) as factory:
        yield factory
        # Every event callassist sent validated against the SDK's types; the fake stayed on protocol.
        assert factory.protocol_problems() == []
