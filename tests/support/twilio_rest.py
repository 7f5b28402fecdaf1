"""A local stand-in for Twilio's REST Messages API, strict the way Twilio is, for SMS tests.

POST /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP Basic auth AccountSid:AuthToken and
form fields To, From, Body answers 201 with a message resource, as Twilio does. Wrong credentials
get 401 (error 20003), a missing or malformed field 400 (21211 To, 21212 From, 21602 Body), in
Twilio's error body shape. It can be told to answer 503 (or any status), or be stopped and
started again on the same port, to play a Twilio that is down.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import web

# Auth, error shape and number format shared with the Calls stand-in (callassist.simulator.rest).
from callassist.simulator.rest import API_VERSION, E164, STATUS_TEXT, authenticate, twilio_error

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "stand-in-auth-token-0123456789ab"


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str


class TwilioRestStandIn:
    """Serves on 127.0.0.1 (a free port chosen at first start, kept across restarts)."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[AcceptedMessage] = []
        self.requests = 0  # every request that reached us, refused ones included
        self.failure_status: int | None = None  # answer every request with this while set
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()

    @property
    def base_url(self) -> str:
        assert self.port, "start the stand-in first"
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        assert self._runner is None, "already running"
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", self._create_message)
        app.router.add_get(f"/{API_VERSION}/Accounts/{{account_sid}}.json", self._fetch_account)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_for_messages(self, count: int, within_s: float = 5.0) -> list[AcceptedMessage]:
        """Until `count` messages were accepted in all (raises TimeoutError otherwise)."""
        async with asyncio.timeout(within_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    async def wait_for_requests(self, count: int, within_s: float = 5.0) -> None:
        """Until `count` requests reached the stand-in, refused ones included."""
        async with asyncio.timeout(within_s), self._arrived:
            await self._arrived.wait_for(lambda: self.requests >= count)

    async def _fetch_account(self, request: web.Request) -> web.Response:
        """The account resource (https://www.twilio.com/docs/iam/api/account): what a credentials
        check fetches."""
        refused = await self._refusal(request)
        if refused is not None:
            return refused
        sid = request.match_info["account_sid"]
        return web.json_response(
            {"sid": sid, "status": "active", "type": "Full", "friendly_name": "My first Twilio account"}
        )

    async def _refusal(self, request: web.Request) -> web.Response | None:
        """Count the request; Twilio's answer when it is made to fail or its credentials are wrong."""
        async with self._arrived:
            self.requests += 1
            self._arrived.notify_all()
        if self.failure_status is not None:
            status = self.failure_status
            return twilio_error(status, 20000 + status, STATUS_TEXT.get(status, "Error"))
        return authenticate(request, self.account_sid, self.auth_token)

    async def _create_message(self, request: web.Request) -> web.Response:
        refused = await self._refusal(request)
        if refused is not None:
            return refused
        account_sid = request.match_info["account_sid"]
        form = await request.post()
        fields: dict[str, str] = {name: str(form.get(name, "")) for name in ("To", "From", "Body")}
        if not E164.match(fields["To"]):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {fields['To']}")
        if not E164.match(fields["From"]):
            return twilio_error(400, 21212, f"Invalid From Number (caller ID): {fields['From']}")
        if not fields["Body"]:
            return twilio_error(400, 21602, "Message body is required.")
        if len(fields["Body"]) > 1600:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        sid = "SM" + secrets.token_hex(16)
        message = AcceptedMessage(
            sid=sid, account_sid=account_sid, to=fields["To"], from_=fields["From"], body=fields["Body"]
        )
        async with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()
        return web.json_response(self._resource(message), status=201)

    def _resource(self, message: AcceptedMessage) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{message.account_sid}/Messages/{message.sid}"
        return {
            "account_sid": message.account_sid,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(1 if len(message.body) <= 160 else -(-len(message.body) // 153)),
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": message.to,
            "uri": f"{uri}.json",
        }
