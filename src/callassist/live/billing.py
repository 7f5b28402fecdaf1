"""What a GPT-Live call costs, recorded as it is reported: the session's billable seconds and the
Responses backend's tokens, in the call's usage rows (which the call's total is summed from) and as
CostAdded events (metrics, the dashboard).

`session.usage.updated` carries the session's *cumulative* seconds ("Do not sum values across usage
events", SessionUsage): each report records only what it adds to the last one of the same session.
Delegated Responses tokens are "reported separately in response.event events"
(SessionUsageUpdatedEvent): the `usage` of each backend `response.completed`, at the backend
model's token prices.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from callassist.call.events import CostAdded
from callassist.realtime.pricing import PriceTable, Usage

SESSION_PURPOSE = "live-session"
# Session time goes into the record a row per this many seconds (and the rest when the session
# ends): the service may report usage every second, and the store needs no row per report. The
# cost is published (CostAdded: metrics, the dashboard) at every report.
ROW_EVERY_S = 30.0


class UsageRecorder(Protocol):
    """The call recorder's usage row (call/recorder.py CallRecorder.usage)."""

    call_sid: str

    def usage(
        self,
        *,
        kind: str,
        ref: str | None,
        purpose: str | None,
        status: str | None,
        model: str,
        tokens: Usage,
        cost: Decimal,
        seconds: float | None = None,
    ) -> None: ...


class LiveBilling:
    def __init__(
        self,
        recorder: UsageRecorder,
        prices: PriceTable,
        *,
        live_model: str,
        backend_model: str,
        publish: Callable[[CostAdded], None] | None = None,
    ) -> None:
        self._recorder = recorder
        self._prices = prices
        self._live_model = live_model
        self._backend_model = backend_model
        self._publish = publish
        self._seconds: dict[str, float] = {}  # per session id: the cumulative seconds billed
        self._unwritten: dict[str, float] = {}  # per session id: seconds billed, not in a row yet
        self.total = Decimal(0)

    def session_seconds(self, session_id: str, seconds: float) -> Decimal:
        """A cumulative report for one session: bills (and returns the cost of) what it adds."""
        added = seconds - self._seconds.get(session_id, 0.0)
        if added <= 0:
            return Decimal(0)  # a repeat, or a report that went backwards: never billed twice
        self._seconds[session_id] = seconds
        cost = self._prices.live_cost(self._live_model, added)
        self.total += cost
        self._cost_added(cost)
        unwritten = self._unwritten[session_id] = self._unwritten.get(session_id, 0.0) + added
        if unwritten >= ROW_EVERY_S:
            self._write_session(session_id)
        return cost

    def flush(self) -> None:
        """The session ended (or the call does): its billed seconds not in a row yet go in one."""
        for session_id in list(self._unwritten):
            self._write_session(session_id)

    def _write_session(self, session_id: str) -> None:
        seconds = self._unwritten.pop(session_id)
        # Kind "response" (the speech model's cost, like Realtime's responses): usage_records allows
        # only response/transcription (a CHECK constraint), the purpose says it is session time.
        self._recorder.usage(
            kind="response",
            ref=session_id,
            purpose=SESSION_PURPOSE,
            status="completed",
            model=self._live_model,
            tokens=Usage(),
            cost=self._prices.live_cost(self._live_model, seconds),
            seconds=seconds,
        )

    def backend_usage(self, response_id: str, purpose: str, status: str, usage: dict[str, Any]) -> Decimal:
        """One backend response's tokens (a Responses `ResponseUsage`, as a dict)."""
        details = usage.get("input_tokens_details") or {}
        text_in = int(usage.get("input_tokens") or 0)
        tokens = Usage(
            text_in=text_in,
            cached_text=min(text_in, int(details.get("cached_tokens") or 0)),
            text_out=int(usage.get("output_tokens") or 0),
        )
        cost = self._prices.response_cost(self._backend_model, tokens)
        self.total += cost
        self._recorder.usage(
            kind="response",
            ref=response_id,
            purpose=purpose,
            status=status,
            model=self._backend_model,
            tokens=tokens,
            cost=cost,
        )
        self._cost_added(cost)
        return cost

    def _cost_added(self, cost: Decimal) -> None:
        if self._publish is not None:
            self._publish(CostAdded(self._recorder.call_sid, "response", cost))
