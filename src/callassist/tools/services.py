"""What tools reach through `ToolContext.services`: the backends, built once per server."""

from __future__ import annotations

from dataclasses import dataclass

from callassist.calendar.booking import BookingService


@dataclass
class ToolServices:
    owner_name: str
    booking: BookingService
