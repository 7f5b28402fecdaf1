"""Twilio's REST API through the official SDK's asyncio client: the plumbing every use shares (SMS
today; calls, such as a transfer, later).

`api_base_url` (TWILIO_API_BASE_URL) sends the SDK's requests to another host, such as a local
stand-in in tests or an egress proxy, without touching anything else the SDK does.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

DEFAULT_TIMEOUT_S = 15.0


def redirect_url(url: str, base_url: str | None) -> str:
    """`url` with a Twilio API host (https://*.twilio.com) replaced by `base_url`, path kept."""
    if not base_url:
        return url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host != "twilio.com" and not host.endswith(".twilio.com"):
        return url
    base = urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))


class RedirectingTwilioHttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client, with Twilio's hosts swapped for `base_url` and a real deadline."""

    def __init__(self, base_url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None

    # The SDK's own async `request` overrides its sync base's the same way (twilio.http.HttpClient).
    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the SDK's signature, overridden)
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            # aiohttp 3.14 deprecates the `auth=` argument the SDK would pass it; a header is the same.
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        # The SDK passes timeout=None through to aiohttp, which reads it as "no deadline at all";
        # the client-wide timeout given to the constructor is otherwise never applied.
        return await super().request(
            method,
            redirect_url(url, self.base_url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout if timeout is not None else self.timeout,
            allow_redirects=allow_redirects,
        )


def rest_client(
    account_sid: str,
    auth_token: str,
    *,
    api_base_url: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[Client, RedirectingTwilioHttpClient]:
    """A Twilio REST client for one account, and the HTTP client under it (whose `close()` ends its
    aiohttp session). Make it inside the running event loop: aiohttp wants its session there."""
    http = RedirectingTwilioHttpClient(api_base_url, timeout=timeout_s)
    return Client(account_sid, auth_token, http_client=http), http


async def credentials_valid(
    account_sid: str, auth_token: str, *, api_base_url: str | None = None, timeout_s: float = 5.0
) -> bool | None:
    """Does Twilio accept this account SID and auth token? Fetches the account itself
    (https://www.twilio.com/docs/iam/api/account#fetch-an-account-resource): True when it answers,
    False when it refuses the credentials (401/403/404), None when it can't be asked right now."""
    client, http = rest_client(account_sid, auth_token, api_base_url=api_base_url, timeout_s=timeout_s)
    try:
        await client.api.v2010.accounts(account_sid).fetch_async()
    except TwilioRestException as exc:
        return False if exc.status in (401, 403, 404) else None
    except (TwilioException, aiohttp.ClientError, OSError, TimeoutError):
        return None
    finally:
        await http.close()  # type: ignore[no-untyped-call]  # the SDK's aiohttp client, untyped
    return True
