"""Tools that act on the call itself: hanging up once the conversation is over."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from callassist.tools.registry import ToolContext, ToolError, ToolRegistry


class EndCallArgs(BaseModel):
    reason: str = Field(
        default="done", max_length=200, description="Why the call ends, in a few words (for the record)"
    )


def register_call_tools(registry: ToolRegistry) -> None:
    @registry.tool()
    async def end_call(ctx: ToolContext, args: EndCallArgs) -> dict[str, Any]:
        """Hang up, once the caller has said goodbye or clearly has nothing more. Say your goodbye in
        the same turn, before calling this; the line closes when your goodbye has been heard."""
        if ctx.hang_up is None:
            raise ToolError("The call can't be ended from here; just say goodbye.")
        ctx.hang_up(args.reason)
        return {"hanging_up": True}
