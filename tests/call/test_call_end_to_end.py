"""A call end to end: simulated Twilio <-> callassist <-> fake OpenAI, all over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callassist.simulator.audio import speak, tone
from tests.fakes.realtime_server import FakeSession, Reply, Say, Script, UseTool
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN
from tests.support.stack import Stack, StackFactory, heard_chunks, talk_over, without_clock

CALLER_QUESTION = "Hi, can you add a meeting tomorrow at 2pm?"


def noise(ms: int, seed: int) -> bytes:
    """Distinct, deterministic 'audio': any reordering, loss or duplication shows up byte for byte."""
    return random.Random(seed).randbytes(ms * 8)


def audio_out_of(session: FakeSession, item_id: str) -> bytes:
    return bytes(session.audio_out[item_id])


def response_item_ids(session: FakeSession) -> list[str]:
    """Assistant message item ids, in the order their audio was sent."""
    seen: list[str] = []
    for item_id, _ in session.audio_out_order:
        if item_id not in seen:
            seen.append(item_id)
    return seen


async def test_greeting_first_then_audio_passes_byte_exact_both_ways(make_stack: StackFactory) -> None:
    greeting, answer = noise(1200, 1), noise(1500, 2)
    script = Script(
        replies=[
            Reply([Say("Hello, Dana's assistant.", audio=greeting)]),
            Reply([Say("Sure.", audio=answer)]),
        ],
        transcripts=[CALLER_QUESTION],
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    # The assistant spoke first, before the caller said anything.
    assert bytes(call.audio_received) == greeting
    session = stack.fake.sessions[0]
    assert session.responses[0]["output"][0]["role"] == "assistant"
    assert not [e for e in session.client_events if e.type == "conversation.item.create"]

    said_at = time.monotonic()
    await call.say(speak(CALLER_QUESTION))
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=said_at)
    await call.hang_up()
    await stack.fake.wait_until(lambda: session.closed, timeout=3)

    # Caller audio reached OpenAI byte for byte, in order (silence frames included).
    assert bytes(session.audio_in) == bytes(call.audio_sent)
    # Assistant audio reached the caller byte for byte, in order, and all of it was heard.
    assert bytes(call.audio_received) == greeting + answer
    assert bytes(call.audio_heard) == greeting + answer
    assert call.violations == []
    assert call.count("clear_in") == 0
    # One mark per chunk, each echoed.
    assert call.count("mark_in") == call.count("media_in") > 0

    # The session was configured for Twilio in the GA shape, no beta header, model in the URL.
    config = session.session_config
    assert config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert config["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert config["audio"]["output"]["voice"] == "marin"
    assert config["audio"]["input"]["transcription"]["model"] == "gpt-transcribe"
    assert "Dana" in config["instructions"]
    assert session.model == "gpt-realtime-2.1"
    assert "openai-beta" not in {k.lower() for k in session.headers}
    assert session.errors_sent == []


def speech_started_after(session: FakeSession, t: float) -> Any:
    """The fake's first speech_started after `t` (when the caller began talking over the answer)."""
    return next(e for e in session.server_events if e.type == "input_audio_buffer.speech_started" and e.t > t)


def assert_heard_position(truncated_ms: float, heard_ms: float, *, in_flight_s: float) -> None:
    """The truncate says what the caller had heard when callassist stopped the playback, against
    what the simulated Twilio had played when the `clear` reached it (less what played while the
    `clear` was on its way). Never more than 20 ms over: the model must not count as heard what
    wasn't. Up to 40 ms under: the heard position is reckoned from the last mark echo, which the
    server reads up to an event-loop turn late when the machine is loaded (seen: 22 ms on CI), and
    an answer cut a few words early is repeated, not lost."""
    in_flight_ms = 1000 * in_flight_s
    figures = (truncated_ms, heard_ms, in_flight_ms)
    assert heard_ms - in_flight_ms - 40 <= truncated_ms <= heard_ms + 20, figures


async def test_barge_in_after_generation_clears_and_truncates_to_what_was_heard(
    make_stack: StackFactory,
) -> None:
    greeting, long_answer, second = noise(600, 3), noise(6000, 4), noise(800, 5)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Long", audio=long_answer)]),
            Reply([Say("Ok", audio=second)]),
        ],
        transcripts=["first question", "stop, listen"],
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    asked = time.monotonic()
    await call.say(tone(900, 300))
    answer_started = await call.wait_for("media_in", after=asked, timeout=10)
    # Let ~1.5 s of the answer play (15 chunks of 100 ms echoed), then talk over it.
    await heard_chunks(call, answer_started.t, 15)
    session = stack.fake.sessions[0]
    answer_item = response_item_ids(session)[1]
    # By now the whole answer was generated (8x real time): only the call can stop it.
    assert session.active_response_id is None
    cleared = await talk_over(call, answer_started.t, tone(700, 350))

    started = speech_started_after(session, answer_started.t)
    assert cleared.t - started.t < 0.050, (
        f"clear {1000 * (cleared.t - started.t):.1f} ms after speech_started"
    )

    [truncation] = session.truncations
    assert truncation["item_id"] == answer_item
    heard_ms = (cleared.detail["heard_bytes"] - len(greeting)) / 8
    assert_heard_position(truncation["audio_end_ms"], heard_ms, in_flight_s=cleared.t - started.t)
    assert 1400 <= heard_ms <= 2500

    # The next answer is heard, and nothing of the interrupted one arrived after the clear.
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=cleared.t)
    received_at_clear = cleared.detail["heard_bytes"] + cleared.detail["dropped_bytes"]
    assert bytes(call.audio_received[received_at_clear:]) == second
    heard = bytes(call.audio_heard)
    assert heard.startswith(greeting) and heard.endswith(second)
    heard_of_answer = heard[len(greeting) : len(heard) - len(second)]
    assert long_answer.startswith(heard_of_answer) and len(heard_of_answer) == cleared.detail[
        "heard_bytes"
    ] - len(greeting)
    assert session.errors_sent == []
    assert not [e for e in session.client_events if e.type == "response.cancel"]
    await call.hang_up()


async def test_barge_in_while_generating_drops_late_audio(make_stack: StackFactory) -> None:
    greeting, answer, second = noise(400, 6), noise(5000, 7), noise(600, 8)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Long", audio=answer)]),
            Reply([Say("Ok", audio=second)]),
        ],
    )
    # Real-time generation: the response is still active when the caller talks over it.
    stack = await make_stack(script, fake_options={"speed": 1.0})
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    asked = time.monotonic()
    await call.say(tone(900, 300))
    answer_started = await call.wait_for("media_in", after=asked, timeout=10)
    await heard_chunks(call, answer_started.t, 8)
    session = stack.fake.sessions[0]
    assert session.active_response_id is not None
    cleared = await talk_over(call, answer_started.t, tone(700, 350))
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=cleared.t)

    cancelled = [r for r in session.responses if r["status"] == "cancelled"]
    assert cancelled and cancelled[0]["status_details"]["reason"] == "turn_detected"
    [truncation] = session.truncations
    heard_ms = (cleared.detail["heard_bytes"] - len(greeting)) / 8
    started = speech_started_after(session, answer_started.t)
    assert_heard_position(truncation["audio_end_ms"], heard_ms, in_flight_s=cleared.t - started.t)
    received_at_clear = cleared.detail["heard_bytes"] + cleared.detail["dropped_bytes"]
    assert bytes(call.audio_received[received_at_clear:]) == second
    assert session.errors_sent == []
    await call.hang_up()


async def test_recoverable_errors_and_unknown_events_do_not_end_the_call(make_stack: StackFactory) -> None:
    greeting, answer = noise(400, 9), noise(600, 10)
    stack = await make_stack(
        Script(replies=[Reply([Say("Hi", audio=greeting)]), Reply([Say("Ok", audio=answer)])])
    )
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    session = stack.fake.sessions[0]
    await session.send_error("response_cancel_not_active", "Cancellation failed: no active response found")
    await session.send_error(
        "conversation_already_has_active_response",
        "Conversation already has an active response in progress: resp_x.",
    )
    await session.send_error("rate_limit_exceeded", "Rate limit reached.", type="rate_limit_error")
    await session.send_error("server_error", "The server had an error.", type="server_error")
    await session.send_raw(json.dumps({"type": "future.event", "event_id": "e1", "surprise": True}))
    await session.send_raw("this is not json")
    await session.send_raw(json.dumps({"type": "response.output_audio.delta"}))  # fields missing
    asked = time.monotonic()
    await call.say(tone(800, 300))
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=asked)
    assert bytes(call.audio_received) == greeting + answer
    assert len(stack.fake.sessions) == 1 and not session.closed
    await call.hang_up()


@pytest.mark.parametrize("close_code", [1001, 1011])
async def test_openai_drop_mid_call_is_reconnected_and_the_next_turn_answered(
    make_stack: StackFactory, close_code: int
) -> None:
    greeting, answer = noise(400, 11), noise(700, 12)
    stack = await make_stack(
        Script(replies=[Reply([Say("Hi", audio=greeting)]), Reply([Say("Back", audio=answer)])])
    )
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    first = stack.fake.sessions[0]
    dropped = time.monotonic()
    await first.close(code=close_code, reason="Your session hit the maximum duration of 60 minutes.")
    second = await stack.fake.wait_for_session(1, timeout=5)
    update = await second.wait_for_client_event("session.update", timeout=5)
    assert time.monotonic() - dropped < 2.0
    # Same configuration again, and no second greeting.
    # Same configuration again (only the clock in the instructions moves on).
    assert without_clock(update["session"]) == without_clock(first.client_events[0].event["session"])
    asked = time.monotonic()
    await call.say(tone(800, 300))
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=asked)
    assert bytes(call.audio_received) == greeting + answer
    assert [r["output"][0].get("type") for r in second.responses] == ["message"]
    assert len(second.responses) == 1
    # Caller audio kept flowing to the new session.
    assert len(second.audio_in) > 0
    await call.hang_up()


async def test_twilio_stop_closes_openai_within_a_second(make_stack: StackFactory) -> None:
    stack = await make_stack(Script(replies=[Reply([Say("Hi", audio=noise(300, 13))])]))
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=100, timeout=10)
    session = stack.fake.sessions[0]
    await call.hang_up()
    stop = await call.wait_for("stop_sent", timeout=1)
    await stack.fake.wait_until(lambda: session.closed, timeout=2)
    assert time.monotonic() - stop.t < 1.0
    assert session.close_code == 1000


async def test_logs_show_neither_the_callers_number_nor_the_keys_they_press(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_stack(Script(replies=[Reply([Say("Hi", audio=noise(300, 14))])]))
    caplog.set_level(logging.DEBUG, logger="callassist")
    call = await stack.simulator.place_call(from_number="+15557654321")
    await call.wait_until_quiet(quiet_ms=100, timeout=10)
    for digit in "4711":
        await call.send_dtmf(digit)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "call ended" in text and "caller pressed a key" in text
    assert "…4321" in text  # enough to tell calls apart
    assert "7654321" not in text and "4711" not in text and "pressed 4" not in text


async def test_unsigned_stream_is_refused_before_any_openai_connection(make_stack: StackFactory) -> None:
    stack = await make_stack()
    url = stack.server.settings.stream_url()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 403
    wrong = RequestValidator("not-the-token").compute_signature(url, {})
    with pytest.raises(InvalidStatus):
        async with connect(url, additional_headers={"X-Twilio-Signature": wrong}):
            pass
    assert stack.fake.sessions == []


async def twilio_stream_by_hand(stack: Stack, call_sid: str) -> tuple[str, dict[str, str]]:
    """Do the webhook like Twilio and return the Stream URL and its parameters."""
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15551230000",
        "To": "+15559870000",
    }
    url = stack.server.settings.public_url + "/voice/incoming"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as response,
    ):
        stream = ET.fromstring(await response.text()).find("Connect/Stream")
    assert stream is not None
    return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


def start_message(call_sid: str, parameters: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": "MZ" + "5" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            },
            "streamSid": "MZ" + "5" * 32,
        }
    )


async def test_stream_without_a_valid_call_token_never_configures_openai(make_stack: StackFactory) -> None:
    stack = await make_stack()
    url, parameters = await twilio_stream_by_hand(stack, "CA" + "7" * 32)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    for forged in (
        {**parameters, "token": "1.forged"},
        {k: v for k, v in parameters.items() if k != "token"},
    ):
        async with connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(start_message("CA" + "7" * 32, forged))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert all(session.client_events == [] for session in stack.fake.sessions)


async def test_malformed_frames_are_survived(make_stack: StackFactory) -> None:
    greeting, answer = noise(300, 14), noise(500, 15)
    stack = await make_stack(
        Script(replies=[Reply([Say("Hi", audio=greeting)]), Reply([Say("Ok", audio=answer)])])
    )
    call_sid = "CA" + "8" * 32
    url, parameters = await twilio_stream_by_hand(stack, call_sid)
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    stream_sid = "MZ" + "5" * 32

    async def receive_audio(ws: ClientConnection, size: int) -> bytes:
        received = b""
        while len(received) < size:
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if message["event"] == "media":
                received += base64.b64decode(message["media"]["payload"])
        return received

    async with connect(url, additional_headers={"X-Twilio-Signature": signature}, max_size=None) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(start_message(call_sid, parameters))
        for garbage in (
            "not json at all",
            b"\x00\x01binary frame",
            "[1, 2, 3]",
            json.dumps({"event": "media", "media": {"payload": "%%% not base64 %%%"}}),
            json.dumps({"event": "media", "media": {"payload": 12}}),
            json.dumps({"event": "teleport", "streamSid": stream_sid}),
            json.dumps({"event": "mark", "mark": {"name": "never-sent"}}),
            json.dumps({"event": "media", "media": {"payload": "A" * 300_000}}),  # oversized
            "{" * 50_000,
        ):
            await ws.send(garbage)
        assert await receive_audio(ws, len(greeting)) == greeting
        # Then a real caller turn: speech frames at real-time pace.
        speech = tone(800, 300) + bytes([0xFF]) * 8000
        for index in range(0, len(speech), 160):
            media = {
                "track": "inbound",
                "chunk": str(1 + index // 160),
                "timestamp": str(index // 8),
                "payload": base64.b64encode(speech[index : index + 160]).decode(),
            }
            await ws.send(
                json.dumps(
                    {
                        "event": "media",
                        "sequenceNumber": str(2 + index // 160),
                        "media": media,
                        "streamSid": stream_sid,
                    }
                )
            )
            await asyncio.sleep(0.02)  # the caller's real-time pace, not a wait for a condition
        assert await receive_audio(ws, len(answer)) == answer
        await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid, "stop": {"callSid": call_sid}}))
    session = stack.fake.sessions[0]
    assert [r["status"] for r in session.responses] == ["completed", "completed"]


async def test_twenty_simultaneous_calls(make_stack: StackFactory) -> None:
    greeting, answer = noise(500, 16), noise(500, 17)
    stack = await make_stack(
        lambda: Script(replies=[Reply([Say("Hi", audio=greeting)]), Reply([Say("Ok", audio=answer)])])
    )

    async def one_call(index: int) -> bytes:
        call = await stack.simulator.place_call(from_number=f"+1555000{index:04d}")
        await call.wait_until_quiet(quiet_ms=200, timeout=20)
        asked = time.monotonic()
        await call.say(tone(700, 300 + index))
        await call.wait_until_quiet(quiet_ms=200, timeout=20, after=asked)
        await call.hang_up()
        assert call.violations == []
        return bytes(call.audio_received)

    results = await asyncio.gather(*(one_call(i) for i in range(20)))
    assert results == [greeting + answer] * 20
    assert len(stack.fake.sessions) == 20
    await stack.fake.wait_until(lambda: all(s.closed for s in stack.fake.sessions), timeout=5)


async def test_barge_in_after_a_reconnect_clears_but_does_not_truncate_the_old_sessions_item(
    make_stack: StackFactory,
) -> None:
    greeting, long_answer, second = noise(400, 18), noise(5000, 19), noise(500, 20)
    stack = await make_stack(
        Script(
            replies=[
                Reply([Say("Hi", audio=greeting)]),
                Reply([Say("Long", audio=long_answer)]),
                Reply([Say("Ok", audio=second)]),
            ]
        )
    )
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    asked = time.monotonic()
    await call.say(tone(900, 300))
    answer_started = await call.wait_for("media_in", after=asked, timeout=10)
    first = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: first.active_response_id is None, timeout=5)
    await first.close(code=1001)
    second_session = await stack.fake.wait_for_session(1)
    await second_session.wait_for_client_event("session.update")
    # The old answer is still playing at Twilio; the caller talks over it.
    cleared = await talk_over(call, answer_started.t, tone(700, 350))
    await call.wait_until_quiet(quiet_ms=200, timeout=10, after=cleared.t)
    received_at_clear = cleared.detail["heard_bytes"] + cleared.detail["dropped_bytes"]
    assert bytes(call.audio_received[received_at_clear:]) == second
    assert first.truncations == [] and second_session.truncations == []
    assert first.errors_sent == [] and second_session.errors_sent == []
    await call.hang_up()


async def test_the_assistant_hangs_up_after_its_goodbye_is_heard(make_stack: StackFactory) -> None:
    greeting, goodbye = noise(300, 21), noise(1200, 22)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Goodbye!", audio=goodbye), UseTool("end_call", intent={"reason": "caller is done"})]),
        ]
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await call.say(tone(800, 300))
    await call.wait_closed(timeout=15)
    # The whole goodbye was heard, then the server closed the stream normally (Twilio: <Hangup/>).
    assert bytes(call.audio_heard) == greeting + goodbye
    assert call.close_code == 1000
    await call.wait_ended(timeout=5)  # Twilio asks /voice/stream-ended, which says <Hangup/>
    assert call.verbs[-1] == "Hangup"
    session = stack.fake.sessions[0]
    requests = [
        e.event
        for e in session.client_events
        if e.type == "response.create" and e.event["response"].get("conversation") != "none"
    ]
    assert len(requests) == 1  # the greeting only: no reply after the goodbye (the summary is apart)
    await stack.server.services.registry.wait_idle(10)


async def test_a_call_ends_politely_at_the_time_limit(make_stack: StackFactory) -> None:
    greeting, goodbye = noise(300, 23), noise(800, 24)
    script = Script(
        replies=[Reply([Say("Hi", audio=greeting)]), Reply([Say("Time is up, goodbye.", audio=goodbye)])]
    )
    stack = await make_stack(script, max_call_minutes=0.05)  # three seconds
    call = await stack.simulator.place_call()
    await call.wait_closed(timeout=15)
    assert bytes(call.audio_heard) == greeting + goodbye
    session = stack.fake.sessions[0]
    # The goodbye keeps the session's instructions (persona, language, privacy rules, the date):
    # `response.instructions` would replace them, so the reason comes as a system item before a plain
    # response.create (SDK docstrings of ResponseCreateEvent and RealtimeResponseCreateParams.instructions).
    events = [e.event for e in session.client_events if e.type != "input_audio_buffer.append"]
    last_request = max(i for i, e in enumerate(events) if e["type"] == "response.create")
    assert "instructions" not in events[last_request]["response"]
    note = events[last_request - 1]
    assert note["type"] == "conversation.item.create" and note["item"]["role"] == "system"
    assert "time limit" in note["item"]["content"][0]["text"]
    goodbye_response = session.responses[-1]
    assert goodbye_response["status"] == "completed"
    assert "Dana" in session.session_config["instructions"]


async def test_when_openai_refuses_the_caller_hears_an_apology_not_silence(make_stack: StackFactory) -> None:
    # The fake only accepts another key: like a revoked OPENAI_API_KEY (HTTP 401, no retry).
    stack = await make_stack(fake_options={"api_key": "sk-someone-else"})
    call = await stack.simulator.place_call()
    await call.wait_ended(timeout=15)
    assert call.verbs[-1] == "Hangup"
    assert any(verb.startswith("Say") and "can't take your call right now" in verb for verb in call.verbs)
    assert stack.fake.sessions == []
    assert stack.fake.validation_failures == ["handshake: wrong API key"]
    stack.fake.validation_failures.clear()  # expected here: it's what the test is about
