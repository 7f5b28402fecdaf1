"""SMS to the owner through Twilio's Messages API, with the official SDK's asyncio client.

`api_base_url` (TWILIO_API_BASE_URL) sends the SDK's requests to another host, such as a local
stand-in in tests or an egress proxy, without touching anything else the SDK does.
"""

from __future__ import annotations

import base64
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from callassist.notify.outbox import DeliveryError, Notice

# Twilio refuses longer bodies outright (error 21617), so an overlong notice is cut, not lost.
MAX_BODY_CHARS = 1600
ELLIPSIS = "…"
DEFAULT_TIMEOUT_S = 15.0
# Answers that may well succeed if asked again later; every other 4xx is about the request itself
# (a bad number, a From that isn't ours, wrong credentials) and will fail the same way each time.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 425, 429})


def sms_body(text: str) -> str:
    """`text` cut to what one Twilio message may carry."""
    return text if len(text) <= MAX_BODY_CHARS else text[: MAX_BODY_CHARS - len(ELLIPSIS)] + ELLIPSIS


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

    async def request(
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


class TwilioSms:
    """Sends notices as SMS from the row's sender number, or from `from_number`."""

    channel: Final = "sms"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None,
        api_base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.api_base_url = api_base_url
        self.timeout_s = timeout_s
        # Made on first use: aiohttp wants its session created inside the running event loop.
        self._http: RedirectingTwilioHttpClient | None = None
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"TwilioSms(account_sid={self.account_sid!r}, from_number={self.from_number!r})"

    def _twilio(self) -> Client:
        if self._client is None:
            self._http = RedirectingTwilioHttpClient(self.api_base_url, timeout=self.timeout_s)
            self._client = Client(self.account_sid, self._auth_token, http_client=self._http)
        return self._client

    async def send(self, notice: Notice) -> str:
        return await self.send_text(notice.recipient, notice.sender, notice.body)

    async def send_text(self, to: str, from_number: str | None, body: str) -> str:
        """One SMS now; returns Twilio's message SID. DeliveryError says whether to try again."""
        from_number = from_number or self.from_number
        if not from_number:
            raise DeliveryError("no number to send the SMS from (set TWILIO_PHONE_NUMBER)", permanent=True)
        try:
            message = await self._twilio().messages.create_async(
                to=to, from_=from_number, body=sms_body(body)
            )
        except TwilioRestException as exc:
            reason = str(exc.msg).removeprefix("Unable to create record: ")
            raise _refused(exc.status, exc.code, reason) from None
        except TwilioServiceException as exc:
            raise _refused(exc.status, exc.code, exc.detail or exc.title) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(f"Twilio unreachable ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            # A 2xx answer that isn't JSON: the message may or may not exist, so it is tried again.
            raise DeliveryError(f"unreadable answer from Twilio ({type(exc).__name__})") from None
        return str(message.sid)

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()


def _refused(status: int, code: int | None, message: str) -> DeliveryError:
    permanent = 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS
    return DeliveryError(
        f"Twilio refused the SMS: HTTP {status}, error {code}: {message}", permanent=permanent
    )
