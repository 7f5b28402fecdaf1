"""A local stand-in for Twilio's REST Calls API, playing Twilio's side of a warm transfer.

`TwilioRest(simulator)` (or `TwilioRest(account_sid=..., auth_token=...)`, then `attach(simulator)`)
serves, on 127.0.0.1 (a free port; `base_url`), what the twilio SDK calls:
- `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`: create a call (`To`, `From`, `Twiml` or `Url`,
  `Timeout`, `StatusCallback`, `StatusCallbackMethod`, `StatusCallbackEvent`...). The call is played
  by a simulated owner (`Owner`, chosen with `owner=` or per call with `owners`): see `outbound.py`.
  Answers 201 with the call resource, status `queued`;
- `POST .../Calls/{CallSid}.json`: update a call: `Twiml` / `Url` (+ `Method`) redirect it,
  `Status=canceled|completed` hang it up. The CallSid may be one of the `CallerSimulator`'s calls (the
  caller's call: its media stream gets `stop` and closes, and the new TwiML is followed, see
  `CallerSimulator.redirect`) or a call created here;
- `GET .../Calls/{CallSid}.json`: fetch a call.

As Twilio documents (https://www.twilio.com/docs/voice/api/call-resource, and
https://www.twilio.com/docs/usage/twilios-response for the error body `{code, message, more_info,
status}`): HTTP Basic auth AccountSid:AuthToken, else 401 with code 20003; an unknown call 404
(20404); `To` not a phone number 400 (21211); an update with new TwiML of a call that is not in
progress 400 (21220 "Call is not in-progress. Cannot redirect."); inline TwiML given to an in-progress
call with a relative `action` URL 400 (15004, https://www.twilio.com/docs/api/errors/15004).
Where the page is silent the stand-in is strict and says so: a create without `Twiml`, `Url` or
`ApplicationSid` is refused (400, code 21205 chosen here: the page says one is required, not the
code); an update of a call that has ended, with a Status, gets 21220 too; `Timeout` outside 5..600
and other oddities are recorded in `problems` (a test should assert it is empty).

Failures on demand: `fail_creates()` / `fail_updates()` queue answers such as 503, or 400 21211.
Everything is recorded (`created`, `updates`, `requests`, each call's events and callbacks, the
conferences) and can be waited on with a timeout (`wait_created`, `wait_updates`, `wait_for`).

One reason it runs past 500 lines: it is the whole REST surface the server uses for calls (create,
update, fetch), each with Twilio's validation and error shapes; the legs themselves are in outbound.py.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from aiohttp import BasicAuth, web
from multidict import MultiDictProxy

from callassist.simulator import twiml as tw
from callassist.simulator.call import SimulatedCall
from callassist.simulator.caller import CallerSimulator
from callassist.simulator.conference import Conferences
from callassist.simulator.ids import new_sid
from callassist.simulator.outbound import OutboundCall, Timing, _Context, callback_events
from callassist.simulator.owner import Owner
from callassist.simulator.voicemail import Record

__all__ = ["CallUpdate", "RestFailure", "RestRequest", "TwilioRest", "authenticate", "twilio_error"]

API_VERSION = "2010-04-01"
# Twilio's own wording: https://www.twilio.com/docs/glossary/what-e164
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
STATUS_TEXT = {
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
NOT_IN_PROGRESS = "Call is not in-progress. Cannot redirect."


def twilio_error(status: int, code: int, message: str) -> web.Response:
    """An error the way Twilio's REST API answers one (https://www.twilio.com/docs/usage/twilios-response)."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


def authenticate(request: web.Request, account_sid: str, auth_token: str) -> web.Response | None:
    """None if the request carries HTTP Basic AccountSid:AuthToken for the account in its path, else
    Twilio's 401 (code 20003, with a WWW-Authenticate challenge)."""
    try:
        auth = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        auth = None
    path_sid = request.match_info.get("account_sid")
    if (
        auth is not None
        and auth.login == account_sid
        and path_sid == account_sid
        and secrets.compare_digest(auth.password.encode(), auth_token.encode())
    ):
        return None
    response = twilio_error(401, 20003, "Authenticate")
    response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


@dataclass(frozen=True, slots=True)
class RestFailure:
    """An answer to give instead of doing the request (a Twilio that is down or refuses)."""

    status: int
    code: int | None = None
    message: str | None = None

    def response(self) -> web.Response:
        code = self.code if self.code is not None else 20000 + self.status
        return twilio_error(self.status, code, self.message or STATUS_TEXT.get(self.status, "Error"))


@dataclass(frozen=True, slots=True)
class RestRequest:
    """Every request that reached the stand-in, with the HTTP status it was answered."""

    method: str
    path: str
    form: dict[str, str]
    status: int
    code: int | None
    t: float


@dataclass(slots=True)
class CallUpdate:
    """One `POST .../Calls/{CallSid}.json` and what came of it."""

    call_sid: str
    form: dict[str, str]
    status: int  # the HTTP status answered
    code: int | None  # Twilio's error code, if refused
    target: str  # "caller" (a CallerSimulator call), "outbound" (created here) or "unknown"
    t: float = field(default_factory=time.monotonic)


class TwilioRest:
    """Twilio's REST Calls API for tests, bound to a `CallerSimulator` (its account, auth token,
    signing, server address and conference rooms)."""

    def __init__(
        self,
        simulator: CallerSimulator | None = None,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        owner: Owner | str = Owner.press_1,
        timing: Timing | None = None,
    ) -> None:
        if simulator is not None:
            account_sid = account_sid or simulator.account_sid
            auth_token = auth_token or simulator.auth_token
        if not account_sid or not auth_token:
            raise ValueError(
                "the REST stand-in needs the account's SID and auth token (or a CallerSimulator)"
            )
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._simulator: CallerSimulator | None = None
        if simulator is not None:
            self.attach(simulator)
        self.owner = Owner(owner)  # what the owner's phone does on the next calls created
        self.owners: list[Owner] = []  # per call, first in first used; `owner` when empty
        self.timing = timing or Timing()
        self.created: list[OutboundCall] = []
        self.updates: list[CallUpdate] = []
        self.requests: list[RestRequest] = []
        self.problems: list[str] = []  # what real Twilio would refuse or treat differently
        self.port = 0
        self._create_failures: list[RestFailure] = []
        self._update_failures: list[RestFailure] = []
        self._runner: web.AppRunner | None = None
        self._changed: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def attach(self, simulator: CallerSimulator) -> None:
        """Bind the caller simulator whose calls can be updated, and whose signing, server address and
        conference rooms the created calls use (when the server under test must know `base_url`
        before the simulator exists: start the stand-in first, attach it later)."""
        if simulator.account_sid != self.account_sid or simulator.auth_token != self.auth_token:
            raise ValueError("the CallerSimulator plays another account (account SID or auth token differ)")
        self._simulator = simulator

    @property
    def simulator(self) -> CallerSimulator:
        if self._simulator is None:
            raise RuntimeError("no CallerSimulator attached to the REST stand-in (TwilioRest.attach)")
        return self._simulator

    # ----- lifecycle ----------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.port, "start the stand-in first"
        return f"http://127.0.0.1:{self.port}"

    @property
    def conferences(self) -> Conferences:
        return self.simulator.conferences

    async def start(self) -> None:
        assert self._runner is None, "already running"
        app = web.Application()
        calls = f"/{API_VERSION}/Accounts/{{account_sid}}/Calls"
        app.router.add_post(f"{calls}.json", self._create)
        app.router.add_post(f"{calls}/{{call_sid}}.json", self._update)
        app.router.add_get(f"{calls}/{{call_sid}}.json", self._fetch)
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
        await asyncio.gather(*(call.close() for call in self.created))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----- test controls ------------------------------------------------------------------------------------

    def fail_creates(
        self, status: int, code: int | None = None, message: str | None = None, *, times: int = 1
    ) -> None:
        """Answer the next `times` creates with this error (e.g. 503; or 400, 21211)."""
        self._create_failures.extend([RestFailure(status, code, message)] * times)

    def fail_updates(
        self, status: int, code: int | None = None, message: str | None = None, *, times: int = 1
    ) -> None:
        """Answer the next `times` updates with this error."""
        self._update_failures.extend([RestFailure(status, code, message)] * times)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds (checked after every request); TimeoutError otherwise."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._changed.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"REST stand-in: condition not met within {timeout:g}s") from None
        finally:
            if entry in self._changed:
                self._changed.remove(entry)

    async def wait_created(self, count: int = 1, timeout: float = 5.0) -> list[OutboundCall]:  # noqa: ASYNC109
        """Until `count` calls were created in all; returns them."""
        await self.wait_for(lambda: len(self.created) >= count, timeout)
        return list(self.created)

    async def wait_updates(self, count: int = 1, timeout: float = 5.0) -> list[CallUpdate]:  # noqa: ASYNC109
        """Until `count` updates (answered, refused or not) reached the stand-in; returns them."""
        await self.wait_for(lambda: len(self.updates) >= count, timeout)
        return list(self.updates)

    def call(self, call_sid: str) -> OutboundCall:
        return next(call for call in self.created if call.call_sid == call_sid)

    # ----- handlers -----------------------------------------------------------------------------------------

    @staticmethod
    def _code(response: web.Response) -> int | None:
        body = response.body
        if response.status < 400 or not isinstance(body, bytes):
            return None
        match = re.search(rb'"code": ?(\d+)', body)
        return int(match.group(1)) if match else None

    def _answered(self, request: web.Request, form: dict[str, str], response: web.Response) -> web.Response:
        code = self._code(response)
        self.requests.append(
            RestRequest(request.method, request.path, form, response.status, code, time.monotonic())
        )
        self._notify()
        return response

    @staticmethod
    def _form(post: MultiDictProxy[Any]) -> dict[str, str]:
        fields: dict[str, str] = {}
        for name in post:
            if name not in fields:
                fields[name] = " ".join(str(value) for value in post.getall(name))
        return fields

    async def _create(self, request: web.Request) -> web.Response:
        post = await request.post()
        form = self._form(post)
        refused = authenticate(request, self.account_sid, self.auth_token)
        if refused is not None:
            return self._answered(request, form, refused)
        if self._simulator is None:
            self.problems.append("a call was created before a CallerSimulator was attached")
            return self._answered(request, form, RestFailure(500).response())
        if self._create_failures:
            return self._answered(request, form, self._create_failures.pop(0).response())
        to, from_ = form.get("To", ""), form.get("From", "")
        if not E164.match(to):
            return self._answered(request, form, twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}"))
        if not E164.match(from_):
            return self._answered(
                request, form, twilio_error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
            )
        twiml, url = form.get("Twiml"), form.get("Url")
        if not twiml and not url and not form.get("ApplicationSid"):
            # The page requires one of them; the error code is the stand-in's choice (see above).
            message = "Either Url, Twiml or ApplicationSid is required."
            return self._answered(request, form, twilio_error(400, 21205, message))
        if twiml and url:
            self.problems.append("create with both Twiml and Url: Twilio documents them as alternatives")
        self._check_timeout(form.get("Timeout"))
        callback = form.get("StatusCallback")
        if callback and urlsplit(callback).scheme not in ("http", "https"):
            self.problems.append(f"StatusCallback {callback!r} is not an absolute URL")
        verbs: list[tw.Verb] | None = None
        if twiml:
            try:
                verbs = tw.parse_twiml(twiml)
            except tw.TwimlError as exc:
                # Twilio would fail the call when it runs the TwiML (12100): here the call gets no TwiML.
                self.problems.append(f"create with invalid Twiml (12100): {exc}")
                verbs = []
            for problem in self._relative_urls(verbs):
                self.problems.append(f"create Twiml: {problem} (nothing to resolve it against)")
        owner = self.owners.pop(0) if self.owners else self.owner
        call = OutboundCall(
            call_sid=new_sid("CA"),
            account_sid=self.account_sid,
            from_number=from_,
            to_number=to,
            owner=owner,
            form=form,
            events=callback_events([str(value) for value in post.getall("StatusCallbackEvent", [])]),
            verbs=verbs,
        )
        self.created.append(call)
        call.start(self._context())
        return self._answered(request, form, web.json_response(self._outbound_resource(call), status=201))

    async def _update(self, request: web.Request) -> web.Response:
        post = await request.post()
        form = self._form(post)
        call_sid = request.match_info["call_sid"]
        caller = self._simulator.calls.get(call_sid) if self._simulator is not None else None
        outbound = next((call for call in self.created if call.call_sid == call_sid), None)
        target = "caller" if caller is not None else "outbound" if outbound is not None else "unknown"
        response = self._do_update(request, form, call_sid, caller, outbound)
        self.updates.append(CallUpdate(call_sid, form, response.status, self._code(response), target))
        return self._answered(request, form, response)

    def _do_update(
        self,
        request: web.Request,
        form: dict[str, str],
        call_sid: str,
        caller: SimulatedCall | None,
        outbound: OutboundCall | None,
    ) -> web.Response:
        refused = authenticate(request, self.account_sid, self.auth_token)
        if refused is not None:
            return refused
        if self._update_failures:
            return self._update_failures.pop(0).response()
        if caller is None and outbound is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        status, twiml, url = form.get("Status"), form.get("Twiml"), form.get("Url")
        method = (form.get("Method") or "POST").upper()
        ended = caller.ended if caller is not None else outbound is not None and outbound.final
        if status is not None:
            if status not in ("canceled", "completed"):
                return twilio_error(400, 20001, f"Invalid Status: {status}. Expected canceled or completed")
            if ended:
                # The page is silent on hanging up a call that has ended: strict, as for a redirect.
                return twilio_error(400, 21220, NOT_IN_PROGRESS)
            if outbound is not None:
                outbound.hang_up_by_rest(status)
                return web.json_response(self._outbound_resource(outbound))
            assert caller is not None
            if status == "completed":  # "canceled" does not affect a call in progress
                self.simulator.redirect(caller, verbs=[tw.Hangup()], source="REST Status=completed")
            return web.json_response(self._caller_resource(caller))
        if not twiml and not url:
            self.problems.append(f"update of {call_sid} with neither Status, Twiml nor Url: nothing to do")
            if caller is not None:
                return web.json_response(self._caller_resource(caller))
            assert outbound is not None
            return web.json_response(self._outbound_resource(outbound))
        in_progress = (caller is not None and not caller.ended) or (
            outbound is not None and outbound.status == "in-progress"
        )
        if not in_progress:
            return twilio_error(400, 21220, NOT_IN_PROGRESS)
        verbs: list[tw.Verb] | None = None
        if twiml:
            try:
                verbs = tw.parse_twiml(twiml)
            except tw.TwimlError as exc:
                # Not on the page: Twilio's code for TwiML that doesn't parse is 12100.
                return twilio_error(400, 12100, f"Document parse failure: {exc}")
            relative = self._relative_urls(verbs)
            if relative:
                message = (
                    "Action Callback URL must be an absolute URL when using TwiML to update in-progress calls"
                )
                return twilio_error(400, 15004, f"{message} ({relative[0]})")
        elif url and not urlsplit(url).scheme.startswith("http"):
            return twilio_error(400, 21205, f"Url is not a valid URL: {url}")
        if caller is not None:
            self.simulator.redirect(
                caller, verbs=verbs, url=url if verbs is None else None, method=method, source="REST update"
            )
            return web.json_response(self._caller_resource(caller))
        assert outbound is not None
        outbound.redirect(verbs, url if verbs is None else None, method)
        return web.json_response(self._outbound_resource(outbound))

    async def _fetch(self, request: web.Request) -> web.Response:
        refused = authenticate(request, self.account_sid, self.auth_token)
        if refused is not None:
            return self._answered(request, {}, refused)
        call_sid = request.match_info["call_sid"]
        caller = self._simulator.calls.get(call_sid) if self._simulator is not None else None
        if caller is not None:
            return self._answered(request, {}, web.json_response(self._caller_resource(caller)))
        outbound = next((call for call in self.created if call.call_sid == call_sid), None)
        if outbound is not None:
            return self._answered(request, {}, web.json_response(self._outbound_resource(outbound)))
        return self._answered(
            request, {}, twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        )

    # ----- helpers ------------------------------------------------------------------------------------------

    def _context(self) -> _Context:
        return _Context(
            request=self.simulator._request,
            fetch=self.simulator._fetch,
            conferences=self.simulator.conferences,
            timing=self.timing,
        )

    def _check_timeout(self, value: str | None) -> None:
        if value is None:
            return
        try:
            seconds = int(value)
        except ValueError:
            self.problems.append(f"Timeout={value!r} is not an integer")
            return
        if not 5 <= seconds <= 600:
            # "Can be an integer between 5 and 600, inclusive" (the Call resource page).
            self.problems.append(f"Timeout={seconds} outside 5..600")

    @staticmethod
    def _relative_urls(verbs: list[tw.Verb]) -> list[str]:
        found: list[str] = []

        def check(what: str, url: str | None) -> None:
            if url and urlsplit(url).scheme not in ("http", "https"):
                found.append(f"{what} {url!r} is not an absolute URL")

        for verb in verbs:
            if isinstance(verb, tw.Dial | tw.Gather | tw.Connect | Record):
                check(f"<{type(verb).__name__} action>", verb.action)
            if isinstance(verb, tw.Redirect):
                check("<Redirect>", verb.url)
            if isinstance(verb, tw.Dial):
                for number in verb.numbers:
                    check("<Number url>", number.url)
        return found

    def _notify(self) -> None:
        for predicate, future in list(self._changed):
            if future.done():
                continue
            try:
                if predicate():
                    future.set_result(None)
            except Exception as exc:
                future.set_exception(exc)

    def _resource(
        self, *, sid: str, status: str, direction: str, to: str, from_: str, duration: int | None
    ) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": direction,
            "duration": None if duration is None else str(duration),
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": status,
            "subresource_uris": {
                "notifications": f"{uri}/Notifications.json",
                "recordings": f"{uri}/Recordings.json",
            },
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }

    def _outbound_resource(self, call: OutboundCall) -> dict[str, Any]:
        return self._resource(
            sid=call.call_sid,
            status=call.status,
            direction="outbound-api",
            to=call.to_number,
            from_=call.from_number,
            duration=call.duration_s if call.final else None,
        )

    def _caller_resource(self, call: SimulatedCall) -> dict[str, Any]:
        return self._resource(
            sid=call.call_sid,
            status="completed" if call.ended else "in-progress",
            direction="inbound",
            to=call.to_number,
            from_=call.from_number,
            duration=None,
        )
