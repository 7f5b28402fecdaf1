"""Only the owner reads the data: CALLASSIST_ADMIN_TOKEN, or (when it is unset) the machine itself."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from callassist.settings import Settings
from callassist.telephony.signature import is_direct_loopback


def owner_allowed(connection: HTTPConnection, settings: Settings, presented: str | None) -> bool:
    """True if `presented` is the admin token, or no token is configured, the server is not public
    (PUBLIC_BASE_URL unset or local) and the client is this machine."""
    expected = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not expected:
        # Behind a tunnel every client can look local (ssh -R adds no headers): never trust that.
        return settings.local_only and is_direct_loopback(connection)
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def bearer_token(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
