"""Who may open a call: X-Twilio-Signature on webhooks and on the Media Stream handshake.

With TWILIO_AUTH_TOKEN set, every request must carry a valid signature computed over the *public*
URL Twilio called (never `request.url`, which a tunnel or proxy rewrites). Without a token, only
direct loopback clients are served, for local trials with the simulator.

The stream handshake signature covers a URL that is the same for every call, so it alone could be
replayed; each stream therefore also carries a one-time, short-lived token in a `<Parameter>` that
only our own webhook can have produced (see `StreamTokens`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# A request that came through a tunnel or reverse proxy is not local, whatever its socket says.
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "cf-connecting-ip", "x-forwarded-host")


def is_direct_loopback(connection: HTTPConnection) -> bool:
    client = connection.client
    if client is None or client.host not in LOOPBACK_HOSTS:
        return False
    return not any(header in connection.headers for header in PROXY_HEADERS)


class SignatureChecker:
    """Validates Twilio signatures against the configured public URLs."""

    def __init__(self, auth_token: str | None, public_url: str, stream_url: str) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None
        self._public_url = public_url.rstrip("/")
        self._stream_url = stream_url

    @property
    def enforced(self) -> bool:
        return self._validator is not None

    def _check(self, connection: HTTPConnection, url: str, params: Mapping[str, Any] | None) -> bool:
        if self._validator is None:
            return is_direct_loopback(connection)
        signature = connection.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return False
        algorithm = get_signature_algorithm(connection.headers.get(SIGNATURE_SETTINGS_HEADER, ""))
        return bool(self._validator.validate(url, params or {}, signature, algorithm=algorithm))

    def check_webhook(self, connection: HTTPConnection, form: Mapping[str, Any]) -> bool:
        query = connection.url.query
        url = self._public_url + connection.url.path + (f"?{query}" if query else "")
        return self._check(connection, url, form)

    def check_stream(self, connection: HTTPConnection) -> bool:
        # Twilio signs the wss:// URL from <Stream url>, not its https:// twin (twilio-aspnet #162).
        query = connection.url.query
        return self._check(connection, self._stream_url + (f"?{query}" if query else ""), None)


class StreamTokens:
    """One-time tokens binding a Media Stream to a call our webhook answered.

    token = "<issued-at>.<hmac(secret, call_sid + issued-at)>"; accepted once, within `ttl` seconds.
    """

    def __init__(self, secret: str | None = None, ttl_seconds: float = 900.0) -> None:
        # A key of its own, derived from the secret: the auth token itself never signs our tokens.
        base = (secret or secrets.token_hex(32)).encode()
        self._key = hmac.new(base, b"callassist stream token", hashlib.sha256).digest()
        self._ttl = ttl_seconds
        self._used: dict[str, float] = {}

    def issue(self, call_sid: str) -> str:
        issued = str(int(time.time()))
        return f"{issued}.{self._digest(call_sid, issued)}"

    def redeem(self, call_sid: str, token: str) -> bool:
        issued, _, digest = token.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(digest, self._digest(call_sid, issued)):
            return False
        now = time.time()
        if not (now - self._ttl <= int(issued) <= now + 60):
            return False
        self._forget_expired(now)
        if token in self._used:
            return False
        self._used[token] = now
        return True

    def _digest(self, call_sid: str, issued: str) -> str:
        return hmac.new(self._key, f"{call_sid}|{issued}".encode(), hashlib.sha256).hexdigest()[:32]

    def _forget_expired(self, now: float) -> None:
        if len(self._used) > 1024:
            self._used = {t: at for t, at in self._used.items() if now - at <= self._ttl + 60}
