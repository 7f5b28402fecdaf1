"""GPT-Live's deltas made into the call's turns (live/turns.py) and its backend's streamed events
into finished responses (live/backend.py), event by event."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from callassist.engine.events import (
    AssistantWords,
    AudioOut,
    CallerTranscribed,
    EngineEvent,
    ResponseFinished,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
)
from callassist.live import turns as turns_module
from callassist.live.backend import BackendStream
from callassist.live.turns import CALLER_QUIET_S, UTTERANCE_GAP_S, Turns


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(turns_module.time, "monotonic", clock)
    return clock


def new_turns(requests: list[str | None]) -> Turns:
    counter = itertools.count(1)
    pending = iter(requests)
    return Turns(lambda: next(pending, None), lambda prefix: f"{prefix}_{next(counter)}")


def kinds(out: list[EngineEvent]) -> list[str]:
    return [type(event).__name__ for event in out]


def test_a_stretch_of_speech_is_one_response_that_ends_after_a_gap(clock: Clock) -> None:
    turns, out = new_turns(["7"]), []
    turns.assistant_words("Hello ", out)  # the transcript ran ahead of the audio
    turns.audio("AAAA", out)
    turns.audio("BBBB", out)
    turns.assistant_words("there.", out)
    assert kinds(out) == ["ResponseStarted", "AssistantWords", "AudioOut", "AudioOut", "AssistantWords"]
    started, *_ = out
    assert isinstance(started, ResponseStarted) and started.request == "7"  # our request, answered
    assert {e.item_id for e in out if isinstance(e, AudioOut | AssistantWords)} == {"live_item_2"}
    out.clear()
    clock.now += UTTERANCE_GAP_S - 0.01
    turns.expire(clock.now, out)
    assert out == [] and turns.deadline(clock.now) == pytest.approx(0.01)
    clock.now += 0.02
    turns.expire(clock.now, out)
    [finished] = out
    assert isinstance(finished, ResponseFinished) and finished.status == "completed"
    assert finished.spoken[0].text == "Hello there." and finished.spoken[0].has_audio
    assert turns.deadline(clock.now) is None


def test_the_caller_talking_over_the_model_ends_its_speech_and_opens_a_turn(clock: Clock) -> None:
    turns, out = new_turns([]), []
    turns.audio("AAAA", out)
    out.clear()
    turns.caller_words({"delta": "Wait ", "start_ms": 1200, "end_ms": 1300}, out)
    turns.caller_words({"delta": "a second", "start_ms": 1300, "end_ms": 1700}, out)
    started, finished = out
    assert isinstance(started, SpeechStarted) and started.audio_start_ms == 1200
    assert isinstance(finished, ResponseFinished) and finished.status == "cancelled"
    out.clear()
    turns.audio("BBBB", out)  # the model answers: the caller's turn is over, a new speech begins
    stopped, heard, begun, _ = out
    assert isinstance(stopped, SpeechStopped) and stopped.audio_end_ms == 1700
    assert isinstance(heard, CallerTranscribed) and heard.text == "Wait a second" and heard.seconds == 0.0
    assert isinstance(begun, ResponseStarted) and begun.response_id != finished.response_id


def test_a_caller_turn_without_an_answer_ends_when_they_go_quiet(clock: Clock) -> None:
    turns, out = new_turns([]), []
    turns.caller_words({"delta": "Hello?", "start_ms": 0, "end_ms": 400}, out)
    clock.now += CALLER_QUIET_S
    turns.expire(clock.now, out)
    assert kinds(out) == ["SpeechStarted", "SpeechStopped", "CallerTranscribed"]


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "response.event",
        "event_id": "e",
        "delegation_id": "dlg_1",
        "event": {"type": kind, **fields},
    }


def test_the_backend_stream_gives_each_response_once_over_with_its_calls_and_usage() -> None:
    stream = BackendStream()
    snapshot = {"id": "resp_1", "status": "in_progress"}
    assert (
        stream.feed({**event("response.created", response=snapshot), "client_event_id": "callassist_4"})
        is None
    )
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "take_message",
        "arguments": "{}",
    }
    assert stream.feed(event("response.output_item.done", item={**call, "status": "completed"})) is None
    cut = {**call, "id": "fc_2", "call_id": "call_2", "status": "incomplete"}
    assert stream.feed(event("response.output_item.done", item=cut)) is None
    usage = {"input_tokens": 10, "output_tokens": 2}
    done = stream.feed(
        event("response.completed", response={"id": "resp_1", "status": "completed", "usage": usage})
    )
    assert done is not None and done.client_event_id == "callassist_4" and done.delegation_id == "dlg_1"
    assert [(c.call_id, c.completed) for c in done.calls] == [("call_1", True), ("call_2", False)]
    assert done.status == "completed" and done.usage == usage and done.failure is None
    failed = {"id": "resp_2", "status": "failed", "error": {"code": "server_error"}}
    stream.feed(event("response.created", response={"id": "resp_2", "status": "in_progress"}))
    over = stream.feed(event("response.failed", response=failed))
    assert over is not None and over.failure == "server_error" and over.calls == []
    assert stream.feed(event("response.completed", response={"id": "resp_9", "status": "completed"})) is None
