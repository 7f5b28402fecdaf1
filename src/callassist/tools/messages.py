"""take_message: a message for the owner, stored at once and sent to them after the call."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from callassist.caller_text import MESSAGE_CHARS, NAME_CHARS, OneLine
from callassist.tools.registry import (
    PromptContext,
    PromptLines,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    failure_note,
    tool,
)

_PHONE = re.compile(r"^\+?[0-9]{6,15}$")


class TakeMessageArgs(BaseModel):
    # Name and message are what the caller said: normalised to one clean line each (caller_text).
    caller_name: OneLine = Field(
        min_length=1,
        max_length=NAME_CHARS,
        description="The caller's name as they gave it (spelled as they spelled it)",
    )
    message: OneLine = Field(
        min_length=1, max_length=MESSAGE_CHARS, description="The message for {owner}, in the caller's words"
    )
    callback_number: str | None = Field(
        default=None,
        description="Number to call back, as digits (with + and the country code if the caller gave "
        "one); leave out when it is the number they are calling from",
    )
    urgency: Literal["low", "normal", "high", "urgent"] = Field(
        default="normal",
        description="How soon {owner} should see it: normal unless the caller says otherwise; urgent only "
        "if they say it can't wait",
    )

    @field_validator("callback_number")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        cleaned = re.sub(r"[\s().-]", "", value)
        if not _PHONE.match(cleaned):
            raise ValueError("must be a phone number; ask the caller to repeat it digit by digit")
        return cleaned


def _take_message_prompt(context: PromptContext) -> PromptLines:
    claim = "a message is saved"
    if context.is_owner:
        return PromptLines(claim=claim)  # a message for themself makes no sense
    return PromptLines(
        topic="Messages",
        lines=(
            f"When {context.owner} should call back or needs to know something, take a message: the "
            "caller's name, what it's about, a callback number if it isn't the one they're calling "
            "from, and how urgent it is. Read it back, then save it with take_message.",
        ),
        offer=f"take a message for {context.owner}",
        claim=claim,
    )


@tool(timeout_s=15.0, effects=True, prompt=_take_message_prompt, notice_label="Message")
async def take_message(ctx: ToolContext, args: TakeMessageArgs) -> dict[str, Any]:
    """Take a message for {owner}: the caller's name, what they want, how to call them back and how
    urgent it is. Read it back to the caller before saving it; {owner} gets it after the call."""
    if ctx.recorder is None:
        raise ToolError("Messages can't be saved right now. Apologise and ask them to call back later.")
    callback = args.callback_number or ctx.caller_number
    try:
        # Shielded: if the tool times out, the write still completes (and the owner still gets it).
        await asyncio.shield(
            ctx.recorder.message(
                caller_number=ctx.caller_number,
                caller_name=args.caller_name.strip(),
                callback_number=callback,
                message=args.message.strip(),
                urgency=args.urgency,
            )
        )
    except Exception as exc:
        # Not the exception's text: a database error quotes the row, the caller's words with it.
        ctx.logger.error("could not store a message: %s", failure_note(exc))
        raise ToolError(
            "The message could not be saved. Apologise and ask them to try again later."
        ) from None
    ctx.caller_name = args.caller_name.strip()
    owner = ctx.services.owner_name if ctx.services is not None else "the owner"
    when = "as soon as this call ends" if args.urgency in ("high", "urgent") else "after this call"
    return {
        "saved": True,
        "callback_number": callback,
        "say": f"I've taken your message; {owner} will get it {when}.",
    }


MESSAGE_TOOLS: tuple[Tool, ...] = (take_message,)


def register_message_tools(registry: ToolRegistry) -> None:
    """Add the message tool to `registry` (for registries built tool by tool; see tools.all_tools)."""
    registry.add(*MESSAGE_TOOLS)
