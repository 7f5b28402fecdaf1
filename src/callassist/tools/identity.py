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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field

from callassist.tools.registry import (
    PromptContext,
    PromptLines,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    tool,
)

CODE_DIGITS = 6
CODE_TTL_S = 300.0
MAX_SENDS = 2  # codes texted in one call
MAX_TRIES = 3  # wrong codes before the code is void
# Across calls (a caller can call again and again, with any caller ID): texts per number and per
# hour in all, and wrong codes per number, before codes are refused. Kept in memory, per process.
SENDS_PER_NUMBER_PER_DAY = 3
FAILURES_PER_NUMBER_PER_DAY = 10
SENDS_PER_HOUR = 30
_DAY_S, _HOUR_S = 86_400.0, 3_600.0
_MAX_NUMBERS = 10_000


class CodeSender(Protocol):
    """Sends one text message now (not through the owner's notice outbox)."""

    async def send_text(self, to: str, from_number: str | None, body: str) -> object: ...


# The earlier calls of a number, one short line each (newest first), for a verified caller.
HistoryLoader = Callable[[str], Awaitable[list[str]]]


@dataclass
class PendingCode:
    """This call's code: `sends` is reserved before a text goes out, so calls made in parallel by
    one response cannot send more than MAX_SENDS."""

    digest: bytes | None = None  # None until a text went out
    expires_at: float = 0.0
    sends: int = 0
    tries: int = 0


class CodeLimits:
    """Limits across calls, so a code can't be guessed over many calls and texts can't be pumped to
    numbers of an attacker's choosing: bounded memory, the oldest numbers forgotten first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sends: OrderedDict[str, list[float]] = OrderedDict()
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._recent: deque[float] = deque()

    def refusal(self, number: str) -> str | None:
        """Why no code may be texted to `number` now, or None."""
        now = self._clock()
        while self._recent and now - self._recent[0] > _HOUR_S:
            self._recent.popleft()
        if len(self._recent) >= SENDS_PER_HOUR:
            return "Too many codes were sent in the last hour."
        if len(self._recent_in(self._sends, number, now)) >= SENDS_PER_NUMBER_PER_DAY:
            return "Too many codes were sent to this number today."
        if self.locked(number):
            return "Too many wrong codes were given for this number today."
        return None

    def locked(self, number: str) -> bool:
        return len(self._recent_in(self._failures, number, self._clock())) >= FAILURES_PER_NUMBER_PER_DAY

    def sent(self, number: str) -> None:
        now = self._clock()
        self._recent.append(now)
        self._note(self._sends, number, now)

    def failed(self, number: str) -> None:
        self._note(self._failures, number, self._clock())

    @staticmethod
    def _recent_in(table: OrderedDict[str, list[float]], number: str, now: float) -> list[float]:
        times = [at for at in table.get(number, []) if now - at <= _DAY_S]
        if number in table:
            table[number] = times
        return times

    @staticmethod
    def _note(table: OrderedDict[str, list[float]], number: str, now: float) -> None:
        table.setdefault(number, []).append(now)
        table.move_to_end(number)
        while len(table) > _MAX_NUMBERS:
            table.popitem(last=False)


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


def code_awaited(pending: PendingCode | None, now: float | None = None) -> bool:
    """Is a code texted to the caller still waiting to be typed (sent, unexpired, tries left)?"""
    if pending is None or pending.digest is None:
        return False
    return pending.tries < MAX_TRIES and (now or time.monotonic()) < pending.expires_at


def code_typed(keypad: str) -> bool:
    """Enough digits pressed for a whole code."""
    return len(_digits(keypad)) >= CODE_DIGITS


def verification_possible(ctx: ToolContext) -> bool:
    return bool(ctx.caller_number and getattr(ctx.services, "codes", None) is not None)


# Their part of the assistant's instructions, with the calendar's (a caller's own bookings need a
# confirmed number): only while the caller's number is not confirmed.
def _unconfirmed(context: PromptContext) -> bool:
    return not (context.is_owner or context.caller_verified)


def _send_code_prompt(context: PromptContext) -> PromptLines:
    if not _unconfirmed(context):
        return PromptLines()
    return PromptLines(
        topic="Calendar",
        lines=("To confirm their number, offer to text them a code with send_verification_code.",),
    )


def _check_code_prompt(context: PromptContext) -> PromptLines:
    if not _unconfirmed(context):
        return PromptLines()
    return PromptLines(
        topic="Calendar",
        lines=("Then check what they read out or type with check_verification_code.",),
    )


@tool(prompt=_send_code_prompt)
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
    pending: PendingCode = ctx.verification or PendingCode()
    if pending.sends >= MAX_SENDS:
        raise ToolError("Two codes were sent already. Offer to take a message instead.")
    limits: CodeLimits | None = getattr(ctx.services, "code_limits", None)
    refusal = limits.refusal(ctx.caller_number) if limits is not None else None
    if refusal is not None:
        ctx.logger.warning("verification code refused: %s", refusal)
        raise ToolError(f"{refusal} Offer to take a message instead.")
    # Reserved before the text goes out (the send awaits: another call could slip in meanwhile).
    pending.sends += 1
    ctx.verification = pending
    if limits is not None:
        limits.sent(ctx.caller_number)
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    owner = getattr(ctx.services, "owner_name", None) or "the assistant"
    try:
        await codes.send_text(
            ctx.caller_number, ctx.called_number, f"Your code for {owner}'s phone assistant: {code}"
        )
    except Exception as exc:  # the caller hears an apology; the log gets the kind of failure only
        ctx.logger.warning("verification code not sent (%s)", type(exc).__name__)
        if pending.digest is None:
            ctx.verification = None
        raise ToolError("The text couldn't be sent. Apologise and offer to take a message.") from None
    pending.digest, pending.expires_at, pending.tries = (
        _digest(ctx.call_sid, code), time.monotonic() + CODE_TTL_S, 0,
    )  # fmt: skip
    ctx.keypad = ""
    return {
        "sent": True,
        "say": f"I've texted a {CODE_DIGITS}-digit code to the phone you're calling from. Please read "
        "it to me, or type it on your keypad.",
    }


@tool(prompt=_check_code_prompt)
async def check_verification_code(ctx: ToolContext, args: CheckCodeArgs) -> dict[str, Any]:
    """Check the code the caller read out (or typed on the keypad) after send_verification_code.
    Once it matches, their bookings can be found, moved or cancelled, and the answer lists what
    their earlier calls with {owner}'s assistant were about."""
    if ctx.caller_verified or ctx.is_owner:
        return {"verified": True, "say": "Their number is already confirmed."}
    pending: PendingCode | None = ctx.verification
    if pending is None or pending.digest is None:
        raise ToolError("No code has been sent in this call: use send_verification_code first.")
    limits: CodeLimits | None = getattr(ctx.services, "code_limits", None)
    if limits is not None and ctx.caller_number and limits.locked(ctx.caller_number):
        raise ToolError("Too many wrong codes were given for this number today. Offer to take a message.")
    code = _digits(args.code or "") or _digits(ctx.keypad)[-CODE_DIGITS:]
    ctx.keypad = ""
    if not code:
        raise ToolError("No code was given. Ask the caller to read it out or type it on the keypad.")
    if time.monotonic() > pending.expires_at:
        raise ToolError("The code has expired. Offer to send a new one.")
    pending.tries += 1
    if not hmac.compare_digest(_digest(ctx.call_sid, code), pending.digest):
        if limits is not None and ctx.caller_number:
            limits.failed(ctx.caller_number)
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


IDENTITY_TOOLS: tuple[Tool, ...] = (send_verification_code, check_verification_code)


def register_identity_tools(registry: ToolRegistry) -> None:
    """Add the verification tools to `registry` (for registries built tool by tool; see tools.all_tools)."""
    registry.add(*IDENTITY_TOOLS)
