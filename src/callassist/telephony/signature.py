"""Who may open a call: X-Twilio-Signature on webhooks and on the Media Stream handshake.

With TWILIO_AUTH_TOKEN set, every request must carry a valid signature computed over the *public*
URL Twilio called (never `request.url`, which a tunnel or proxy rewrites). Without a token, only
direct loopback clients are served, for local trials with the simulator.

Twilio's signatures carry no nonce or time, so a captured webhook or handshake can be replayed. Each
stream therefore carries a short-lived token that only our own webhook can have produced (see
`StreamTokens`), in its URL's path (`/voice/stream/{CallSid}/{token}`: Twilio signs that URL, so the
handshake's signature is specific to one call, and is checked with the token before the socket is
accepted) and again in a `<Parameter>` for `start`. The store's record of the call
(`callassist.store.admission`) makes it single-use, across restarts, and is where the stream's
identity comes from.
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

    def check_stream(self, connection: HTTPConnection, suffix: str = "") -> bool:
        """The handshake of `<Stream url>` = the stream URL + `suffix` (the call's own path, see
        `callassist.telephony.webhooks.stream_path`): the signature is then specific to one call."""
        # Twilio signs the wss:// URL from <Stream url>, not its https:// twin (twilio-aspnet #162).
        query = connection.url.query
        return self._check(connection, self._stream_url + suffix + (f"?{query}" if query else ""), None)


# Twilio opens the stream within a second or two of our TwiML; a token unused after this is worthless.
STREAM_TOKEN_TTL_S = 120.0


class StreamTokens:
    """Tokens binding a Media Stream to a call our webhook answered.

    token = "<issued-at>.<hmac(key, call_sid | issued-at)>", valid for `ttl` seconds. `verify` checks
    only the MAC and the age (no store needed, so forged tokens cost nothing); single use is the
    store's job (`StreamAdmissions.claim`).
    """

    def __init__(self, secret: str | None = None, ttl_seconds: float = STREAM_TOKEN_TTL_S) -> None:
        # A key of its own, derived from the secret: the auth token itself never signs our tokens.
        base = (secret or secrets.token_hex(32)).encode()
        self._key = hmac.new(base, b"callassist stream token", hashlib.sha256).digest()
        self._ttl = ttl_seconds

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def issue(self, call_sid: str, issued: int | None = None) -> str:
        """The token for `call_sid`; given the same `issued` time, the same token."""
        stamp = str(int(time.time()) if issued is None else issued)
        return f"{stamp}.{self._digest(call_sid, stamp)}"

    def verify(self, call_sid: str, token: str) -> int | None:
        """The token's issue time if we made it for this call and it has not expired, else None."""
        issued, _, digest = token.partition(".")
        # ASCII only: compare_digest refuses other text, and isdigit() alone accepts any script's digits.
        if not (token.isascii() and issued.isdigit()) or len(issued) > 12:
            return None
        if not hmac.compare_digest(digest, self._digest(call_sid, issued)):
            return None
        now = time.time()
        if not (now - self._ttl <= int(issued) <= now + 60):
            return None
        return int(issued)

    def expired(self, issued: int) -> bool:
        return time.time() - self._ttl > issued

    def _digest(self, call_sid: str, issued: str) -> str:
        return hmac.new(self._key, f"{call_sid}|{issued}".encode(), hashlib.sha256).hexdigest()[:32]
