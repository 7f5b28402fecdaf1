"""The dashboard's browser session: a signed, expiring cookie after a login with the admin token,
and a CSRF token bound to that session for every form that changes something.

The cookie is `<expires>.<nonce>.<signature>`: HMAC-SHA256 under a key derived from the admin token,
so changing the token ends every session. It is HttpOnly, SameSite=Strict, and Secure when the
dashboard is reached over https (directly, or through the public https URL). Logging out forgets the
nonce on this server (a copied cookie stops working too) and clears the cookie.

Without CALLASSIST_ADMIN_TOKEN there is nothing to log in with: the machine itself is the owner (as
for the JSON API), and the session is a fixed local one under a key made at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from callassist.settings import Settings
from callassist.telephony.signature import is_direct_loopback

COOKIE = "callassist_session"
COOKIE_PATH = "/dashboard"  # sent to the dashboard only, never with the API or the webhooks
SESSION_TTL_S = 12 * 3600
SESSION_KEY_LABEL = b"callassist dashboard session v1"
LOCAL_NONCE = "local"
# Logged-out sessions remembered until they would have expired anyway (bounded memory).
MAX_REVOKED = 4096


@dataclass(frozen=True)
class OwnerSession:
    nonce: str
    expires: int  # Unix seconds
    csrf: str
    local: bool  # the machine itself, no admin token configured: nothing to log out of


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Sessions:
    """Issues and checks the dashboard's session cookies and CSRF tokens for one server."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self.token_required = bool(admin)
        if admin:
            self._key = hmac.new(admin.encode(), SESSION_KEY_LABEL, hashlib.sha256).digest()
        else:
            self._key = secrets.token_bytes(32)
        self._revoked: OrderedDict[str, int] = OrderedDict()

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def csrf_for(self, nonce: str) -> str:
        return self._sign(f"csrf:{nonce}")

    def issue(self) -> tuple[str, OwnerSession]:
        """A new session: (cookie value, session)."""
        nonce = _b64(secrets.token_bytes(18))
        expires = int(self._clock()) + SESSION_TTL_S
        payload = f"{expires}.{nonce}"
        return f"{payload}.{self._sign(payload)}", OwnerSession(nonce, expires, self.csrf_for(nonce), False)

    def current(self, connection: HTTPConnection) -> OwnerSession | None:
        """The owner's session for this request, or None (no valid cookie, or not the owner)."""
        if not self.token_required:
            if self._settings.local_only and is_direct_loopback(connection):
                return OwnerSession(LOCAL_NONCE, 0, self.csrf_for(LOCAL_NONCE), True)
            return None
        value = connection.cookies.get(COOKIE)
        if not value or len(value) > 200:
            return None
        payload, _, signature = value.rpartition(".")
        expires_text, _, nonce = payload.partition(".")
        if not (expires_text.isdigit() and nonce):
            return None
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        expires = int(expires_text)
        if expires <= self._clock() or nonce in self._revoked:
            return None
        return OwnerSession(nonce, expires, self.csrf_for(nonce), False)

    def csrf_ok(self, session: OwnerSession, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), session.csrf.encode())

    def revoke(self, session: OwnerSession) -> None:
        if session.local:
            return
        now = self._clock()
        self._revoked[session.nonce] = session.expires
        for nonce, expires in list(self._revoked.items()):
            if expires > now and len(self._revoked) <= MAX_REVOKED:
                break
            del self._revoked[nonce]

    def secure(self, connection: HTTPConnection) -> bool:
        """Secure cookies when the browser is on https: this request, or the public https URL the
        owner reaches through a tunnel (which talks plain http to us from loopback)."""
        if connection.url.scheme == "https":
            return True
        return self._settings.public_url.startswith("https://") and not is_direct_loopback(connection)

    def set_cookie(self, response: Response, connection: HTTPConnection, value: str) -> None:
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_TTL_S,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=self.secure(connection),
        )

    def clear_cookie(self, response: Response, connection: HTTPConnection) -> None:
        response.delete_cookie(
            COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=self.secure(connection)
        )
