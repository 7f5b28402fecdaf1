"""Logging set-up and the Prometheus metrics every part of the server reports to."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

CALLS_ACTIVE = Gauge("callassist_calls_active", "Live calls bridged to OpenAI right now")
CALLS_TOTAL = Counter("callassist_calls_total", "Calls that ended, by outcome", ["outcome"])
WEBHOOKS_REJECTED = Counter(
    "callassist_webhooks_rejected_total", "Webhooks and streams refused", ["endpoint", "reason"]
)
STREAMS_PRE_START = Gauge(
    "callassist_streams_pre_start",
    "Media Streams accepted and still waiting for `start` (each may hold an OpenAI connection)",
)
REALTIME_PRECONNECTED = Gauge(
    "callassist_realtime_preconnected",
    "OpenAI connections opened ahead of `start` for Media Streams not admitted yet",
)
STREAMS_REFUSED = Counter(
    "callassist_streams_refused_total",
    "Media Streams refused or ended before their call began, by reason",
    ["reason"],
)
TWILIO_SEND_TIMEOUTS = Counter(
    "callassist_twilio_send_timeouts_total", "Calls ended because Twilio stopped reading their stream"
)
REALTIME_RECONNECTS = Counter("callassist_realtime_reconnects_total", "OpenAI sessions re-established")
REALTIME_ROTATIONS = Counter(
    "callassist_realtime_rotations_total", "Calls moved to a fresh OpenAI session ahead of its time cap"
)
REALTIME_ERRORS = Counter("callassist_realtime_errors_total", "OpenAI error events, by code", ["code"])
BARGE_INS = Counter("callassist_barge_ins_total", "Times a caller interrupted the assistant")
TWILIO_BAD_FRAMES = Counter("callassist_twilio_bad_frames_total", "Unusable Media Stream frames survived")
GREETING_LATENCY = Histogram(
    "callassist_greeting_latency_seconds",
    "Twilio stream start to first assistant audio sent",
    buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)
TURN_LATENCY = Histogram(
    "callassist_turn_latency_seconds",
    "Caller stopped speaking to first assistant audio sent",
    buckets=(0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10),
)


def masked_number(number: str | None) -> str:
    """A phone number as logs show it: enough to tell calls apart, not enough to dial. The full
    number stays in the store, which only the owner reads."""
    if not number:
        return "hidden number"
    return number[:2] + "…" + number[-4:] if len(number) > 8 else "…" + number[-2:]


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDK and websockets log every frame at debug; the database drivers log every statement with
    # its parameters (what callers said): keep them quiet whatever the level.
    for noisy in (
        "websockets", "openai", "httpx", "httpcore", "httpx2", "twilio",
        "aiosqlite", "sqlalchemy.engine", "asyncpg",
    ):  # fmt: skip
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the call it belongs to."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        call = (self.extra or {}).get("call", "-")
        return f"[{call}] {msg}", kwargs
