"""The model engine protocol: what a call needs from the assistant's side, whatever the service.

An engine owns its connection (connect, configure, reconnect, rotate, close) and speaks the typed
vocabulary of `engine.events`. The call never sees wire events. Requests carry our own tag
(`request`), which comes back on the response it started or on the error that refused it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from callassist.engine.events import EngineEvent, SessionSetup


class EngineUnavailable(Exception):
    """The service could not be reached (or refused us) after every retry."""


# Called before every session (the first, and each replacement), with `replacing` True for a new
# session that takes over a call in progress; returns what that session starts with.
SetupHook = Callable[[bool], Awaitable[SessionSetup]]


class Engine(Protocol):
    # Connection ---------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the connection (no configuration yet). Raises EngineUnavailable if it can't."""

    async def configure(self, setup: SetupHook) -> None:
        """Set the first session up (`setup` says how, for it and every replacement), then accept
        audio."""

    async def events(self) -> AsyncIterator[EngineEvent]:
        """The service's events, across reconnects, until close(); ends with EngineLost if the
        service can't be reached any more."""
        yield  # type: ignore[misc]  # a protocol's body; implementations are generators

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool:
        """Configured and accepting events (False while a session is being replaced)."""

    @property
    def switching(self) -> bool:
        """A session is being replaced right now (a reconnect or a rotation)."""

    async def wait_ready(self, within_s: float) -> bool: ...

    async def settled(self, within_s: float) -> bool:
        """Wait (bounded) until no replacement is under way; True if then ready."""

    @property
    def buffered_frames(self) -> int:
        """Caller frames held for the next session (they arrived while it was down)."""

    @property
    def session_age(self) -> float: ...

    @property
    def reconnects(self) -> int: ...

    @property
    def rotations(self) -> int: ...

    async def rotate(self, quiet: Callable[[], bool]) -> bool:
        """Move to a fresh session at a moment when `quiet()` holds; False if nothing changed."""

    # The caller's audio --------------------------------------------------------------------------
    async def send_audio(self, payload: str) -> None:
        """One caller frame (base64 μ-law), forwarded as is; kept for the next session if down."""

    async def commit_input(self) -> bool:
        """Close the caller's turn now (they hung up mid-sentence) so it is transcribed."""

    # The conversation ----------------------------------------------------------------------------
    async def request_response(self, request: str, *, audio_only: bool = False) -> bool:
        """Ask for a response tagged `request`, under the session's own instructions."""

    async def request_summary(self, instructions: str) -> bool:
        """Ask for an out-of-band text response (tagged SUMMARY_REQUEST) that calls no tool."""

    async def cancel_response(self, response_id: str | None = None) -> bool: ...

    async def truncate(self, item_id: str, heard_ms: int) -> bool:
        """The caller heard only `heard_ms` of this assistant item: the rest was never said."""

    async def add_note(self, text: str) -> bool:
        """A system message the next response must take into account."""

    async def hold(self, on: bool) -> None:
        """The caller is on hold (a warm transfer rings the owner), or back: meanwhile the model
        neither hears them nor speaks. The call stops forwarding their audio either way."""

    async def add_tool_output(self, call_id: str, output_json: str) -> bool: ...
