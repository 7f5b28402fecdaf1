"""Who is calling: a one-time code texted to the caller's number, for callers whose caller ID the
carrier did not attest.

Caller ID is easy to fake. A caller's own bookings and what their earlier calls were about are
theirs only when the number is really theirs: the carrier attested it (SHAKEN/STIR level A), or
they read back (or type) a code sent by SMS to it. Without that they can still book, check
free/busy and leave a message; a change to a booking reaches the owner as a message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field

from callassist.tools.registry import ToolContext, ToolError, ToolRegistry

CODE_DIGITS = 6
CODE_TTL_S = 300.0
MAX_SENDS = 2  # codes texted in one call
MAX_TRIES = 3  # wrong codes before the code is void


class CodeSender(Protocol):
    """Sends one text message now (not through the owner's notice outbox)."""

    async def send_text(self, to: str, from_number: str | None, body: str) -> object: ...


# The earlier calls of a number, one short line each (newest first), for a verified caller.
HistoryLoader = Callable[[str], Awaitable[list[str]]]


@dataclass
class PendingCode:
    digest: bytes
    expires_at: float
    sends: int = 1
    tries: int = 0


class NoArgs(BaseModel):
    pass


class CheckCodeArgs(BaseModel):
    code: str | None = Field(
        default=None,
        max_length=24,
        description="The digits the caller read out, e.g. 482913; leave out when they typed them on the "
        "keypad",
    )


def _digest(call_sid: str | None, code: str) -> bytes:
    return hashlib.sha256(f"{call_sid}:{code}".encode()).digest()


def _digits(text: str) -> str:
    return "".join(character for character in text if character.isdigit())


def code_typed(keypad: str) -> bool:
    """Enough digits pressed for a whole code."""
    return len(_digits(keypad)) >= CODE_DIGITS


def verification_possible(ctx: ToolContext) -> bool:
    return bool(ctx.caller_number and getattr(ctx.services, "codes", None) is not None)


def register_identity_tools(registry: ToolRegistry) -> None:
    @registry.tool()
    async def send_verification_code(ctx: ToolContext, args: NoArgs) -> dict[str, Any]:
        """Text a one-time code to the number the caller is calling from, to confirm it is theirs.
        Needed before looking up, moving or cancelling their bookings or talking about their earlier
        calls with {owner}'s assistant. Ask first whether they can receive texts on this phone."""
        if ctx.caller_verified or ctx.is_owner:
            return {"verified": True, "say": "Their number is already confirmed: go ahead."}
        codes: CodeSender | None = getattr(ctx.services, "codes", None)
        if not ctx.caller_number:
            raise ToolError("The caller's number is hidden, so no code can be sent. Offer to take a message.")
        if codes is None:
            raise ToolError(
                "Codes can't be sent from this line. Offer to take a message with what they want changed."
            )
        pending: PendingCode | None = ctx.verification
        if pending is not None and pending.sends >= MAX_SENDS:
            raise ToolError("Two codes were sent already. Offer to take a message instead.")
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        owner = getattr(ctx.services, "owner_name", None) or "the assistant"
        try:
            await codes.send_text(
                ctx.caller_number, ctx.called_number, f"Your code for {owner}'s phone assistant: {code}"
            )
        except Exception as exc:  # the caller hears an apology; the log gets the kind of failure only
            ctx.logger.warning("verification code not sent (%s)", type(exc).__name__)
            raise ToolError("The text couldn't be sent. Apologise and offer to take a message.") from None
        ctx.verification = PendingCode(
            _digest(ctx.call_sid, code),
            time.monotonic() + CODE_TTL_S,
            sends=(pending.sends + 1) if pending else 1,
        )
        ctx.keypad = ""
        return {
            "sent": True,
            "say": f"I've texted a {CODE_DIGITS}-digit code to the phone you're calling from. Please read "
            "it to me, or type it on your keypad.",
        }

    @registry.tool()
    async def check_verification_code(ctx: ToolContext, args: CheckCodeArgs) -> dict[str, Any]:
        """Check the code the caller read out (or typed on the keypad) after send_verification_code.
        Once it matches, their bookings can be found, moved or cancelled, and the answer lists what
        their earlier calls with {owner}'s assistant were about."""
        if ctx.caller_verified or ctx.is_owner:
            return {"verified": True, "say": "Their number is already confirmed."}
        pending: PendingCode | None = ctx.verification
        if pending is None:
            raise ToolError("No code has been sent in this call: use send_verification_code first.")
        code = _digits(args.code or "") or _digits(ctx.keypad)[-CODE_DIGITS:]
        ctx.keypad = ""
        if not code:
            raise ToolError("No code was given. Ask the caller to read it out or type it on the keypad.")
        if time.monotonic() > pending.expires_at:
            raise ToolError("The code has expired. Offer to send a new one.")
        pending.tries += 1
        if not hmac.compare_digest(_digest(ctx.call_sid, code), pending.digest):
            if pending.tries >= MAX_TRIES:
                pending.expires_at = 0.0
                raise ToolError("That was the last try: the code no longer works. Offer to take a message.")
            raise ToolError("That code doesn't match. Ask the caller to check the text and say it again.")
        ctx.caller_verified = True
        ctx.verification = None
        ctx.logger.info("caller's number confirmed by a texted code")
        history: list[str] = []
        loader: HistoryLoader | None = getattr(ctx.services, "caller_history", None)
        if loader is not None and ctx.caller_number:
            try:
                history = await loader(ctx.caller_number)
            except Exception as exc:
                ctx.logger.warning("caller history unavailable (%s)", type(exc).__name__)
        return {
            "verified": True,
            # What earlier callers from this number said, summarised: context, never instructions.
            "earlier_calls": history,
            "say": "Thank you, that's confirmed.",
        }
