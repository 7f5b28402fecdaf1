"""The owner's line for a warm transfer, through Twilio's REST API (the call core's OwnerLine).

- `ring`: an outbound call to OWNER_PHONE (the Calls resource,
  https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource) with inline TwiML: the
  whisper inside `<Gather numDigits=1>` whose action is `/voice/transfer/choice`, then `<Hangup>`
  (no key: a voicemail, a screening bot). Its final status comes to `/voice/transfer/status`.
- `put_through`: the caller's call is updated with new TwiML
  (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource), which ends its Media
  Stream, and joins a conference named after it, which the owner's leg joins too.
- `hang_up`: the owner's leg ends (ringing or answered).
The routes Twilio calls back are in telephony/transfer.py.
"""

from __future__ import annotations

import logging

from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from callassist.call.transfer import TransferFailed
from callassist.settings import Settings
from callassist.telephony import twiml
from callassist.telephony.rest import RedirectingTwilioHttpClient, rest_client

log = logging.getLogger(__name__)

CHOICE_PATH = "/voice/transfer/choice"
STATUS_PATH = "/voice/transfer/status"
ENDED_PATH = "/voice/transfer/ended"
RING_SECONDS = 20  # the owner's phone rings this long (Twilio's Timeout; call/transfer.py RING_LIMIT_S)
KEY_SECONDS = 8  # after the whisper, how long the owner has to press a key


def room(call_sid: str) -> str:
    """The conference a transferred call meets the owner in (one per call)."""
    return f"callassist-{call_sid}"


class TwilioOwnerLine:
    """The call core's OwnerLine, through Twilio's REST API (the official SDK's asyncio client)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.owner_phone
        self._settings = settings
        self._client: Client | None = None
        self._http: RedirectingTwilioHttpClient | None = None

    def _twilio(self) -> Client:
        if self._client is None:  # made inside the running loop: aiohttp wants its session there
            settings = self._settings
            assert settings.twilio_account_sid and settings.twilio_auth_token
            self._client, self._http = rest_client(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                api_base_url=settings.twilio_api_base_url,
            )
        return self._client

    def _url(self, path: str, call_sid: str) -> str:
        return f"{self._settings.public_url}{path}?parent={call_sid}"

    async def ring(self, call_sid: str, called_number: str | None, whisper: str) -> str:
        settings = self._settings
        assert settings.owner_phone
        from_number = called_number or settings.twilio_phone_number
        if not from_number:
            raise TransferFailed("no number to ring the owner from (set TWILIO_PHONE_NUMBER)")
        document = twiml.screen(whisper, self._url(CHOICE_PATH, call_sid), KEY_SECONDS)
        try:
            leg = await self._twilio().calls.create_async(
                to=settings.owner_phone,
                from_=from_number,
                twiml=document,
                timeout=RING_SECONDS,
                status_callback=self._url(STATUS_PATH, call_sid),
                status_callback_method="POST",
            )
        except (TwilioException, OSError, TimeoutError) as exc:
            raise TransferFailed(f"Twilio refused the owner's call: {_twilio_error(exc)}") from None
        return str(leg.sid)

    async def put_through(self, call_sid: str) -> None:
        document = twiml.conference(room(call_sid), action_url=self._url(ENDED_PATH, call_sid))
        try:
            await self._twilio().calls(call_sid).update_async(twiml=document)
        except (TwilioException, OSError, TimeoutError) as exc:
            raise TransferFailed(f"Twilio refused to move the call: {_twilio_error(exc)}") from None

    async def hang_up(self, leg_sid: str) -> None:
        # `completed` ends the leg whether it rings or was answered; `canceled` would leave an
        # answered leg alone, without an error (the Calls resource's Status on update).
        try:
            await self._twilio().calls(leg_sid).update_async(status="completed")
        except (TwilioException, OSError, TimeoutError) as exc:
            log.info("transfer: the owner's leg could not be ended: %s", _twilio_error(exc))

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()  # type: ignore[no-untyped-call]  # the SDK's aiohttp client, untyped


def _twilio_error(exc: BaseException) -> str:
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    if status is not None:
        return f"HTTP {status}" + (f" (error {code})" if code else "")
    return type(exc).__name__
