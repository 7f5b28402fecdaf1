"""The Responses backend's work, as GPT-Live streams it: one finished response at a time.

A delegated task (and any response we ask the backend for) arrives as Responses API streaming
events nested in `response.event` (ResponseEvent: "Dispatch on its type field"). Lifecycle
snapshots carry no output ("consume granular output events for the generated content"), so a
response's function calls and text are read from its `response.output_item.done` events and the
response is over at `response.completed`, `.incomplete` or `.failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from callassist.engine.events import SpokenItem, ToolCall

_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(slots=True)
class BackendResponse:
    """One backend response: what asked for it (the client event id, if it came with one), its
    function calls and text, and, once over, its status, usage and failure."""

    response_id: str
    client_event_id: str | None
    delegation_id: str | None
    calls: list[ToolCall] = field(default_factory=list)
    texts: list[SpokenItem] = field(default_factory=list)
    status: str = "in_progress"
    usage: dict[str, Any] | None = None
    failure: str | None = None


class BackendStream:
    def __init__(self) -> None:
        self._open: dict[str, BackendResponse] = {}

    def feed(self, data: dict[str, Any]) -> BackendResponse | None:
        """One `response.event`; the response it ended, if it ended one."""
        nested = data["event"]
        kind = nested.get("type")
        if kind == "response.created":
            response_id = str(nested["response"]["id"])
            self._open[response_id] = BackendResponse(
                response_id, data.get("client_event_id"), data.get("delegation_id")
            )
            return None
        response = self._open.get(self._response_of(nested) or "")
        if response is None:
            return None
        if kind == "response.output_item.done":
            _add_output(response, nested["item"])
        elif kind in _DONE:
            del self._open[response.response_id]
            snapshot = nested["response"]
            response.status = str(snapshot.get("status") or "failed")
            usage = snapshot.get("usage")
            response.usage = usage if isinstance(usage, dict) else None
            if response.status == "failed":
                error = snapshot.get("error") or {}
                response.failure = str(error.get("code") or "failed")
            return response
        return None

    def _response_of(self, nested: dict[str, Any]) -> str | None:
        snapshot = nested.get("response")
        if isinstance(snapshot, dict):
            return str(snapshot.get("id"))
        # Item events carry no response id: they belong to the newest open backend response.
        return next(reversed(self._open), None)

    def clear(self) -> None:
        """The session is gone, and its backend's responses with it."""
        self._open.clear()


def _add_output(response: BackendResponse, item: dict[str, Any]) -> None:
    if item.get("type") == "function_call":
        call = ToolCall(
            str(item.get("id") or ""),
            str(item["call_id"]),
            str(item["name"]),
            str(item.get("arguments") or ""),
            item.get("status") == "completed",  # only a completed call is run (as on Realtime)
        )
        response.calls.append(call)
    elif item.get("type") == "message":
        text = "".join(str(part.get("text") or "") for part in item.get("content") or [])
        response.texts.append(SpokenItem(str(item.get("id") or ""), text, False))
