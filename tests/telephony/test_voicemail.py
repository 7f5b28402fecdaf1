"""When the assistant can't answer, the caller gets a voicemail within 3 seconds of the stream
starting: over real sockets, with the fake OpenAI refusing, rate-limiting, overloaded, unreachable
or hanging, and the simulated Twilio following `<Record>` and its callbacks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from callassist.simulator.audio import tone
from callassist.simulator.call import SimulatedCall
from callassist.simulator.voicemail import leave_message
from callassist.store.models import OutboxRow, VoicemailRow
from tests.support.server import ACCOUNT_SID
from tests.support.smtp import SmtpTestServer
from tests.support.stack import Stack, StackFactory, stack_factory
from tests.support.twilio_stream import call_sid, issue_token
from tests.telephony.test_webhooks import CALL, post, sign

BUDGET_S = 3.0


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    async with stack_factory(tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer() as server:
        yield server


def emailing(smtp: SmtpTestServer) -> dict[str, object]:
    return {"smtp_url": smtp.url(to="dana@example.com", sender="assistant@example.com")}


async def break_openai(stack: Stack, mode: str) -> None:
    fake = stack.fake
    if mode == "unreachable":
        await fake.stop()  # nothing listens on its port any more: connection refused
    elif mode == "hang":
        fake.hang_new_sessions = True
    elif mode == "401":
        fake.api_key = "sk-someone-else"  # a revoked OPENAI_API_KEY
    else:
        fake.refuse_new_sessions = HTTPStatus(int(mode))


async def voicemail_offered(call: SimulatedCall) -> float:
    """Seconds from the stream's `start` to the TwiML with the `<Record>`."""
    started = await call.wait_for("start_sent", timeout=5)
    offered = await call.wait_for(
        "twiml", predicate=lambda event: "<Record" in event.detail["body"], timeout=10
    )
    return offered.t - started.t


@pytest.mark.parametrize("mode", ["401", "429", "503", "unreachable", "hang"])
async def test_the_caller_gets_the_voicemail_within_3_seconds(make_stack: StackFactory, mode: str) -> None:
    stack = await make_stack(ring_owner_seconds=0)
    await break_openai(stack, mode)
    call = await stack.simulator.place_call()
    elapsed = await voicemail_offered(call)
    assert elapsed < BUDGET_S, f"{mode}: voicemail after {elapsed:.2f}s"
    prompt = next(verb for verb in call.verbs if verb.startswith("Say"))
    assert "Dana can't take your call" in prompt and "after the tone" in prompt
    await call.hang_up()
    if mode == "hang":
        assert stack.fake.hung >= 1
    elif mode in ("429", "503"):
        assert stack.fake.refused >= 1
    stack.fake.validation_failures.clear()  # the 401's "wrong API key" is what this test is about


async def test_a_voicemail_is_recorded_attached_to_the_call_and_sent_to_the_owner(
    make_stack: StackFactory, smtp: SmtpTestServer
) -> None:
    stack = await make_stack(ring_owner_seconds=0, **emailing(smtp))
    await break_openai(stack, "503")
    call = await stack.simulator.place_call(from_number="+15551230000")
    await voicemail_offered(call)
    leave_message(call, tone(1200, 300), finish_key="#", transcript="Hi Dana, it's Alex, call me back.")
    await call.wait_ended(timeout=15)
    assert "record_beep" in [event.kind for event in call.events]
    assert call.verbs[-2:] == ["Say 'Thank you. Your message has been passed on. Goodbye.'", "Hangup"]
    recorded = await call.wait_for("recorded", timeout=1)
    assert not recorded.detail["empty"] and recorded.detail["digits"] == "#"
    assert (await call.wait_for("recording_status", timeout=5)).detail["status"] == 204
    assert (await call.wait_for("transcription", timeout=5)).detail["status"] == 204
    assert [w for w in call.warnings if "wss://" not in w] == [] and call.violations == []  # ws:// is local

    async with stack.server.services.database.session(read_only=True) as session:
        row = await session.get(VoicemailRow, call.call_sid)
        assert row is not None
        assert row.recording_sid == recorded.detail["sid"] and row.recording_url == recorded.detail["url"]
        assert row.duration_s == 1 and row.finished_on_key == "#"
        assert row.recording_status == "completed" and row.transcription_status == "completed"
        assert row.transcription == "Hi Dana, it's Alex, call me back."
        assert row.caller_number == "+15551230000"
    mails = await smtp.wait_for_mail(2, within_s=10)  # the "assistant is down" notice, the voicemail
    voicemail = [mail for mail in mails if mail.subject.startswith("Voicemail")]
    assert len(voicemail) == 1 and voicemail[0].subject == "Voicemail from +15551230000"
    assert "Hi Dana, it's Alex, call me back." in voicemail[0].text
    assert recorded.detail["url"] in voicemail[0].text
    async with stack.server.services.database.session(read_only=True) as session:
        keys = (await session.scalars(select(OutboxRow.dedupe_key))).all()
    assert keys.count(f"{call.call_sid}:voicemail:email") == 1
    # The owner reads it with the call (the API answers loopback clients when no admin token is set).
    url = f"{stack.server.base_url}/api/calls/{call.call_sid}"
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        detail = await answer.json()
    assert detail["voicemail"]["duration_s"] == 1
    assert detail["voicemail"]["transcription"] == "Hi Dana, it's Alex, call me back."


async def test_a_caller_who_says_nothing_hears_goodbye_and_nothing_is_kept(make_stack: StackFactory) -> None:
    stack = await make_stack(ring_owner_seconds=0)
    await break_openai(stack, "503")
    call = await stack.simulator.place_call()
    await voicemail_offered(call)
    began = time.monotonic()
    await call.wait_ended(timeout=15)  # <Record timeout="5">: five seconds of silence end it
    assert time.monotonic() - began >= 4.5
    # An empty recording makes no action request: the verbs after <Record> run.
    assert call.verbs[-2:] == ["Say 'No message was recorded. Goodbye.'", "Hangup"]
    assert (await call.wait_for("recording_status", timeout=5)).detail["form"]["RecordingStatus"] == "absent"
    assert call.count("transcription") == 0


async def test_healthz_reports_openai_degraded_and_the_owner_is_told_once_down_and_once_back(
    make_stack: StackFactory, smtp: SmtpTestServer
) -> None:
    stack = await make_stack(ring_owner_seconds=0, **emailing(smtp))
    await break_openai(stack, "503")
    for _ in range(2):  # two failed calls: one "down" notice
        call = await stack.simulator.place_call()
        await voicemail_offered(call)
        await call.hang_up()
        await stack.server.services.registry.wait_idle(10)
    async with aiohttp.ClientSession() as http, http.get(stack.server.base_url + "/healthz") as response:
        assert response.status == 200
        assert (await response.json())["openai"] == "degraded"
    stack.fake.refuse_new_sessions = None
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)  # the assistant greets again
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    async with aiohttp.ClientSession() as http, http.get(stack.server.base_url + "/healthz") as response:
        body = await response.json()
    assert body["status"] == "ok" and body["openai"] == "ok"
    mails = await smtp.wait_for_mail(2, within_s=10)
    subjects = sorted(mail.subject for mail in mails)
    assert subjects == ["callassist: the assistant is back", "callassist: the assistant is down"]


async def test_recording_callbacks_must_be_signed_and_well_formed(make_stack: StackFactory) -> None:
    stack = await make_stack(ring_owner_seconds=0)
    server = stack.server
    status_form = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL["CallSid"],
        "RecordingSid": "RE" + "a" * 32,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE{'a' * 32}",
        "RecordingStatus": "completed",
        "RecordingDuration": "7",
    }
    path = "/voice/voicemail/recording-status"
    assert (await post(server, path, status_form, None))[0] == 403
    assert (await post(server, path, status_form, sign(server, path, status_form)))[0] == 204
    for key, bad in (
        ("RecordingSid", "RE123"),
        ("RecordingUrl", "https://evil.example/x"),
        ("RecordingStatus", "x"),
    ):
        form = {**status_form, key: bad}
        assert (await post(server, path, form, sign(server, path, form)))[0] == 400, key
    action = {
        **CALL,
        "RecordingSid": status_form["RecordingSid"],
        "RecordingUrl": status_form["RecordingUrl"],
    }
    action["RecordingDuration"] = "7"
    path = "/voice/voicemail/recorded"
    assert (await post(server, path, action, None))[0] == 403
    status, body = await post(server, path, action, sign(server, path, action))
    assert status == 200 and "<Hangup" in body
    path = "/voice/voicemail/transcription"
    transcription = {**action, "TranscriptionStatus": "completed", "TranscriptionText": "Hello"}
    transcription["TranscriptionSid"] = "TR" + "b" * 32
    assert (await post(server, path, transcription, None))[0] == 403
    assert (await post(server, path, transcription, sign(server, path, transcription)))[0] == 204
    async with server.services.database.session(read_only=True) as session:
        row = await session.get(VoicemailRow, CALL["CallSid"])
    assert row is not None and row.duration_s == 7 and row.transcription == "Hello"
    # A call whose assistant did not fail is simply hung up on when its stream ends.
    path = "/voice/stream-ended"
    status, body = await post(server, path, CALL, sign(server, path, CALL))
    assert status == 200 and "<Record" not in body and "<Hangup" in body


async def test_a_stream_that_never_became_a_call_still_gets_the_voicemail(make_stack: StackFactory) -> None:
    """Refused before `start` (the pool full, a restart, the store down at the handshake) or never
    started: Twilio asks what next all the same, and the caller is owed a chance to leave a message."""
    stack = await make_stack(ring_owner_seconds=0)
    sid = call_sid(0x51)
    await issue_token(stack.server, sid, "+15551230000")  # our webhook connected it to a stream
    form = {**CALL, "CallSid": sid}
    path = "/voice/stream-ended"
    status, body = await post(stack.server, path, form, sign(stack.server, path, form))
    assert status == 200 and "<Record" in body
