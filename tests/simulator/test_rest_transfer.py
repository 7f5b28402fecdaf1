"""The REST Calls stand-in playing Twilio's side of a warm transfer, driven with the twilio SDK.

A small aiohttp app stands in for callassist's webhooks (every request's signature is checked with
twilio's RequestValidator): the caller's stream, the owner's Gather action (which, on a 1, updates the
caller's call through the SDK and answers `<Dial><Conference>`), the caller's Dial action after the
conference, and the status callbacks.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import WSMsgType, web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from callassist.simulator.caller import CallerSimulator
from callassist.simulator.outbound import Timing
from callassist.simulator.owner import Owner
from callassist.simulator.rest import TwilioRest
from callassist.simulator.twiml import Conference, Dial, parse_twiml
from callassist.telephony.rest import rest_client

PUBLIC = "https://callassist.example.test"
STREAM_URL = "wss://callassist.example.test/voice/stream"
AUTH_TOKEN = "rest-harness-auth-token"
ACCOUNT_SID = "AC" + "2" * 32
OWNER_PHONE = "+15550001111"
OUR_NUMBER = "+15559870000"
CALLER = "+15551230000"
SID = re.compile(r"^CA[0-9a-f]{32}$")
EVENTS = ["initiated", "ringing", "answered", "completed"]


def conference_twiml(parent: str, *, action: bool) -> str:
    dial = (
        f'<Dial action="{PUBLIC}/voice/transfer/ended?parent={parent}" method="POST">' if action else "<Dial>"
    )
    return (
        f'<Response>{dial}<Conference startConferenceOnEnter="true" endConferenceOnExit="true" '
        f'beep="false">callassist-{parent}</Conference></Dial></Response>'
    )


def whisper_twiml(parent: str) -> str:
    return (
        '<Response><Gather numDigits="1" timeout="8" '
        f'action="{PUBLIC}/voice/transfer/choice?parent={parent}" method="POST" actionOnEmptyResult="false">'
        "<Say>Alex Kim, about the roof leak. Press 1 to take it.</Say></Gather><Hangup/></Response>"
    )


@dataclass
class Server:
    """callassist's webhooks, as far as a warm transfer needs them."""

    client: Client | None = None
    base_url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path?query, form)
    problems: list[str] = field(default_factory=list)
    stream_messages: list[dict[str, Any]] = field(default_factory=list)
    update_errors: list[TwilioRestException] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/voice/incoming", self.incoming)
        app.router.add_get("/voice/stream", self.stream)
        app.router.add_post("/voice/{name:.*}", self.webhook)
        return app

    async def _signed(self, request: web.Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = PUBLIC + request.path_qs
        if not RequestValidator(AUTH_TOKEN).validate(
            url, form, request.headers.get("X-Twilio-Signature", "")
        ):
            self.problems.append(f"bad signature on {request.path_qs}")
        async with self.changed:
            self.requests.append((request.path_qs, form))
            self.changed.notify_all()
        return form

    def of(self, path: str) -> list[dict[str, str]]:
        return [form for path_qs, form in self.requests if urlsplit(path_qs).path == path]

    async def wait(self, path: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, str]]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.of(path)) >= count)
        return self.of(path)

    async def incoming(self, request: web.Request) -> web.Response:
        await self._signed(request)
        twiml = (
            f'<Response><Connect action="{PUBLIC}/voice/after-stream"><Stream url="{STREAM_URL}" '
            f'statusCallback="{PUBLIC}/voice/stream-status"/></Connect><Hangup/></Response>'
        )
        return web.Response(text=twiml, content_type="application/xml")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not RequestValidator(AUTH_TOKEN).validate(
            STREAM_URL, {}, request.headers.get("X-Twilio-Signature", "")
        ):
            self.problems.append("bad stream signature")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                data = json.loads(message.data)
                if data.get("event") != "media":
                    async with self.changed:
                        self.stream_messages.append(data)
                        self.changed.notify_all()
        return ws

    async def webhook(self, request: web.Request) -> web.Response:
        form = await self._signed(request)
        if request.path == "/voice/transfer/choice":
            parent = request.query.get("parent", "")
            if form.get("Digits") != "1":
                return web.Response(text="<Response><Hangup/></Response>", content_type="application/xml")
            if parent:
                assert self.client is not None
                try:
                    await self.client.calls(parent).update_async(twiml=conference_twiml(parent, action=True))
                except TwilioRestException as exc:
                    self.update_errors.append(exc)
            twiml = conference_twiml(parent or "solo", action=False)
            return web.Response(text=twiml, content_type="application/xml")
        if request.path == "/voice/owner-twiml":
            return web.Response(text=whisper_twiml(""), content_type="application/xml")
        if request.path == "/voice/transfer/ended":
            return web.Response(text="<Response><Hangup/></Response>", content_type="application/xml")
        return web.Response(status=204)


@dataclass
class Stack:
    server: Server
    simulator: CallerSimulator
    rest: TwilioRest
    client: Client

    async def create_owner_call(self, parent: str = "", **overrides: Any) -> str:
        options: dict[str, Any] = {
            "to": OWNER_PHONE,
            "from_": OUR_NUMBER,
            "twiml": whisper_twiml(parent),
            "timeout": 15,
            "status_callback": f"{PUBLIC}/voice/transfer/status",
            "status_callback_method": "POST",
            "status_callback_event": EVENTS,
        }
        options.update(overrides)
        call = await self.client.calls.create_async(**options)
        return str(call.sid)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    server = Server()
    runner = web.AppRunner(server.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    simulator = CallerSimulator(
        server.base_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, public_base_url=PUBLIC
    )
    async with TwilioRest(simulator, timing=Timing(ring_s=0.02, talk_s=0.2, alone_s=5.0)) as rest:
        client, http = rest_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=rest.base_url, timeout_s=5.0)
        server.client = client
        try:
            yield Stack(server, simulator, rest, client)
        finally:
            for call in simulator.calls.values():
                await call.hang_up()
            await http.close()
    await runner.cleanup()
    assert server.problems == []
    assert rest.problems == []


def test_parse_dial_conference() -> None:
    (dial,) = parse_twiml(conference_twiml("CA1", action=True))
    assert isinstance(dial, Dial) and dial.action == f"{PUBLIC}/voice/transfer/ended?parent=CA1"
    assert dial.conference == Conference("callassist-CA1", True, True, "false")
    (plain,) = parse_twiml("<Response><Dial><Conference>room</Conference></Dial></Response>")
    assert isinstance(plain, Dial) and plain.conference == Conference("room")  # Twilio's defaults
    (odd,) = parse_twiml(
        '<Response><Dial><Conference endConferenceOnExit="yes">r</Conference></Dial></Response>'
    )
    assert isinstance(odd, Dial) and odd.conference is not None and "13231" in odd.conference.problems[0]


async def test_owner_presses_1_the_caller_is_transferred_into_the_conference(stack: Stack) -> None:
    server, rest = stack.server, stack.rest
    call = await stack.simulator.place_call(from_number=CALLER)
    await server.wait("/voice/stream-status")  # stream-started
    owner_sid = await stack.create_owner_call(call.call_sid)
    assert SID.match(owner_sid)
    (leg,) = await rest.wait_created()
    assert leg.call_sid == owner_sid and leg.owner is Owner.press_1

    # The whisper's Gather action: the owner leg's own parameters, signed, with the digit.
    (choice,) = await server.wait("/voice/transfer/choice")
    assert choice["CallSid"] == owner_sid and choice["Digits"] == "1"
    assert choice["Direction"] == "outbound-api" and choice["CallStatus"] == "in-progress"
    assert (
        choice["From"] == OUR_NUMBER and choice["To"] == OWNER_PHONE and choice["AccountSid"] == ACCOUNT_SID
    )

    # The update ended the caller's stream as Twilio does: `stop`, then the socket closes.
    (update,) = await rest.wait_updates()
    assert update.status == 200 and update.target == "caller" and update.call_sid == call.call_sid
    await call.wait_closed()
    async with asyncio.timeout(5), server.changed:
        await server.changed.wait_for(lambda: any(m["event"] == "stop" for m in server.stream_messages))
    stop = next(m for m in server.stream_messages if m["event"] == "stop")
    assert stop["stop"] == {"accountSid": ACCOUNT_SID, "callSid": call.call_sid}
    assert call.stream_closed_by == "redirect"
    statuses = await server.wait("/voice/stream-status", 2)
    assert [s["StreamEvent"] for s in statuses] == ["stream-started", "stream-stopped"]

    # Both legs in one room; bridged; the owner talks 0.2 s and hangs up; the conference ends.
    joined = await call.wait_for("conference_joined")
    assert joined.detail["name"] == f"callassist-{call.call_sid}"
    await call.wait_for("conference_started")
    await leg.wait_for("conference_started")
    ended = await call.wait_for("conference_ended", timeout=3)
    assert "owner left with endConferenceOnExit" in ended.detail["reason"]
    room = await rest.conferences.wait_ended(f"callassist-{call.call_sid}")
    assert room.roles() == ["owner", "caller"] and room.started

    # The caller's <Dial> ended: its action, Twilio's conference parameters; then <Hangup/>.
    (dial_action,) = await server.wait("/voice/transfer/ended")
    assert dial_action["CallSid"] == call.call_sid and dial_action["DialCallStatus"] == "answered"
    assert dial_action["DialBridged"] == "true" and dial_action["CallStatus"] == "in-progress"
    assert "DialCallSid" not in dial_action and "DialCallDuration" not in dial_action
    await call.wait_ended()
    assert call.end_reason == "hangup" and call.verbs[-1] == "Hangup"
    assert server.of("/voice/after-stream") == []  # the abandoned <Connect>'s action is not requested
    assert call.count("redirected") == 1
    order = [
        e.kind
        for e in call.events
        if e.kind in ("redirected", "stop_sent", "stream_closed", "conference_joined")
    ]
    assert order == ["redirected", "stop_sent", "stream_closed", "conference_joined"]

    # The owner leg's status callbacks, in order, signed; CallDuration on the last only.
    assert await leg.wait_ended() == "completed"
    callbacks = await server.wait("/voice/transfer/status", 4)
    assert [c["CallStatus"] for c in callbacks] == ["initiated", "ringing", "in-progress", "completed"]
    assert [c["SequenceNumber"] for c in callbacks] == ["0", "1", "2", "3"]
    assert {c["CallbackSource"] for c in callbacks} == {"call-progress-events"}
    assert {c["CallSid"] for c in callbacks} == {owner_sid}
    assert "CallDuration" in callbacks[-1] and "CallDuration" not in callbacks[2]
    assert leg.callback_statuses() == ["initiated", "ringing", "in-progress", "completed"]
    heard = [event.detail["text"] for event in leg.events if event.kind == "owner_heard"]
    assert heard == ["Alex Kim, about the roof leak. Press 1 to take it."]
    fetched = await stack.client.calls(owner_sid).fetch_async()
    assert fetched.status == "completed" and fetched.direction == "outbound-api"
    assert not call.errors and not leg.errors and not call.violations


@pytest.mark.parametrize(
    ("owner", "final", "statuses", "digits"),
    [
        (Owner.press_2, "completed", ["initiated", "ringing", "in-progress", "completed"], "2"),
        (Owner.no_key, "completed", ["initiated", "ringing", "in-progress", "completed"], None),
        (Owner.voicemail, "completed", ["initiated", "ringing", "in-progress", "completed"], None),
        (Owner.hang_up, "completed", ["initiated", "ringing", "in-progress", "completed"], None),
        (Owner.no_answer, "no-answer", ["initiated", "ringing", "no-answer"], None),
        (Owner.busy, "busy", ["initiated", "ringing", "busy"], None),
        (Owner.failed, "failed", ["initiated", "failed"], None),
    ],
)
async def test_owner_does_not_take_it_and_the_caller_stays_with_the_assistant(
    stack: Stack, owner: Owner, final: str, statuses: list[str], digits: str | None
) -> None:
    call = await stack.simulator.place_call(from_number=CALLER)
    stack.rest.owner = owner
    owner_sid = await stack.create_owner_call(call.call_sid)
    (leg,) = await stack.rest.wait_created()
    assert await leg.wait_ended() == final
    callbacks = await stack.server.wait("/voice/transfer/status", len(statuses))
    assert [c["CallStatus"] for c in callbacks] == statuses
    assert callbacks[-1]["CallSid"] == owner_sid
    if final != "completed":
        assert callbacks[-1]["CallDuration"] == "0"
    choices = stack.server.of("/voice/transfer/choice")
    assert [c["Digits"] for c in choices] == ([digits] if digits else [])
    # The caller's call is untouched: still streaming, no update, no conference.
    assert stack.rest.updates == [] and call.live and not call.stream_ended
    assert call.count("redirected") == 0 and not stack.rest.conferences.history


async def test_cancel_while_ringing_and_hang_up_in_progress(stack: Stack) -> None:
    rest = stack.rest
    rest.timing = Timing(ring_s=30.0)
    ringing_sid = await stack.create_owner_call()
    (leg,) = await rest.wait_created()
    await leg.wait_for("ringing")
    await stack.client.calls(ringing_sid).update_async(status="canceled")
    assert await leg.wait_ended() == "canceled"
    assert leg.callback_statuses()[-1] == "canceled" and leg.callbacks[-1].params["CallDuration"] == "0"
    with pytest.raises(TwilioRestException) as again:  # it has ended: strict, like a redirect
        await stack.client.calls(ringing_sid).update_async(status="canceled")
    assert again.value.status == 400 and again.value.code == 21220

    # In progress: alone in its conference (nobody transferred). canceled leaves it; completed ends it.
    rest.timing = Timing(ring_s=0.01, alone_s=30.0)
    sid = await stack.create_owner_call()
    second = (await rest.wait_created(2))[1]
    await second.wait_for("conference_joined")
    await stack.client.calls(sid).update_async(status="canceled")
    assert second.status == "in-progress" and second.count("rest_cancel_ignored") == 1
    await stack.client.calls(sid).update_async(status="completed")
    assert await second.wait_ended() == "completed"
    room = await rest.conferences.wait_ended("callassist-solo")
    assert room.end_reason is not None and not room.started


async def test_caller_hangs_up_in_the_conference_ends_the_owner_leg(stack: Stack) -> None:
    stack.rest.timing = Timing(ring_s=0.01, talk_s=30.0)
    call = await stack.simulator.place_call(from_number=CALLER)
    await stack.create_owner_call(call.call_sid)
    (leg,) = await stack.rest.wait_created()
    await call.wait_for("conference_started")
    await call.hang_up()
    assert call.end_reason == "caller hung up"
    assert await leg.wait_ended() == "completed"
    assert (await leg.wait_for("conference_ended")).detail["reason"].startswith("caller left")
    assert stack.server.of("/voice/transfer/ended") == []  # the caller is gone: no Dial action


async def test_errors_the_server_must_survive(stack: Stack) -> None:
    rest, client = stack.rest, stack.client
    with pytest.raises(TwilioRestException) as bad_to:
        await stack.create_owner_call(to="not-a-number")
    assert bad_to.value.status == 400 and bad_to.value.code == 21211
    rest.fail_creates(503)
    with pytest.raises(TwilioRestException) as down:
        await stack.create_owner_call()
    assert down.value.status == 503
    rest.fail_creates(400, 21211, "Invalid 'To' Phone Number")
    with pytest.raises(TwilioRestException) as refused:
        await stack.create_owner_call()
    assert refused.value.code == 21211
    wrong, wrong_http = rest_client(ACCOUNT_SID, "wrong-token", api_base_url=rest.base_url)
    try:
        with pytest.raises(TwilioRestException) as auth:
            await wrong.calls.create_async(to=OWNER_PHONE, from_=OUR_NUMBER, twiml="<Response/>")
        assert auth.value.status == 401 and auth.value.code == 20003
    finally:
        await wrong_http.close()
    assert rest.created == []

    with pytest.raises(TwilioRestException) as unknown:
        await client.calls("CA" + "0" * 32).update_async(twiml="<Response><Hangup/></Response>")
    assert unknown.value.status == 404 and unknown.value.code == 20404

    call = await stack.simulator.place_call(from_number=CALLER)
    with pytest.raises(TwilioRestException) as relative:
        await client.calls(call.call_sid).update_async(
            twiml='<Response><Dial action="/voice/ended"><Conference>r</Conference></Dial></Response>'
        )
    assert relative.value.status == 400 and relative.value.code == 15004
    assert call.live  # a refused update changes nothing
    await call.hang_up()
    with pytest.raises(TwilioRestException) as gone:
        await client.calls(call.call_sid).update_async(twiml=conference_twiml(call.call_sid, action=True))
    assert gone.value.status == 400 and gone.value.code == 21220
    assert "not in-progress" in gone.value.msg


async def test_rest_hang_up_of_the_callers_call(stack: Stack) -> None:
    call = await stack.simulator.place_call(from_number=CALLER)
    await stack.client.calls(call.call_sid).update_async(status="completed")
    await call.wait_ended()
    assert call.stream_closed_by == "redirect" and call.end_reason == "hangup"
    assert stack.server.of("/voice/after-stream") == []


async def test_a_redirect_back_to_the_assistant_opens_a_new_stream(stack: Stack) -> None:
    stack.rest.timing = Timing(ring_s=0.01, talk_s=30.0)
    call = await stack.simulator.place_call(from_number=CALLER)
    first_stream = call.stream_sid
    await stack.create_owner_call(call.call_sid)
    (leg,) = await stack.rest.wait_created()
    await call.wait_for("conference_started")
    back = f'<Response><Connect><Stream url="{STREAM_URL}"/></Connect><Hangup/></Response>'
    await stack.client.calls(call.call_sid).update_async(twiml=back)
    # The caller leaves the room (endConferenceOnExit: it ends, the owner's leg with it)...
    assert (await call.wait_for("conference_left")).detail["name"] == f"callassist-{call.call_sid}"
    assert await leg.wait_ended() == "completed"
    # ...and gets a new stream: new StreamSid, `connected` + `start` again, sequence numbers from 1.
    opened = await call.wait_for("start_sent", after=(await call.wait_for("conference_left")).t)
    assert opened.detail["stream_sid"] == call.stream_sid != first_stream
    assert call.previous_stream_sids == [first_stream] and call.live
    async with asyncio.timeout(5), stack.server.changed:
        await stack.server.changed.wait_for(
            lambda: sum(m["event"] == "start" for m in stack.server.stream_messages) == 2
        )
    starts = [m for m in stack.server.stream_messages if m["event"] == "start"]
    assert [m["streamSid"] for m in starts] == [first_stream, call.stream_sid]
    assert starts[1]["sequenceNumber"] == "1"
    assert call.stream_closed_by is None  # the current stream is open
    await call.hang_up()
    assert call.stream_closed_by == "caller" and call.end_reason == "caller hung up"
    assert stack.server.of("/voice/transfer/ended") == []  # the <Dial> was abandoned: no action


async def test_owner_presses_1_after_the_caller_hung_up(stack: Stack) -> None:
    """The update is refused (21220); the owner waits alone, then hangs up (or the server ends it)."""
    stack.rest.timing = Timing(ring_s=0.01, alone_s=0.2)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.hang_up()
    await stack.create_owner_call(call.call_sid)
    (leg,) = await stack.rest.wait_created()
    assert await leg.wait_ended() == "completed"
    (error,) = stack.server.update_errors
    assert error.status == 400 and error.code == 21220
    (update,) = stack.rest.updates
    assert update.status == 400 and update.code == 21220 and update.target == "caller"
    outcome = [e.detail["outcome"] for e in leg.events if e.kind == "owner_leg"]
    assert outcome == ["alone in the conference for 0.2s; hung up"]
    room = await stack.rest.conferences.wait_ended("callassist-" + call.call_sid)
    assert room.roles() == ["owner"] and not room.started


async def test_twiml_from_a_url_and_a_failing_update(stack: Stack) -> None:
    stack.rest.owners.append(Owner.no_key)
    sid = await stack.create_owner_call(twiml=None, url=f"{PUBLIC}/voice/owner-twiml", method="POST")
    (leg,) = await stack.rest.wait_created()
    assert await leg.wait_ended() == "completed"
    (fetched,) = stack.server.of("/voice/owner-twiml")
    assert fetched["CallSid"] == sid and fetched["Direction"] == "outbound-api"
    assert leg.errors == [] and leg.count("gather_timeout") == 1 and leg.verbs[-1] == "Hangup"
    assert stack.server.of("/voice/transfer/choice") == []  # actionOnEmptyResult="false"
    call = await stack.simulator.place_call(from_number=CALLER)
    stack.rest.fail_updates(503)
    with pytest.raises(TwilioRestException) as down:
        await stack.client.calls(call.call_sid).update_async(
            twiml=conference_twiml(call.call_sid, action=True)
        )
    assert down.value.status == 503 and call.live


async def test_the_stand_in_can_start_before_its_simulator(stack: Stack) -> None:
    async with TwilioRest(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as early:
        client, http = rest_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=early.base_url)
        try:
            with pytest.raises(TwilioRestException) as unattached:
                await client.calls.create_async(to=OWNER_PHONE, from_=OUR_NUMBER, twiml="<Response/>")
            assert unattached.value.status == 500
            early.problems.clear()
            early.attach(stack.simulator)
            early.owner = Owner.busy
            await client.calls.create_async(to=OWNER_PHONE, from_=OUR_NUMBER, twiml="<Response/>")
            (leg,) = await early.wait_created()
            assert await leg.wait_ended() == "busy"
            assert leg.callbacks == []  # no StatusCallback asked for
        finally:
            await http.close()
    with pytest.raises(ValueError, match="another account"):
        TwilioRest(account_sid="AC" + "9" * 32, auth_token=AUTH_TOKEN).attach(stack.simulator)
