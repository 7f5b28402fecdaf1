"""Tools that act on the call itself: hanging up once the conversation is over."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from callassist.tools.registry import (
    CallEffect,
    PromptContext,
    PromptLines,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    tool,
)


class EndCallArgs(BaseModel):
    reason: str = Field(
        default="done", max_length=200, description="Why the call ends, in a few words (for the record)"
    )


def _end_call_prompt(context: PromptContext) -> PromptLines:
    return PromptLines(
        topic="Ending",
        lines=(
            "When the caller says goodbye or clearly has nothing more, say a short goodbye and call "
            "end_call in the same turn. If they then say they have something more, carry on.",
        ),
    )


@tool(on_call={CallEffect.END_CALL}, prompt=_end_call_prompt)
async def end_call(ctx: ToolContext, args: EndCallArgs) -> dict[str, Any]:
    """Hang up, once the caller has said goodbye or clearly has nothing more. Say your goodbye in
    the same turn, before calling this; the line closes when your goodbye has been heard."""
    if ctx.call is None:
        raise ToolError("The call can't be ended from here; just say goodbye.")
    ctx.call.end_call(args.reason)
    return {"ending": True}


CALL_TOOLS: tuple[Tool, ...] = (end_call,)


def register_call_tools(registry: ToolRegistry) -> None:
    """Add the call tools to `registry` (for registries built tool by tool; see tools.all_tools)."""
    registry.add(*CALL_TOOLS)
