"""ask_for_keypad_entry: the model asks the caller to type a number, and is told what they typed.

The digits reach the conversation as a note once the caller presses # or stops typing (call/
conversation.py); they are never logged. A one-time code is not typed this way: it stays hidden
from the model (tools/identity.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from callassist.caller_text import OneLine
from callassist.tools.identity import code_awaited
from callassist.tools.registry import PromptContext, PromptLines, Tool, ToolContext, ToolError, tool


class KeypadEntryArgs(BaseModel):
    what: OneLine = Field(
        min_length=1,
        max_length=60,
        description="What the caller should type, in a few words (e.g. 'callback number', 'order number')",
    )


def _keypad_prompt(context: PromptContext) -> PromptLines:
    return PromptLines(
        topic="Keypad",
        lines=(
            "When a number is easier typed than said (a callback number, an order or account number), "
            "call ask_for_keypad_entry, then ask the caller to type it and press #; you will be told "
            "the digits. A note also tells you when the caller presses keys on their own.",
        ),
    )


@tool(prompt=_keypad_prompt)
async def ask_for_keypad_entry(ctx: ToolContext, args: KeypadEntryArgs) -> dict[str, Any]:
    """Get ready to receive a number the caller types on their phone's keypad (ending with #)."""
    if code_awaited(ctx.verification):
        raise ToolError("A verification code is being typed: finish that first (check_verification_code).")
    ctx.keypad = ""
    ctx.keypad_request = args.what
    return {"ok": True, "say": f"Ask the caller to type their {args.what} on the keypad, then press #."}


KEYPAD_TOOLS: tuple[Tool, ...] = (ask_for_keypad_entry,)
