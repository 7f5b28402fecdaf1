"""Only the owner reads the data: CALLASSIST_ADMIN_TOKEN, or (when it is unset) the machine itself.

The admin token travels only in an `Authorization: Bearer` header, never in a URL. The calendar feed,
which calendar apps fetch by URL alone, has its own read-only token (`feed_token`), derived from the
admin token: it opens the feed and nothing else, and changes whenever the admin token does.

The right token is always accepted. Wrong ones are counted per client: after `FAILURES_ALLOWED`
within `FAILURE_WINDOW_S`, that client's wrong tokens are answered 429 (with Retry-After) instead of
401 until the window has passed. A client is its socket address or, behind a tunnel on this machine,
the address the tunnel reported (`client_key`), never one the client names itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from callassist.settings import Settings
from callassist.telephony.signature import LOOPBACK_HOSTS, is_direct_loopback

FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 60.0
# Clients remembered at once; the least recently refused are forgotten first.
MAX_CLIENTS = 4096
_MAX_KEY_LENGTH = 64


# The feed token is HMAC-SHA256(admin token, this label), url-safe base64, this many characters
# (192 bits). The label is fixed: changing it would change every subscribed feed URL.
FEED_TOKEN_LABEL = b"callassist calendar feed v1"
FEED_TOKEN_LENGTH = 32


def feed_token(settings: Settings) -> str | None:
    """The calendar feed's read-only token, or None while no admin token is configured."""
    admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not admin:
        return None
    digest = hmac.new(admin.encode(), FEED_TOKEN_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:FEED_TOKEN_LENGTH]


def owner_allowed(connection: HTTPConnection, settings: Settings, presented: str | None) -> bool:
    """True if `presented` is the admin token, or no token is configured, the server is not public
    (PUBLIC_BASE_URL unset or local) and the client is this machine."""
    expected = settings.admin_token.get_secret_value() if settings.admin_token else ""
    return _matches(connection, settings, presented, expected)


def feed_allowed(connection: HTTPConnection, settings: Settings, presented: str | None) -> bool:
    """`owner_allowed` for the calendar feed: `presented` must be the feed token (never the admin
    token)."""
    return _matches(connection, settings, presented, feed_token(settings) or "")


def _matches(connection: HTTPConnection, settings: Settings, presented: str | None, expected: str) -> bool:
    if not expected:
        # Behind a tunnel every client can look local (ssh -R adds no headers): never trust that.
        return settings.local_only and is_direct_loopback(connection)
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def bearer_token(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class FailureLimiter:
    """Recent refusals per client, in bounded memory: at most `max_clients` clients, each with the
    times of its last `allowed` refusals."""

    def __init__(
        self,
        allowed: int = FAILURES_ALLOWED,
        window_s: float = FAILURE_WINDOW_S,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = allowed
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None if it may now."""
        times = self._recent(client)
        if len(times) < self.allowed:
            return None
        return max(1, math.ceil(times[0] + self.window_s - self._clock()))

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self._clock())
        del times[: -self.allowed]
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> list[float]:
        times = self._failures.get(client)
        if times is None:
            return []
        horizon = self._clock() - self.window_s
        recent = [at for at in times if at > horizon]
        if recent:
            self._failures[client] = recent
        else:
            del self._failures[client]
        return recent


def client_key(connection: HTTPConnection, header: str | None = None) -> str:
    """Who is asking, for counting refusals (never for deciding who they are).

    A direct client is its socket address: no header changes it. A tunnel or reverse proxy on this
    machine connects from loopback for everyone, so there the client is what the proxy reported:
    by default the last X-Forwarded-For entry (the one the proxy appended; earlier entries, and
    CF-Connecting-IP, X-Real-IP or Forwarded, are whatever the client sent, passed through). With
    `header` (CALLASSIST_CLIENT_IP_HEADER), the proxy's own header instead. Without either, every
    client of the tunnel is one (ssh -R adds no header). IPv6 addresses count per /64, the block one
    subscriber usually gets.
    """
    host = connection.client.host if connection.client else ""
    if host in LOOPBACK_HOSTS:
        host = _forwarded_client(connection.headers, header) or host
    address = _address(host)
    if address is None:
        return host[:_MAX_KEY_LENGTH] or "unknown"
    if address.version == 6 and not address.is_loopback:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, also when written with a port ("192.0.2.7:4711", "[2001:db8::7]:4711")."""
    name, _, port = text.rpartition(":")
    candidates = [text, text.strip("[]")]
    if port.isdigit() and (name.startswith("[") or ":" not in name):
        candidates.append(name.strip("[]"))
    for candidate in candidates:
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            continue
    return None


def _forwarded_client(headers: Headers, header: str | None) -> str | None:
    """The client address the proxy put in `header` (default X-Forwarded-For): the last entry of a
    list, since a proxy appends its own after whatever the client sent. Repeated header lines count
    as one list, in order."""
    name = (header or "x-forwarded-for").lower()
    values = [value.strip() for value in headers.getlist(name) if value.strip()]
    if not values:
        return None
    last = values[-1].rsplit(",", 1)[-1].strip()
    if name != "forwarded":
        return last or None
    for pair in last.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "for" and value:
            return value.strip('"')
    return None


@dataclass(frozen=True)
class OwnerCheck:
    """The outcome of checking the owner: allowed, or refused (with `retry_after` when limited)."""

    allowed: bool
    retry_after: int | None = None


def check_owner(
    connection: HTTPConnection,
    settings: Settings,
    presented: str | None,
    failures: FailureLimiter,
    allowed: Callable[[HTTPConnection, Settings, str | None], bool] = owner_allowed,
) -> OwnerCheck:
    """`allowed` (by default `owner_allowed`), with one client's repeated wrong tokens answered by a
    wait. The token is checked first: the right one is never refused, however many wrong ones came
    from the same address (which a tunnel's other clients may share)."""
    if allowed(connection, settings, presented):
        return OwnerCheck(allowed=True)
    client = client_key(connection, settings.client_ip_header)
    if (wait := failures.retry_after(client)) is not None:
        return OwnerCheck(allowed=False, retry_after=wait)
    failures.failed(client)
    return OwnerCheck(allowed=False)
