"""A call as the recorder is told it started (what the call says at `start`)."""

from __future__ import annotations

from datetime import UTC, datetime

from callassist.call.recorder import CallRecorder


def start_call(recorder: CallRecorder, caller_number: str, started_at: datetime | None = None) -> None:
    """An ordinary inbound call: not the owner, no dial, no name yet."""
    recorder.call_started(
        started_at=started_at or datetime.now(UTC),
        stream_sid="MZ1",
        caller_number=caller_number,
        called_number=None,
        caller_name=None,
        is_owner=False,
        dial_status=None,
        model="gpt-realtime",
    )
