"""Call records: what the store holds after real calls through callassist, against the fake."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from callassist.call.recorder import nanodollars
from callassist.realtime.pricing import PriceTable, Usage
from callassist.simulator import CallerSimulator
from callassist.simulator.audio import tone
from callassist.store.db import Database
from callassist.store.models import CallRow, ToolCallRow, TranscriptEntryRow, UsageRow
from tests.fakes.realtime_server import FakeRealtimeServer, Reply, Say, Script, UseTool
from tests.support.process import ChildProcess, callassist_command, free_port
from tests.support.server import AUTH_TOKEN
from tests.support.stack import Stack, StackFactory, heard_chunks, talk_over, without_clock

SUMMARY = json.dumps(
    {
        "summary": "Alex asked when Dana is free tomorrow and was told the afternoon is open.",
        "caller_name": "Alex Kim",
        "reason": "availability",
        "follow_up_needed": False,
        "urgency": "normal",
    }
)
WORDS = " ".join(f"word{n}" for n in range(60))


async def record_of(database: Database, call_sid: str) -> dict[str, Any]:
    async with database.session(read_only=True) as session:
        call = await session.get(CallRow, call_sid)
        turns = list(
            await session.scalars(
                select(TranscriptEntryRow)
                .where(TranscriptEntryRow.call_sid == call_sid)
                .order_by(TranscriptEntryRow.spoken_at, TranscriptEntryRow.id)
            )
        )
        tools = list(await session.scalars(select(ToolCallRow).where(ToolCallRow.call_sid == call_sid)))
        usage = list(
            await session.scalars(select(UsageRow).where(UsageRow.call_sid == call_sid).order_by(UsageRow.id))
        )
    return {"call": call, "turns": turns, "tools": tools, "usage": usage}


async def turn(stack: Stack, call: Any, completed: int) -> None:
    session = stack.fake.sessions[-1]
    said = time.monotonic()
    await call.say(tone(800, 300))
    await stack.fake.wait_until(
        lambda: len([r for r in session.responses if r["status"] == "completed"]) >= completed, timeout=15
    )
    await call.wait_until_quiet(quiet_ms=150, timeout=10, after=said)


def tuesday_meeting() -> Script:
    """A greeting, an agreement, and a later question about it: what a new session must remember."""
    return Script(
        replies=[
            Reply([Say("Hello, Dana's assistant.", audio=tone(400, 400))]),
            Reply([Say("Tuesday at ten works.", audio=tone(500, 420))]),
            Reply([Say("Yes, still Tuesday at ten.", audio=tone(500, 440))]),
        ],
        transcripts=["Can we meet Tuesday?", "So we agreed on Tuesday?"],
    )


def replayed_messages(session: Any) -> list[tuple[str, str]]:
    """(role, text) of each conversation item the call created in a session, in order."""
    return [
        (e.event["item"]["role"], e.event["item"]["content"][0]["text"])
        for e in session.client_events
        if e.type == "conversation.item.create"
    ]


async def test_a_two_turn_call_is_recorded_as_it_happened(make_stack: StackFactory) -> None:
    script = Script(
        replies=[
            Reply([Say("Hello, this is Dana's assistant.", audio=tone(600, 400))]),
            Reply(
                [
                    Say("Let me check.", audio=tone(300, 420)),
                    UseTool("check_availability", intent={"date": "tomorrow"}),
                ]
            ),
            Reply([Say("Dana is free all afternoon.", audio=tone(700, 440))]),
            Reply([Say("You're welcome, goodbye.", audio=tone(500, 460))]),
        ],
        transcripts=["When is Dana free tomorrow?", "Great, thanks."],
        summary=SUMMARY,
    )
    stack = await make_stack(script, timezone="America/New_York")
    call = await stack.simulator.place_call(from_number="+15551230000")
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await turn(stack, call, completed=3)
    await turn(stack, call, completed=4)
    await call.hang_up()
    session = stack.fake.sessions[0]
    await stack.fake.wait_until(lambda: session.closed, timeout=10)
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)

    row = record["call"]
    assert row.outcome == "caller-hung-up" and row.ended_at is not None
    assert row.caller_number == "+15551230000" and row.caller_name == "Alex Kim"
    assert row.summary.startswith("Alex asked") and row.reason == "availability"
    assert row.follow_up is False and row.urgency == "normal"
    assert row.greeting_latency_ms is not None and row.greeting_latency_ms < 2000

    # The transcript, in order, is what the fake transcribed and said.
    assert [(t.role, t.text) for t in record["turns"]] == [
        ("assistant", "Hello, this is Dana's assistant."),
        ("caller", "When is Dana free tomorrow?"),
        ("assistant", "Let me check."),
        ("assistant", "Dana is free all afternoon."),
        ("caller", "Great, thanks."),
        ("assistant", "You're welcome, goodbye."),
    ]
    assert not any(t.interrupted for t in record["turns"])
    assert [t.audio_ms for t in record["turns"] if t.role == "assistant"] == [600, 300, 700, 500]

    # Tool calls as the model asked and as answered.
    [tool] = record["tools"]
    # "tomorrow" as the model wrote it: the next day in Dana's time zone, as a date.
    tomorrow = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=1)
    assert tool.name == "check_availability" and json.loads(tool.arguments) == {"date": tomorrow.isoformat()}
    assert tool.ok and json.loads(tool.result)["ok"] is True
    assert json.loads(tool.result) == json.loads(session.function_outputs[0][1])

    # Usage of every response (the summary's too) and its cost, from the fake's own numbers.
    prices = PriceTable()
    responses = {r["id"]: r for r in session.responses}
    response_rows = [u for u in record["usage"] if u.kind == "response"]
    assert {u.ref for u in response_rows} == set(responses)
    for usage_row in response_rows:
        expected = Usage.from_api(responses[usage_row.ref]["usage"])
        assert (usage_row.text_in, usage_row.audio_in, usage_row.cached_text, usage_row.cached_audio) == (
            expected.text_in, expected.audio_in, expected.cached_text, expected.cached_audio,
        )  # fmt: skip
        assert (usage_row.text_out, usage_row.audio_out) == (expected.text_out, expected.audio_out)
        assert usage_row.cost_nanousd == nanodollars(prices.response_cost("gpt-realtime-2.1", expected))
    assert {u.purpose for u in response_rows} == {"greeting", "turn", "tool", "summary"}
    transcriptions = [u for u in record["usage"] if u.kind == "transcription"]
    assert len(transcriptions) == 2 and all(u.seconds and u.seconds > 0.2 for u in transcriptions)
    assert row.cost_nanousd == sum(u.cost_nanousd for u in record["usage"]) > 0
    assert Decimal(row.cost_nanousd) / Decimal(10**9) < Decimal("0.50")

    # Latency of each answered turn: caller stopped speaking -> first assistant audio sent,
    # matching what the simulated caller measured (last speech frame -> first audio heard).
    answered = [t.latency_ms for t in record["turns"] if t.role == "assistant" and t.latency_ms is not None]
    assert len(answered) == 2
    for ours, theirs in zip(answered, call.turn_latencies_ms, strict=True):
        assert abs(ours - theirs) < 100, (answered, call.turn_latencies_ms)


async def test_an_interrupted_turn_is_stored_only_as_far_as_it_was_heard(make_stack: StackFactory) -> None:
    script = Script(
        replies=[
            Reply([Say("Hi.", audio=tone(400, 400))]),
            Reply([Say(WORDS, audio=tone(6000, 420))]),
            Reply([Say("Sure, go ahead.", audio=tone(500, 440))]),
        ],
        transcripts=["Tell me everything.", "Wait, stop."],
    )
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    asked = time.monotonic()
    await call.say(tone(800, 300))
    answer = await call.wait_for("media_in", after=asked, timeout=10)
    await heard_chunks(call, answer.t, 15)
    cleared = await talk_over(call, answer.t, tone(700, 350))
    await call.wait_until_quiet(quiet_ms=150, timeout=10, after=cleared.t)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)

    [truncation] = stack.fake.sessions[0].truncations
    cut = next(t for t in record["turns"] if t.item_id == truncation["item_id"])
    assert cut.interrupted and cut.audio_ms == 6000
    assert cut.heard_ms == truncation["audio_end_ms"]
    heard_words = cut.text.split()
    assert WORDS.startswith(cut.text) and 0 < len(heard_words) < 60
    assert abs(len(heard_words) - 60 * cut.heard_ms / 6000) <= 1
    assert [t.text for t in record["turns"]][-2:] == ["Wait, stop.", "Sure, go ahead."]


async def test_a_dropped_session_gets_the_conversation_back_and_no_second_greeting(
    make_stack: StackFactory,
) -> None:
    script = tuesday_meeting()
    stack = await make_stack(script)
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await turn(stack, call, completed=2)
    first = stack.fake.sessions[0]
    dropped = time.monotonic()
    await first.close(code=1001, reason="Your session hit the maximum duration of 60 minutes.")
    second = await stack.fake.wait_for_session(1, timeout=3)
    update = await second.wait_for_client_event("session.update", timeout=3)
    assert time.monotonic() - dropped < 2.0
    # Same configuration again (only the clock in the instructions moves on).
    assert without_clock(update["session"]) == without_clock(first.client_events[0].event["session"])
    # The conversation so far, as text, in order; then nothing asks for a greeting.
    replayed = replayed_messages(second)
    assert replayed[1:] == [
        ("assistant", "Hello, Dana's assistant."),
        ("user", "Can we meet Tuesday?"),
        ("assistant", "Tuesday at ten works."),
    ]
    assert replayed[0][0] == "system"
    assert not [e for e in second.client_events if e.type == "response.create"]
    await turn(stack, call, completed=1)
    [answer] = second.responses
    assert answer["output"][0]["content"][0]["transcript"] == "Yes, still Tuesday at ten."
    assert [item.get("role") for item in second.items[:4]] == ["system", "assistant", "user", "assistant"]
    await call.hang_up()


async def test_a_long_call_moves_to_a_fresh_session_at_a_quiet_moment_and_loses_nothing(
    make_stack: StackFactory,
) -> None:
    script = tuesday_meeting()
    # Sessions are moved on after three seconds instead of fifty, and the fake's cap is at eight.
    stack = await make_stack(script, session_rotate_minutes=0.05, fake_options={"max_session_seconds": 8})
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await turn(stack, call, completed=2)
    first = stack.fake.sessions[0]
    second = await stack.fake.wait_for_session(1, timeout=10)
    await stack.fake.wait_until(lambda: first.closed, timeout=5)
    assert first.close_code == 1000  # closed by us once the new session was ready, not cut off
    # The new session has the same configuration and the conversation; nothing asks it to speak.
    update = await second.wait_for_client_event("session.update", timeout=3)
    assert without_clock(update["session"]) == without_clock(first.client_events[0].event["session"])
    replayed = replayed_messages(second)
    assert replayed[1:] == [
        ("assistant", "Hello, Dana's assistant."),
        ("user", "Can we meet Tuesday?"),
        ("assistant", "Tuesday at ten works."),
    ]
    assert not [e for e in second.client_events if e.type == "response.create"]
    # Nothing was in flight when it moved: no response of the first session was cut short.
    assert [r["status"] for r in first.responses] == ["completed", "completed"]
    await turn(stack, call, completed=1)
    [answer] = second.responses
    assert answer["output"][0]["content"][0]["transcript"] == "Yes, still Tuesday at ten."
    await call.hang_up()
    await stack.fake.wait_until(lambda: second.closed, timeout=10)
    await stack.server.services.registry.wait_idle(10)
    # Every frame the caller sent reached OpenAI exactly once and in order, across both sessions.
    assert bytes(first.audio_in) + bytes(second.audio_in) == bytes(call.audio_sent)
    record = await record_of(stack.server.services.database, call.call_sid)
    assert [t.text for t in record["turns"]] == [
        "Hello, Dana's assistant.",
        "Can we meet Tuesday?",
        "Tuesday at ten works.",
        "So we agreed on Tuesday?",
        "Yes, still Tuesday at ten.",
    ]
    assert record["call"].reconnects == 0


def two_turns() -> Script:
    """A greeting and two short answers, told apart by their text."""
    return Script(
        replies=[
            Reply([Say("Hello.", audio=tone(400, 400))]),
            Reply([Say("First answer.", audio=tone(500, 420))]),
            Reply([Say("Second answer.", audio=tone(500, 440))]),
        ],
        transcripts=["One?", "Two?"],
    )


async def test_while_no_new_session_can_be_opened_the_call_carries_on_in_the_old_one(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(two_turns(), session_rotate_minutes=0.05)
    call = await stack.simulator.place_call()
    first = await stack.fake.wait_for_session(0, timeout=5)
    stack.fake.refuse_new_sessions = HTTPStatus.SERVICE_UNAVAILABLE
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    # The call tries to move on (and is turned away) while the caller is still talking to the old session.
    await stack.fake.wait_until(lambda: stack.fake.refused >= 1, timeout=10)
    await turn(stack, call, completed=2)
    assert len(stack.fake.sessions) == 1 and not first.closed
    # Once the service takes connections again, the move completes at the next quiet moment.
    stack.fake.refuse_new_sessions = None
    second = await stack.fake.wait_for_session(1, timeout=15)
    await stack.fake.wait_until(lambda: first.closed, timeout=5)
    assert first.close_code == 1000
    await turn(stack, call, completed=1)
    assert [r["output"][0]["content"][0]["transcript"] for r in second.responses] == ["Second answer."]
    await call.hang_up()
    await stack.fake.wait_until(lambda: second.closed, timeout=10)
    assert bytes(first.audio_in) + bytes(second.audio_in) == bytes(call.audio_sent)


async def test_a_new_session_that_fails_during_the_move_is_replaced_and_the_call_goes_on(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(two_turns(), session_rotate_minutes=0.05)
    stack.fake.fail_during_setup = {1}
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await turn(stack, call, completed=2)
    first = stack.fake.sessions[0]
    failed = await stack.fake.wait_for_session(1, timeout=10)
    await stack.fake.wait_until(lambda: failed.closed, timeout=5)
    assert failed.close_code == 1011
    # The new session died while being set up: a third one gets the conversation instead.
    third = await stack.fake.wait_for_session(2, timeout=5)
    await third.wait_for_client_event("session.update", timeout=3)
    await stack.fake.wait_until(lambda: first.closed, timeout=5)
    assert [text for _, text in replayed_messages(third)[1:]] == ["Hello.", "One?", "First answer."]
    await turn(stack, call, completed=1)
    assert [r["output"][0]["content"][0]["transcript"] for r in third.responses] == ["Second answer."]
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    record = await record_of(stack.server.services.database, call.call_sid)
    assert [t.text for t in record["turns"]] == ["Hello.", "One?", "First answer.", "Two?", "Second answer."]


async def test_killing_the_server_mid_call_keeps_every_completed_turn(tmp_path: Path) -> None:
    script = Script(
        replies=[
            Reply([Say("Hello.", audio=tone(300, 400))]),
            Reply([Say("First answer.", audio=tone(300, 420))]),
            Reply([Say("Second answer.", audio=tone(300, 440))]),
            Reply([Say("Third answer, never finished.", audio=tone(8000, 460))]),
        ],
        transcripts=["One?", "Two?", "Three?"],
    )
    async with FakeRealtimeServer(script) as fake:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        data_dir = tmp_path / "data"
        serve = await ChildProcess(
            callassist_command("serve"),
            env={
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": fake.base_url,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "PUBLIC_BASE_URL": base,
                "CALLASSIST_PORT": str(port),
                "CALLASSIST_DATA_DIR": str(data_dir),
            },
        ).start()
        try:
            await serve.wait_until_serving()
            call = await CallerSimulator(base, auth_token=AUTH_TOKEN).place_call()
            await call.wait_until_quiet(quiet_ms=150, timeout=10)
            for completed in (2, 3):
                said = time.monotonic()
                await call.say(tone(800, 300))
                await fake.wait_until(lambda n=completed: len(fake.sessions[0].responses) >= n, timeout=15)
                await call.wait_until_quiet(quiet_ms=150, timeout=10, after=said)
            # A third turn is under way (its long answer still playing) when the server is killed.
            said = time.monotonic()
            await call.say(tone(800, 300))
            await call.wait_for("media_in", after=said, timeout=10)
            serve.send_signal(signal.SIGKILL)
            assert await serve.wait(timeout=5) == -signal.SIGKILL
        finally:
            await serve.stop()

        database = Database.from_url(f"sqlite+aiosqlite:///{data_dir / 'callassist.db'}")
        try:
            record = await record_of(database, call.call_sid)
            assert record["call"].ended_at is None  # the process died before the end could be written
            # The next start closes the record the dead process left open.
            port = free_port()
            restarted = await ChildProcess(
                callassist_command("serve"),
                env={
                    "OPENAI_API_KEY": "sk-test",
                    "OPENAI_BASE_URL": fake.base_url,
                    "CALLASSIST_PORT": str(port),
                    "CALLASSIST_DATA_DIR": str(data_dir),
                },
            ).start()
            try:
                await restarted.wait_until_serving()
                assert "closed 1 call record(s) left open" in restarted.output
                reopened = await record_of(database, call.call_sid)
            finally:
                await restarted.stop()
        finally:
            await database.close()
    texts = [(t.role, t.text) for t in record["turns"]]
    assert texts[:5] == [
        ("assistant", "Hello."),
        ("caller", "One?"),
        ("assistant", "First answer."),
        ("caller", "Two?"),
        ("assistant", "Second answer."),
    ]
    assert reopened["call"].outcome == "interrupted" and reopened["call"].ended_at is not None


async def test_a_second_call_from_the_same_number_starts_with_the_first_ones_summary(
    make_stack: StackFactory,
) -> None:
    def script() -> Script:
        return Script(
            replies=[
                Reply([Say("Hello.", audio=tone(300, 400))]),
                Reply([Say("Noted.", audio=tone(300, 420))]),
            ],
            transcripts=["I'm Alex, when is Dana free tomorrow?"],
            summary=SUMMARY,
        )

    # What Alex's calls were about is given only when the number is Alex's (attested here).
    attested = {"StirVerstat": "TN-Validation-Passed-A"}
    stack = await make_stack(script)
    first = await stack.simulator.place_call(from_number="+15551230000", extra_params=attested)
    await first.wait_until_quiet(quiet_ms=150, timeout=10)
    await turn(stack, first, completed=2)
    await first.hang_up()
    await stack.server.services.registry.wait_idle(10)
    # A stranger's call in between must not borrow Alex's history.
    stranger = await stack.simulator.place_call(from_number="+15557770000")
    await stranger.wait_until_quiet(quiet_ms=150, timeout=10)
    await stranger.hang_up()

    second = await stack.simulator.place_call(from_number="+15551230000", extra_params=attested)
    await second.wait_until_quiet(quiet_ms=150, timeout=10)
    await second.hang_up()
    first_session, stranger_session, second_session = stack.fake.sessions
    instructions = second_session.session_config["instructions"]
    assert "Alex asked when Dana is free tomorrow" in instructions
    assert "Alex Kim" in instructions  # greeted by the name given last time
    assert "Alex" not in stranger_session.session_config["instructions"]
    assert "earlier calls" not in first_session.session_config["instructions"].lower()
