"""Twilio-style identifiers for simulated calls, recordings and streams."""

from __future__ import annotations

import secrets


def new_sid(prefix: str) -> str:
    """A SID as Twilio makes them: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)
