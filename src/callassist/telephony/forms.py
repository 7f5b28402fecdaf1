"""What a signed Twilio form must look like before anything is believed or issued for it.

X-Twilio-Signature is an HMAC over the URL followed by each key and value, sorted by key, with no
separator. So the boundaries inside a captured, signed form can be moved and the signature still
holds: `CallSid` can swallow `CallStatus` and its value (a new, never-seen CallSid that would get a
fresh stream token, inheriting the captured caller number and attestation), `From` can swallow the
key after it, and so on. Every such re-split changes the set of keys, or a key's value, into
something Twilio never sends; `problem` finds it, so each route refuses the form (400) after the
signature check and before it reads a single value.

Checks are strict where a value decides something (CallSid, AccountSid, the attestation, the dial
result, call status and direction) and lenient but bounded for the numbers, which Twilio may send
as E.164, as a token for a withheld number, or as `client:`/`sip:` addresses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CALL_SID = re.compile(r"CA[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
STREAM_SID = re.compile(r"MZ[0-9a-f]{32}")
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# Withheld or unknown numbers: Twilio sends a word, or one of these pseudo-numbers (E.164-shaped).
HIDDEN_NUMBERS = frozenset({"anonymous", "restricted", "unknown", "private", "unavailable", ""})
# `client:alice`, `sip:alice@example.com;transport=tls`: printable, no spaces, bounded.
ADDRESS = re.compile(r"(?:client|sip|sips):[!-~]{1,60}", re.IGNORECASE)
MAX_ADDRESS = 64
# Parameter names Twilio sends on voice webhooks: a number (or address) that contains one has
# swallowed the key after it. "To" is too short to look for; it is a required key instead.
_KEY_NAMES = re.compile(
    r"AccountSid|ApiVersion|Call(?:Sid|Status|Token|er|ed)|Direction|Forwarded|From|Parent|Stir|"
    r"Dial|Stream|Timestamp|Digits|SpeechResult|Country|State|City|Zip"
)
NUMBER_FIELDS = ("From", "Caller", "To", "Called", "ForwardedFrom")

# Twilio's documented StirVerstat values (Voice webhooks, SHAKEN/STIR), or none at all.
STIR_VERSTATS = frozenset(
    {
        "TN-Validation-Passed-A",
        "TN-Validation-Passed-B",
        "TN-Validation-Passed-C",
        "TN-Validation-Failed-A",
        "TN-Validation-Failed-B",
        "TN-Validation-Failed-C",
        "No-TN-Validation",
        "TN-Validation-Failed",
    }
)
DIAL_STATUSES = frozenset({"completed", "answered", "busy", "no-answer", "failed", "canceled"})
CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"}
)
DIRECTIONS = frozenset(
    {"inbound", "outbound-api", "outbound-dial", "trunking-originating", "trunking-terminating"}
)

# Keys Twilio sends on every voice webhook (the call's own and <Dial>/<Connect> actions), and on a
# <Stream statusCallback>. A re-split that swallows one of them can't keep it.
VOICE_KEYS = ("AccountSid", "CallSid", "From", "To", "CallStatus", "Direction")
STREAM_STATUS_KEYS = ("AccountSid", "CallSid", "StreamSid", "StreamEvent")


def _text(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def plausible_number(value: str) -> bool:
    """E.164, a withheld-number token, or a bounded `client:`/`sip:` address with no key glued in."""
    if E164.fullmatch(value) or value.lower() in HIDDEN_NUMBERS:
        return True
    return len(value) <= MAX_ADDRESS and bool(ADDRESS.fullmatch(value)) and not _KEY_NAMES.search(value)


def problem(
    form: Mapping[str, Any],
    *,
    stream_status: bool,
    account_sid: str | None,
    required: tuple[str, ...] | None = None,
) -> str | None:
    """Why this signed form is not one Twilio sends (a short reason for the metrics), or None.

    `account_sid`: the configured TWILIO_ACCOUNT_SID; when given, the form must name it.
    `required`: the keys this callback always carries, when not a voice webhook's or a stream
    status callback's (a recording status callback has no From/To, say).
    """
    multi_items = getattr(form, "multi_items", None)
    if multi_items is not None and len(multi_items()) != len(form):
        return "repeated-key"  # Twilio sends each key once; the signature covers every copy
    call_sid = _text(form, "CallSid")
    if not (call_sid or "").strip():
        return "no-call-sid"
    if required is None:
        required = STREAM_STATUS_KEYS if stream_status else VOICE_KEYS
    if any(_text(form, name) is None for name in required):
        return "missing-key"
    if not CALL_SID.fullmatch(call_sid or ""):
        return "call-sid"
    account = _text(form, "AccountSid") or ""
    if not ACCOUNT_SID.fullmatch(account) or (account_sid and account != account_sid):
        return "account-sid"
    for name in NUMBER_FIELDS:
        number = _text(form, name)
        if number is not None and not plausible_number(number):
            return "number"
    checks = (
        ("StirVerstat", STIR_VERSTATS, "stir-verstat"),
        ("DialCallStatus", DIAL_STATUSES, "dial-status"),
        ("CallStatus", CALL_STATUSES, "call-status"),
        ("Direction", DIRECTIONS, "direction"),
    )
    for name, allowed, reason in checks:
        value = _text(form, name)
        if value and value not in allowed:
            return reason
    if stream_status and not STREAM_SID.fullmatch(_text(form, "StreamSid") or ""):
        return "stream-sid"
    return None
