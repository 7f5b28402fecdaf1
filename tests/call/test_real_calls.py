"""What the real Realtime service does that callassist must cope with, over real sockets.

Each test reproduces a defect found by reading callassist against the SDK's docstrings and the
service's documented behaviour; each failed before its fix.
"""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from callassist.call.transcript import UNTRANSCRIBED
from callassist.simulator.audio import tone
from callassist.store.records import CallDetail, get_call
from tests.fakes.realtime_server import CallFunction, FakeSession, Reply, Say, Script, UseTool
from tests.support.stack import Stack, StackFactory, talk_over


def noise(ms: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(ms * 8)


def client_events(session: FakeSession) -> list[dict[str, Any]]:
    return [e.event for e in session.client_events if e.type != "input_audio_buffer.append"]


def system_notes(session: FakeSession) -> list[str]:
    return [
        event["item"]["content"][0]["text"]
        for event in client_events(session)
        if event["type"] == "conversation.item.create" and event["item"].get("role") == "system"
    ]


def spoken_requests(session: FakeSession) -> list[Any]:
    """Our response.create events for the spoken conversation (not the out-of-band summary)."""
    return [
        e
        for e in session.client_events
        if e.type == "response.create" and e.event.get("response", {}).get("conversation") != "none"
    ]


async def test_a_caller_who_talks_over_the_goodbye_keeps_the_line(make_stack: StackFactory) -> None:
    greeting, goodbye, answer = noise(300, 1), noise(2500, 2), noise(400, 3)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Goodbye, have a nice day!", audio=goodbye), CallFunction("end_call", {})]),
            Reply([Say("Of course, what else?", audio=answer)]),
        ]
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    said = time.monotonic()
    await call.say(tone(600, 300))
    # The goodbye is playing and end_call has run: "oh wait, one more thing".
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: len(session.function_outputs) == 1, timeout=10)
    await talk_over(call, said, tone(700, 350))
    await stack.fake.wait_until(lambda: len(session.responses) >= 3, timeout=10)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)
    assert call.live, "the line was closed although the caller spoke over the goodbye"
    assert bytes(call.audio_heard).endswith(answer)
    assert any("not over" in note for note in system_notes(session))
    await call.hang_up()
    assert call.stream_closed_by == "caller"


async def test_no_response_is_started_while_the_caller_speaks(make_stack: StackFactory) -> None:
    # The minute's warning falls due (3 s in) while the caller is talking: it joins the conversation
    # and the VAD's own response to the caller answers both; nothing is said over the caller.
    greeting, answer = noise(300, 4), noise(500, 5)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Sure; we must wrap up soon.", audio=answer)]),
        ]
    )
    stack = await make_stack(script, max_call_minutes=1.05)  # the warning comes at 3 s
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    session = stack.fake.sessions[0]
    await call.say(tone(4500, 300))

    def answered_after_speech() -> bool:
        stops = [e.t for e in session.server_events if e.type == "input_audio_buffer.speech_stopped"]
        return bool(stops) and any(r["status"] == "completed" for r in session.responses[1:])

    await stack.fake.wait_until(answered_after_speech, timeout=10)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)

    started = next(e.t for e in session.server_events if e.type == "input_audio_buffer.speech_started")
    stopped = next(e.t for e in session.server_events if e.type == "input_audio_buffer.speech_stopped")
    during = [e for e in spoken_requests(session) if started <= e.t <= stopped]
    assert during == [], "a response.create was sent while the caller was speaking"
    assert any("wrap up" in note for note in system_notes(session))
    assert len(session.responses) == 2  # the greeting, and one answer after the caller's speech
    assert bytes(call.audio_heard) == greeting + answer
    await call.hang_up()


async def test_the_line_closes_right_after_the_goodbye_before_the_summary(make_stack: StackFactory) -> None:
    greeting, goodbye = noise(300, 6), noise(800, 7)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply([Say("Goodbye!", audio=goodbye), CallFunction("end_call", {"reason": "done"})]),
        ],
        transcripts=["That's all, thanks."],
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await call.say(tone(600, 300))
    await call.wait_closed(timeout=15)
    closed = next(e for e in call.events if e.kind == "stream_closed")
    assert closed.detail["by"] == "server"
    assert bytes(call.audio_heard) == greeting + goodbye
    await stack.server.services.registry.wait_idle(10)
    session = stack.fake.sessions[0]
    summary = next(
        e
        for e in session.client_events
        if e.type == "response.create" and e.event["response"].get("conversation") == "none"
    )
    summary_done = next(
        e.t
        for e in session.server_events
        if e.type == "response.done"
        and (e.event["response"]["metadata"] or {}).get("callassist") == "summary"
    )
    # No dead air: the caller's line was closed before the summary was made.
    assert closed.t < summary_done
    # The summary is text, for the owner: it must not book, message or hang up anything.
    assert summary.event["response"]["tool_choice"] == "none"
    assert "instructions" in summary.event["response"]
    assert json.loads(session.function_outputs[0][1]) == {"ok": True, "ending": True}


def function_call_added(session: FakeSession) -> bool:
    return any(
        e.type == "response.output_item.added" and e.event["item"]["type"] == "function_call"
        for e in session.server_events
    )


async def test_a_call_cut_short_by_the_caller_never_runs(make_stack: StackFactory) -> None:
    # The caller speaks while the model is still writing end_call's arguments: the service sends
    # arguments.done with what it had (here nothing) and the item comes back incomplete.
    greeting, goodbye, answer = noise(300, 8), noise(300, 9), noise(400, 10)
    script = Script(
        replies=[
            Reply([Say("Hi", audio=greeting)]),
            Reply(
                [
                    Say("Goodbye!", audio=goodbye),
                    UseTool("end_call", {"reason": "caller is done"}, delta_s=30),
                ]
            ),
            Reply([Say("Yes, of course.", audio=answer)]),
        ]
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await call.say(tone(600, 300))
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: function_call_added(session), timeout=10)
    await call.say(tone(700, 350))  # "oh wait"
    await stack.fake.wait_until(lambda: len(session.responses) >= 3, timeout=10)
    await call.wait_until_quiet(quiet_ms=300, timeout=10)

    interrupted = session.responses[1]
    assert interrupted["status"] == "cancelled"
    [call_item] = [item for item in interrupted["output"] if item["type"] == "function_call"]
    assert call_item["status"] == "incomplete" and call_item["arguments"] == ""
    assert session.function_outputs == []  # end_call never ran
    assert call.live and bytes(call.audio_heard).endswith(answer)
    await call.hang_up()


async def test_an_interrupted_booking_books_nothing(make_stack: StackFactory) -> None:
    intent = {"title": "Call with Alex Kim", "start": "tomorrow 14:00", "caller_name": "Alex Kim"}
    script = Script(
        replies=[
            Reply([Say("Hi", audio=noise(300, 11))]),
            Reply([Say("Booking it.", audio=noise(300, 12)), UseTool("create_event", intent, delta_s=0.4)]),
            Reply([Say("Sorry, go ahead.", audio=noise(400, 13))]),
        ]
    )
    stack = await make_stack(script, timezone="America/New_York", working_hours="Mon-Sun 09:00-17:00")
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await call.say(tone(600, 300))
    session = stack.fake.sessions[0]

    def arguments_streaming() -> bool:
        return any(e.type == "response.function_call_arguments.delta" for e in session.server_events)

    await stack.fake.wait_until(arguments_streaming, timeout=10)
    await call.say(tone(700, 350))
    await stack.fake.wait_until(lambda: len(session.responses) >= 3, timeout=10)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    [done] = [e.event for e in session.server_events if e.type == "response.function_call_arguments.done"]
    assert done["arguments"] and not done["arguments"].endswith("}")  # partial JSON
    assert session.function_outputs == []
    events = await stack.server.services.calendar.events_between(
        datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=3)
    )
    assert events == []


async def call_detail(stack: Stack, call_sid: str) -> CallDetail:
    async with stack.server.services.database.session(read_only=True) as session:
        detail = await get_call(session, call_sid)
    assert detail is not None
    return detail


async def record_turns(stack: Stack, call_sid: str) -> list[tuple[str, str]]:
    return [(turn.role, turn.text) for turn in (await call_detail(stack, call_sid)).transcript]


async def test_a_late_transcript_keeps_its_place_and_the_call_still_gets_a_summary(
    make_stack: StackFactory,
) -> None:
    # Transcription runs asynchronously: the caller's words come after the answer they triggered,
    # and here after the caller hung up.
    script = Script(
        replies=[
            Reply([Say("Hello.", audio=noise(300, 14))]),
            Reply([Say("Noted, goodbye.", audio=noise(300, 15))]),
        ],
        transcripts=["Please tell Dana I called."],
        transcript_delay_s=2.0,
        summary=json.dumps({"summary": "The caller asked to tell Dana they called.", "urgency": "low"}),
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    said = time.monotonic()
    await call.say(tone(700, 300))
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: len(session.responses) >= 2, timeout=10)
    await call.wait_until_quiet(quiet_ms=50, timeout=10, after=said)  # the answer was heard
    assert not any(
        e.type == "conversation.item.input_audio_transcription.completed" for e in session.server_events
    )
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    assert await record_turns(stack, call.call_sid) == [
        ("assistant", "Hello."),
        ("caller", "Please tell Dana I called."),
        ("assistant", "Noted, goodbye."),
    ]
    detail = await call_detail(stack, call.call_sid)
    assert detail.call.summary == "The caller asked to tell Dana they called."


async def test_a_turn_the_dropped_session_never_transcribed_is_answered_by_the_new_one(
    make_stack: StackFactory,
) -> None:
    speech = tone(900, 300)
    script = Script(
        replies=[Reply([Say("Hello.", audio=noise(300, 16))])],
        default_reply=Reply([Say("Sorry, could you say that again?", audio=noise(500, 17))]),
        transcript_delay_s=5.0,
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    first = stack.fake.sessions[0]

    def caller_turn_committed() -> bool:
        return any(e.type == "input_audio_buffer.committed" for e in first.server_events)

    said = time.monotonic()
    await call.say(speech)
    await stack.fake.wait_until(caller_turn_committed, timeout=10)
    # The service goes away before it transcribed the caller (and before it answered).
    await first.close(code=1011, reason="internal error")
    second = await stack.fake.wait_for_session(1, timeout=5)
    await stack.fake.wait_until(lambda: len(second.responses) >= 1, timeout=10)
    await call.wait_until_quiet(quiet_ms=300, timeout=10, after=said)

    given = [
        e.event["item"]
        for e in second.client_events
        if e.type == "conversation.item.create" and e.event["item"]["role"] == "user"
    ]
    [lost_turn] = [item for item in given if item["content"][0]["type"] == "input_audio"]
    resent = base64.b64decode(lost_turn["content"][0]["audio"])
    assert speech in resent  # the caller's words, byte for byte
    assert any(e.type == "response.create" for e in second.client_events)
    assert bytes(call.audio_heard).endswith(noise(500, 17))
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    turns = await record_turns(stack, call.call_sid)
    assert turns[:2] == [("assistant", "Hello."), ("caller", UNTRANSCRIBED)]


async def test_a_text_only_answer_after_a_replay_is_asked_again_as_speech(make_stack: StackFactory) -> None:
    script = Script(
        replies=[
            Reply([Say("Hello.", audio=noise(300, 18))]),
            Reply([Say("Tuesday at ten works.", audio=noise(400, 19))]),
            Reply([Say("Yes, Tuesday at ten.", audio=noise(400, 20))]),
            Reply([Say("Yes, Tuesday at ten.", audio=noise(400, 21))]),
        ],
        transcripts=["Can we meet Tuesday?", "So we agreed on Tuesday?"],
        text_only_after_replay=1,
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    first = stack.fake.sessions[0]
    await call.say(tone(700, 300))
    await stack.fake.wait_until(lambda: len(first.responses) >= 2, timeout=10)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await first.close(code=1001, reason="Your session hit the maximum duration of 60 minutes.")
    second = await stack.fake.wait_for_session(1, timeout=5)
    await second.wait_for_client_event("session.update", timeout=3)
    said = time.monotonic()
    await call.say(tone(700, 300))
    # The model answers in text only (nothing to hear), is asked once to say it, and says it.
    await stack.fake.wait_until(lambda: len(second.responses) >= 2, timeout=10)
    await call.wait_until_quiet(quiet_ms=300, timeout=10, after=said)
    text_only, spoken = second.responses[0], second.responses[1]
    assert text_only["output"][0]["content"][0]["type"] == "output_text"
    assert spoken["output"][0]["content"][0]["type"] == "output_audio"
    assert any("out loud" in note for note in system_notes(second))
    assert bytes(call.audio_heard).endswith(noise(400, 21))
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    turns = await record_turns(stack, call.call_sid)
    # The text-only answer is kept in the record, not dropped.
    assert ("assistant", "Yes, Tuesday at ten.") in turns


async def test_a_turn_answered_before_the_drop_is_replayed_in_its_place_and_not_answered_again(
    make_stack: StackFactory,
) -> None:
    speech = tone(800, 300)
    answer = noise(400, 22)
    script = Script(
        replies=[
            Reply([Say("Hello.", audio=noise(300, 23))]),
            Reply([Say("Tuesday at ten works.", audio=answer)]),
        ],
        transcript_delay_s=5.0,
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    first = stack.fake.sessions[0]
    said = time.monotonic()
    await call.say(speech)
    await stack.fake.wait_until(lambda: len(first.responses) >= 2, timeout=10)
    await call.wait_until_quiet(quiet_ms=100, timeout=10, after=said)
    # Answered, but not transcribed yet when the session goes away.
    await first.close(code=1011, reason="internal error")
    second = await stack.fake.wait_for_session(1, timeout=5)
    await second.wait_for_client_event("session.update", timeout=3)
    await stack.fake.wait_until(
        lambda: sum(1 for e in second.client_events if e.type == "conversation.item.create") >= 3, timeout=5
    )
    items = [e.event["item"] for e in second.client_events if e.type == "conversation.item.create"]
    kinds = [(item["role"], item["content"][0]["type"]) for item in items]
    # The note, the greeting, the caller's words as audio in their place, then the answer they got.
    assert kinds == [
        ("system", "input_text"),
        ("assistant", "output_text"),
        ("user", "input_audio"),
        ("assistant", "output_text"),
    ]
    assert speech in base64.b64decode(items[2]["content"][0]["audio"])
    assert not [e for e in second.client_events if e.type == "response.create"]
    await call.hang_up()


async def test_a_caller_who_hangs_up_mid_sentence_is_transcribed_and_summarised(
    make_stack: StackFactory,
) -> None:
    script = Script(
        replies=[Reply([Say("Hello.", audio=noise(300, 24))])],
        transcripts=["Tell Dana the roof is leaking"],
        summary=json.dumps({"summary": "The caller reported a roof leak.", "urgency": "high"}),
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    session = stack.fake.sessions[0]
    await call.say(tone(1200, 300))  # and hangs up before the VAD's silence window closes the turn
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    assert not any(e.type == "input_audio_buffer.speech_stopped" for e in session.server_events)
    assert await record_turns(stack, call.call_sid) == [
        ("assistant", "Hello."),
        ("caller", "Tell Dana the roof is leaking"),
    ]
    assert (await call_detail(stack, call.call_sid)).call.summary == "The caller reported a roof leak."
    assert len(session.responses) == 2  # the greeting and the summary: no answer to a gone caller
