"""Signatures and stream tokens: who may open a call."""

from __future__ import annotations

import time

from starlette.requests import Request
from twilio.request_validator import RequestValidator

from callassist.telephony.signature import SignatureChecker, StreamTokens

TOKEN = "test-auth-token"
PUBLIC = "https://example.ngrok.app"
STREAM = "wss://example.ngrok.app/voice/stream"


def request(path: str, headers: dict[str, str], client: str = "203.0.113.9", query: str = "") -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    return Request(scope)


def test_webhook_signature_is_checked_against_the_public_url() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC, STREAM)
    params = {"CallSid": "CA1", "From": "+15551230000"}
    good = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/voice/incoming", params)
    assert checker.check_webhook(request("/voice/incoming", {"X-Twilio-Signature": good}), params)
    assert not checker.check_webhook(request("/voice/incoming", {}), params)
    tampered = {**params, "From": "+15550000000"}
    assert not checker.check_webhook(request("/voice/incoming", {"X-Twilio-Signature": good}), tampered)
    # The same signature computed over the local URL (what request.url says behind a tunnel) fails.
    local = RequestValidator(TOKEN).compute_signature("http://127.0.0.1:8000/voice/incoming", params)
    assert not checker.check_webhook(request("/voice/incoming", {"X-Twilio-Signature": local}), params)


def test_stream_signature_uses_the_wss_url() -> None:
    checker = SignatureChecker(TOKEN, PUBLIC, STREAM)
    good = RequestValidator(TOKEN).compute_signature(STREAM, {})
    https_twin = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/voice/stream", {})
    assert checker.check_stream(request("/voice/stream", {"X-Twilio-Signature": good}))
    assert not checker.check_stream(request("/voice/stream", {"X-Twilio-Signature": https_twin}))


def test_without_a_token_only_direct_loopback_clients_pass() -> None:
    checker = SignatureChecker(None, "http://127.0.0.1:8000", "ws://127.0.0.1:8000/voice/stream")
    assert checker.check_stream(request("/voice/stream", {}, client="127.0.0.1"))
    assert checker.check_webhook(request("/voice/incoming", {}, client="::1"), {})
    assert not checker.check_webhook(request("/voice/incoming", {}, client="203.0.113.9"), {})
    # A tunnel (ngrok, cloudflared) connects from loopback but says who the real client is.
    tunnelled = request("/voice/incoming", {"X-Forwarded-For": "203.0.113.9"}, client="127.0.0.1")
    assert not checker.check_webhook(tunnelled, {})


def test_stream_tokens_are_bound_to_the_call_and_expire() -> None:
    """Single use is the store's job (a conditional claim: tests/store/test_stream_admissions.py)."""
    tokens = StreamTokens(secret="s")
    token = tokens.issue("CA1")
    assert tokens.verify("CA2", token) is None
    assert tokens.verify("CA1", token) is not None
    assert tokens.verify("CA1", "") is None
    assert tokens.verify("CA1", "123.abc") is None
    assert StreamTokens(secret="other").verify("CA1", tokens.issue("CA1")) is None
    old = StreamTokens(secret="s", ttl_seconds=60)
    issued = str(int(time.time()) - 3600)
    assert old.verify("CA1", f"{issued}.{old._digest('CA1', issued)}") is None


def test_withheld_and_malformed_numbers_are_no_identity() -> None:
    from callassist.call.opening import caller_identity

    assert caller_identity("+15551230000") == "+15551230000"
    for hidden in (
        None,
        "",
        "anonymous",
        "Restricted",
        "+266696687",
        "+7378742833",
        "client:alice",
        "555-1234",
    ):
        assert caller_identity(hidden) is None
