"""Why a simulated call could not go ahead: each error's message is one line meant for a human."""

from __future__ import annotations

from typing import Any


class SimulatorError(RuntimeError):
    """The simulated call could not go ahead; the message is meant for a human, one line."""

    # `call`: the SimulatedCall it happened on, if any (not imported: simulator/call.py imports this).
    def __init__(self, message: str, *, call: Any = None) -> None:
        super().__init__(message)
        self.call = call


class WebhookError(SimulatorError):
    """A webhook could not be reached, answered non-2xx (Twilio 11200) or returned no TwiML (12100)."""

    def __init__(self, message: str, *, status: int | None = None, call: Any = None) -> None:
        super().__init__(message, call=call)
        self.status = status


class StreamRejected(SimulatorError):
    """The media stream WebSocket was refused (HTTP status) or closed before `start` could be sent."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        close_code: int | None = None,
        call: Any = None,
    ) -> None:
        super().__init__(message, call=call)
        self.status = status
        self.close_code = close_code


class CallEndedError(SimulatorError):
    """Audio or DTMF was to be sent on a call whose media stream is not (or no longer) open."""
