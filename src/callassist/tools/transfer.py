"""transfer_to_owner: put the caller through to the owner, with a whisper, if the owner takes it.

The call core does the work (call/transfer.py): the assistant's short line is heard, the caller is
put on hold, the owner is rung and told who is calling and why in one sentence, and only a 1
pressed by the owner connects them. Otherwise the caller is back in the same conversation.

When the model may transfer is the owner's choice (CALLASSIST_TRANSFER): `always` when the caller
asks, `urgent` only when it is urgent, the caller insists or is a VIP contact. The tool is offered
only where a transfer can happen at all (settings.transfer_possible, and never on the owner's own
calls): see `tools.all_tools`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, Field

from callassist.caller_text import OneLine
from callassist.tools.registry import (
    CallEffect,
    PromptContext,
    PromptLines,
    Tool,
    ToolContext,
    ToolError,
    tool,
)

SUMMARY_CHARS = 160  # one sentence the owner hears before choosing


class TransferArgs(BaseModel):
    summary: OneLine = Field(
        min_length=3,
        max_length=SUMMARY_CHARS,
        description=(
            "One short sentence {owner} hears before taking the call: who is calling and what about, "
            "e.g. 'Alex Kim, about the roof leak, wants to move Thursday's visit'"
        ),
    )


def _urgent_prompt(context: PromptContext) -> PromptLines:
    owner = context.owner
    return PromptLines(
        topic="Transfer",
        lines=(
            f"You can put a caller through to {owner} with transfer_to_owner, but only when it is "
            f"urgent (an emergency, something that can't wait until {owner} calls back), when the "
            f"caller insists on speaking to {owner} after you offered to take a message, or when the "
            f"caller is one of {owner}'s VIP contacts. Otherwise offer to take a message.",
            *_how(owner),
        ),
    )


def _always_prompt(context: PromptContext) -> PromptLines:
    owner = context.owner
    return PromptLines(
        topic="Transfer",
        lines=(
            f"When the caller asks to speak to {owner}, you can put them through with transfer_to_owner.",
            *_how(owner),
        ),
    )


def _how(owner: str) -> tuple[str, ...]:
    return (
        f"Call it with one sentence for {owner}; then tell the caller in one short sentence that you "
        f"are trying {owner} and they will hear hold music, and say nothing more. If {owner} can't "
        "pick up you are told so: tell the caller and offer to take a message. Never promise that "
        f"{owner} will answer.",
    )


@tool(on_call={CallEffect.TRANSFER}, prompt=_urgent_prompt, notice_label="Put through")
async def transfer_to_owner(ctx: ToolContext, args: TransferArgs) -> dict[str, Any]:
    """Put the caller through to {owner}: they hold while {owner} is rung and told your one-sentence
    summary, and are connected if {owner} takes the call. If not, the caller is back with you."""
    if ctx.call is None or ctx.is_owner:
        raise ToolError("The call can't be put through from here; offer to take a message.")
    why_not = ctx.call.transfer_to_owner(args.summary)
    if why_not is not None:
        raise ToolError(why_not)
    return {
        "ok": True,
        "say": "Tell the caller in one short sentence that you're trying to reach them now and they "
        "will hear hold music. Nothing more.",
    }


def transfer_tool(policy: str) -> Tool:
    """The tool with the prompt lines of the owner's policy (`always` or `urgent`)."""
    prompt = _always_prompt if policy == "always" else _urgent_prompt
    return dataclasses.replace(transfer_to_owner, prompt=prompt)
