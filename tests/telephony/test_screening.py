"""The ring the owner confirms, over real sockets: the simulated Twilio rings the owner, runs the
screening TwiML (<Number url>) on the owner's leg with a simulated owner, and reports the <Dial>'s
outcome; only a pressed 1 bridges, everything else sends the caller to the assistant. VIPs always
ring; blocked numbers are refused politely and never reach the assistant."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from callassist.simulator.call import SimulatedCall
from callassist.simulator.owner import Owner
from callassist.store.contacts import ContactRepository
from callassist.store.models import CallRow, ContactRow, StreamAdmissionRow, utc_now
from tests.fakes.realtime_server import Reply, Say, Script
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, RunningServer
from tests.support.stack import Stack, StackFactory, stack_factory

OWNER_PHONE = "+15550001111"
CALLER = "+15551230000"
WHISPER_END = "Press 1 to take it, 2 to let the assistant answer."
ATTESTED = {"StirVerstat": "TN-Validation-Passed-A"}  # the carrier vouches for the caller ID


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    async with stack_factory(tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


def greeting() -> Script:
    return Script(replies=[Reply([Say("Hello, this is Dana's assistant.")])])


async def ringing_stack(make_stack: StackFactory, **settings: Any) -> Stack:
    values: dict[str, Any] = {"owner_phone": OWNER_PHONE, "ring_owner_seconds": 15}
    values.update(settings)
    return await make_stack(greeting(), **values)


def whispers(call: SimulatedCall) -> list[str]:
    return [event.detail["text"] for event in call.events if event.kind == "owner_heard"]


async def admission(stack: Stack, call_sid: str) -> StreamAdmissionRow:
    async with stack.server.services.database.session(read_only=True) as session:
        row = await session.get(StreamAdmissionRow, call_sid)
    assert row is not None
    return row


async def assistant_answers(stack: Stack, call: SimulatedCall) -> str:
    """The assistant took the call: its instructions, once the session is configured."""
    assert call.stream_opened
    await stack.fake.wait_until(lambda: bool(stack.fake.sessions), timeout=10)
    session = stack.fake.sessions[0]
    # Sessions open before `start` are configured once more with the call's own instructions.
    await stack.fake.wait_until(
        lambda: "Greeting:" in str(session.session_config.get("instructions", "")), timeout=10
    )
    instructions = str(session.session_config["instructions"])
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    return instructions


async def test_owner_pressing_1_takes_the_call_and_the_assistant_never_answers(
    make_stack: StackFactory,
) -> None:
    stack = await ringing_stack(make_stack)
    call = await stack.simulator.place_call(from_number=CALLER, owner=Owner.press_1)
    await call.wait_ended()
    assert not call.stream_opened and stack.fake.sessions == []
    assert whispers(call) == [f"Call from 1 5 5 5 1 2 3 0 0 0 0. {WHISPER_END}"]
    assert call.dial_status == "completed" and call.count("owner_pressed") == 1
    assert call.verbs[-1] == "Hangup" and call.end_reason == "hangup"
    assert (await admission(stack, call.call_sid)).owner_choice == "1"
    # The owner's leg asked /voice/screen and /voice/screen-choice, signed, with the caller's sid.
    urls = [event.detail["url"] for event in call.events if event.kind == "webhook"]
    public = stack.server.settings.public_url
    assert urls == [
        public + "/voice/incoming",
        public + f"/voice/screen?parent={call.call_sid}",
        public + f"/voice/screen-choice?parent={call.call_sid}",
        public + "/voice/dial-result",
    ]


async def test_owner_pressing_2_sends_the_caller_to_an_assistant_that_knows_it_was_declined(
    make_stack: StackFactory,
) -> None:
    stack = await ringing_stack(make_stack)
    call = await stack.simulator.place_call(from_number=CALLER, owner=Owner.press_2)
    instructions = await assistant_answers(stack, call)
    assert "Dana was rung first just now and declined to take it" in instructions
    assert (await admission(stack, call.call_sid)).dial_status == "declined"
    async with stack.server.services.database.session(read_only=True) as session:
        row = await session.get(CallRow, call.call_sid)
    assert row is not None and row.dial_status == "declined"


@pytest.mark.parametrize("owner", [Owner.no_key, Owner.voicemail, Owner.hang_up, Owner.no_answer])
async def test_no_key_a_voicemail_or_a_hang_up_is_missed_and_the_assistant_answers(
    make_stack: StackFactory, owner: Owner
) -> None:
    stack = await ringing_stack(make_stack)
    call = await stack.simulator.place_call(from_number=CALLER, owner=owner)
    instructions = await assistant_answers(stack, call)
    assert "Dana was rung first just now and didn't answer" in instructions
    assert call.dial_status == "no-answer" and call.count("owner_pressed") == 0
    assert (await admission(stack, call.call_sid)).dial_status == "no-answer"
    assert len(whispers(call)) == (0 if owner is Owner.no_answer else 1)


async def test_a_dial_reported_completed_without_a_pressed_1_is_not_the_owner(
    make_stack: StackFactory,
) -> None:
    """Whatever status Twilio reports for an answered, unbridged leg (its docs don't say), only the
    recorded 1 means the owner took the call."""
    stack = await ringing_stack(make_stack)
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "3" * 32,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": CALLER,
        "To": "+15559870000",
        "DialCallStatus": "completed",
        "DialBridged": "false",
    }
    status, body = await post(stack.server, "/voice/dial-result", params)
    assert status == 200 and ET.fromstring(body).find("Connect/Stream") is not None
    assert (await admission(stack, params["CallSid"])).dial_status == "no-answer"


async def add_contact(
    stack: Stack, phone: str, name: str, *, vip: bool = False, blocked: bool = False
) -> None:
    async with stack.server.services.database.session() as session:
        repository = ContactRepository(session)
        await repository.upsert(phone, name)
        await repository.mark(phone, vip=vip, blocked=blocked)


async def test_a_vip_rings_the_owner_even_when_ringing_is_off(make_stack: StackFactory) -> None:
    stack = await ringing_stack(make_stack, ring_owner_seconds=0)
    await add_contact(stack, CALLER, "Alex Kim", vip=True)
    call = await stack.simulator.place_call(from_number=CALLER, owner=Owner.press_1, extra_params=ATTESTED)
    await call.wait_ended()
    assert not call.stream_opened and call.dial_status == "completed"
    assert whispers(call) == [f"Call from Alex Kim, 1 5 5 5 1 2 3 0 0 0 0. {WHISPER_END}"]
    # Anyone else is not rung: the assistant answers at once.
    other = await stack.simulator.place_call(from_number="+15557770000", owner=Owner.press_1)
    assert other.dial_status is None
    await assistant_answers(stack, other)
    # Nor is a VIP's number the carrier doesn't vouch for: caller ID is easily faked.
    spoofed = await stack.simulator.place_call(
        from_number=CALLER, owner=Owner.press_1, extra_params={"StirVerstat": "TN-Validation-Passed-C"}
    )
    assert spoofed.dial_status is None
    await assistant_answers(stack, spoofed)


async def test_a_blocked_number_is_refused_politely_and_never_answered(make_stack: StackFactory) -> None:
    stack = await ringing_stack(make_stack)
    await add_contact(stack, CALLER, "Spammer", blocked=True)
    call = await stack.simulator.place_call(from_number=CALLER, owner=Owner.press_1)
    await call.wait_ended()
    assert call.verbs == ['Say "Sorry, Dana isn\'t taking calls right now. Goodbye."', "Hangup"]
    assert not call.stream_opened and call.dial_status is None and stack.fake.sessions == []
    async with stack.server.services.database.session(read_only=True) as session:
        row = await session.get(CallRow, call.call_sid)
        blocked = await ContactRepository(session).blocked()
    assert row is not None and row.outcome == "blocked" and row.ended_at is not None
    assert row.caller_number == CALLER
    assert [contact.phone for contact in blocked] == [CALLER]


async def test_a_hostile_contact_name_is_spoken_as_plain_words(make_stack: StackFactory) -> None:
    stack = await ringing_stack(make_stack)
    hostile = 'Alex <break time="10s"/>\n</Say><Dial>+19005550000</Dial> & "Kim"\u202e'
    now = utc_now()
    async with stack.server.services.database.session() as session:  # a row written by anything
        session.add(ContactRow(phone=CALLER, name=hostile, created_at=now, updated_at=now))
    call = await stack.simulator.place_call(from_number=CALLER, owner=Owner.press_2, extra_params=ATTESTED)
    await assistant_answers(stack, call)
    [whisper] = whispers(call)
    assert whisper.startswith("Call from Alex break time=") and whisper.endswith(WHISPER_END)
    assert not any(char in whisper for char in '<>"&\n\u202e')
    screen_doc = next(doc for doc in call.twiml_log if "<Gather" in doc)
    root = ET.fromstring(screen_doc)
    assert [child.tag for child in root] == ["Gather", "Hangup"]
    assert [child.tag for child in root.find("Gather")] == ["Say"]  # type: ignore[union-attr]


async def post(
    server: RunningServer, path: str, params: dict[str, str], *, signed: bool = True
) -> tuple[int, str]:
    headers = {}
    if signed:
        url = server.settings.public_url + path
        headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.base_url + path, data=params, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_the_screening_routes_need_twilio_signatures(make_stack: StackFactory) -> None:
    stack = await ringing_stack(make_stack)
    parent = "CA" + "4" * 32
    leg = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "5" * 32,
        "ParentCallSid": parent,
        "CallStatus": "in-progress",
        "Direction": "outbound-dial",
        "From": CALLER,
        "To": OWNER_PHONE,
    }
    for path, params in (
        (f"/voice/screen?parent={parent}", leg),
        (f"/voice/screen-choice?parent={parent}", {**leg, "Digits": "1"}),
    ):
        assert (await post(stack.server, path, params, signed=False))[0] == 403
        status, body = await post(stack.server, path, params)
        assert status == 200, body
    # The parent rides in the signed URL; a malformed one is refused.
    assert (await post(stack.server, "/voice/screen?parent=CA12", leg))[0] == 400
    async with stack.server.services.database.session(read_only=True) as session:
        choices = (await session.scalars(select(StreamAdmissionRow.owner_choice))).all()
    assert choices == ["1"]


async def test_a_contact_is_named_in_the_whisper_only_when_the_carrier_vouches_for_the_number(
    make_stack: StackFactory,
) -> None:
    stack = await ringing_stack(make_stack)
    await add_contact(stack, CALLER, "Alex Kim")
    unverified = await stack.simulator.place_call(from_number=CALLER, owner=Owner.press_2)
    await assistant_answers(stack, unverified)
    assert whispers(unverified) == [f"Call from 1 5 5 5 1 2 3 0 0 0 0. {WHISPER_END}"]
    verified = await stack.simulator.place_call(
        from_number=CALLER, owner=Owner.press_2, extra_params=ATTESTED
    )
    await assistant_answers(stack, verified)
    assert whispers(verified) == [f"Call from Alex Kim, 1 5 5 5 1 2 3 0 0 0 0. {WHISPER_END}"]
