"""SMS to the owner through Twilio's Messages API, with the official SDK's asyncio client
(`callassist.telephony.rest`: the client, `api_base_url` / TWILIO_API_BASE_URL, the deadline).
"""

from __future__ import annotations

from typing import Final

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.rest import Client

from callassist.notify.outbox import DeliveryError, Notice
from callassist.telephony.rest import DEFAULT_TIMEOUT_S, RedirectingTwilioHttpClient, rest_client

# Twilio refuses longer bodies outright (error 21617), so an overlong notice is cut, not lost.
MAX_BODY_CHARS = 1600
ELLIPSIS = "…"
# Answers that may well succeed if asked again later; every other 4xx is about the request itself
# (a bad number, a From that isn't ours, wrong credentials) and will fail the same way each time.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 425, 429})


def sms_body(text: str) -> str:
    """`text` cut to what one Twilio message may carry."""
    return text if len(text) <= MAX_BODY_CHARS else text[: MAX_BODY_CHARS - len(ELLIPSIS)] + ELLIPSIS


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
            self._client, self._http = rest_client(
                self.account_sid, self._auth_token, api_base_url=self.api_base_url, timeout_s=self.timeout_s
            )
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
