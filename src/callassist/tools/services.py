"""What tools reach through `ToolContext.services`: the backends, built once per server."""

from __future__ import annotations

from dataclasses import dataclass, field

from callassist.calendar.booking import BookingService
from callassist.tools.identity import CodeLimits, CodeSender, HistoryLoader


@dataclass
class ToolServices:
    owner_name: str
    booking: BookingService
    codes: CodeSender | None = None  # texts one-time codes (Twilio SMS), when Twilio is configured
    caller_history: HistoryLoader | None = None  # a verified caller's earlier calls
    code_limits: CodeLimits = field(default_factory=CodeLimits)  # one per server, across calls
