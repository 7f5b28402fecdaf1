"""A tool that changes the world is never cut off mid-write by its deadline; others are."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field

from callassist.tools import registry as tool_registry
from callassist.tools.registry import ToolContext, ToolRegistry


class WhatArgs(BaseModel):
    what: str = Field(description="What to do")


def slow_tools(done: list[str], written: asyncio.Event | None = None) -> ToolRegistry:
    tools = ToolRegistry(default_timeout_s=0.05)

    async def slowly(what: str) -> dict[str, Any]:
        await asyncio.sleep(0.2)  # the write reaches the calendar...
        done.append(what)
        await asyncio.sleep(0.2)  # ...and its answer is slow to come back
        return {"done": what}

    @tools.tool(effects=True)
    async def book(ctx: ToolContext, args: WhatArgs) -> dict[str, Any]:
        """Book something."""
        return await slowly(args.what)

    @tools.tool(effects=True)
    async def book_forever(ctx: ToolContext, args: WhatArgs) -> dict[str, Any]:
        """Book something, very slowly."""
        await asyncio.sleep(0.3)
        done.append(args.what)
        if written is not None:
            written.set()
        await asyncio.sleep(30)
        return {}

    @tools.tool()
    async def look(ctx: ToolContext, args: WhatArgs) -> dict[str, Any]:
        """Look something up."""
        return await slowly(args.what)

    return tools


def ctx() -> ToolContext:
    return ToolContext(call_sid="CA1", caller_number="+15551230000", is_owner=False, services=None)


async def test_a_slow_booking_is_waited_for_and_a_slow_lookup_is_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tool_registry, "EFFECT_TIMEOUT_S", 2.0)
    done: list[str] = []
    tools = slow_tools(done)
    booked = await tools.call("book", "call_1", '{"what": "a table"}', ctx())
    assert booked.ok and booked.output["done"] == "a table" and done == ["a table"]
    looked = await tools.call("look", "call_2", '{"what": "x"}', ctx())
    assert looked.status == "timeout" and "didn't go through" in looked.output["error"]


async def test_a_booking_past_its_deadline_still_finishes_and_is_not_said_to_have_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tool_registry, "EFFECT_TIMEOUT_S", 0.1)
    done: list[str] = []
    written = asyncio.Event()
    tools = slow_tools(done, written)
    answer = await tools.call("book_forever", "call_1", '{"what": "a table"}', ctx())
    assert answer.status == "timeout" and "may still go through" in answer.output["error"]
    assert "didn't go through" not in answer.output["error"]
    [running] = list(tool_registry._UNFINISHED)
    await asyncio.wait_for(written.wait(), 5)  # the write carries on after the answer
    assert done == ["a table"]
    running.cancel()
