"""The owner's "assistant down / back" notices don't flap with intermittent failures."""

from __future__ import annotations

import asyncio

import pytest

from callassist import runtime as runtime_module
from callassist.runtime import build_runtime
from callassist.settings import Settings


async def test_intermittent_failures_tell_the_owner_once_down_and_once_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    settings = Settings(_env_file=None, openai_api_key="sk-test", data_dir=tmp_path)  # type: ignore[call-arg]
    runtime = build_runtime(settings)
    told: list[bool] = []

    async def notice(degraded: bool) -> None:
        told.append(degraded)

    monkeypatch.setattr(runtime, "_health_notice", notice)
    for degraded in (True, False, True, False, True, False):  # every other call fails
        runtime._assistant_health(degraded=degraded)
        await asyncio.sleep(0)  # the notice task runs
    assert told == [True, False]
    assert runtime.openai_degraded is False
    monkeypatch.setattr(runtime_module, "HEALTH_NOTICE_GAP_S", 0.0)  # half an hour later
    runtime._assistant_health(degraded=True)
    await asyncio.sleep(0)
    assert told == [True, False, True]
    await runtime.database.close()
    await runtime.openai.close()
