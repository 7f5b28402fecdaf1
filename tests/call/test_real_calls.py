"""What the real service does that the bridge must cope with (protocols.md D), over real sockets.

Each test reproduces a defect found by reading the bridge against the SDK's docstrings and the
service's documented behaviour; each failed before its fix.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from callassist.simulator.audio import tone
from tests.fakes.realtime_server import CallFunction, FakeSession, Reply, Say, Script
from tests.support.stack import StackFactory, talk_over


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
    await stack.fake.wait_until(lambda: len(session.responses) >= 2, timeout=10)
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
    assert json.loads(session.function_outputs[0][1])["hanging_up"] is True
