"""The simulated caller: plays Twilio's side of a call (webhooks, TwiML, Media Streams) against our server.

Exports are loaded lazily so that importing `callassist.simulator.audio` stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "CallerSimulator": "callassist.simulator.caller",
    "SimulatedCall": "callassist.simulator.call",
    "CallEvent": "callassist.simulator.record",
    "SimulatorError": "callassist.simulator.errors",
    "WebhookError": "callassist.simulator.errors",
    "StreamRejected": "callassist.simulator.errors",
    "CallEndedError": "callassist.simulator.errors",
    "CallReport": "callassist.simulator.report",
    "run_call": "callassist.simulator.report",
    "Owner": "callassist.simulator.owner",
    "TwilioRest": "callassist.simulator.rest",
    "Timing": "callassist.simulator.outbound",
    "OutboundCall": "callassist.simulator.outbound",
    "Conferences": "callassist.simulator.conference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
