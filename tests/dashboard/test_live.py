"""The live calls hub without a server: what the call event stream turns into, the ring of numbered
events, resuming after an id, snapshots for readers the ring no longer reaches, and that publishing
never waits for a reader."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from callassist.call.events import CallEnded, CallStarted, CostAdded, ToolRan, TurnHeard
from callassist.call.transcript import Turn
from callassist.dashboard.live import LiveCalls, LiveEvent, mask_number
from callassist.tools.registry import ToolOutcome

SID = "CA" + "1" * 32


def turn(role: str, text: str, interrupted: bool = False, item_id: str | None = None) -> TurnHeard:
    spoken_at = datetime.now(UTC)
    return TurnHeard(SID, Turn(role, text, spoken_at, item_id=item_id, interrupted=interrupted))  # type: ignore[arg-type]


def test_a_call_is_followed_from_start_to_end() -> None:
    hub = LiveCalls()
    hub.publish(CallStarted(SID, "+15551230000", is_owner=False))
    hub.publish(turn("assistant", "Hello, Dana's assistant."))
    hub.publish(turn("caller", "Hi, it's <b>Alex</b>"))
    hub.publish(turn("assistant", "   "))  # nothing heard: no line
    hub.publish(ToolRan(SID, ToolOutcome("take_message", "c1", '{"message": "call me"}', {"ok": True}, 0.1)))
    hub.publish(CostAdded(SID, "response", Decimal("0.0125")))
    hub.publish(CostAdded(SID, "transcription", Decimal("0.0005")))
    live = hub.calls[SID]
    assert [line.text for line in live.lines] == ["Hello, Dana's assistant.", "Hi, it's <b>Alex</b>"]
    assert list(live.tools) == ["take message (message=call me)"]
    assert live.cost == Decimal("0.0130")
    assert live.json()["number"] == "•••0000"
    hub.publish(CallEnded(SID, "caller-hung-up", 12.3))
    assert hub.calls == {}
    kinds = [event.kind for event in hub.since(0) or []]
    assert kinds == ["call-started", "line", "line", "tool", "cost", "cost", "call-ended"]
    assert [event.id for event in hub.since(0) or []] == list(range(1, 8))


def test_an_answer_cut_by_a_barge_in_replaces_its_line() -> None:
    hub = LiveCalls()
    hub.publish(CallStarted(SID, "+15551230000", is_owner=False))
    hub.publish(turn("assistant", "Let me check Wednesday for you", item_id="item_1"))
    hub.publish(turn("caller", "Actually Thursday", item_id="item_2"))
    hub.publish(turn("assistant", "Let me check", interrupted=True, item_id="item_1"))
    lines = hub.calls[SID].lines
    assert [(line.text, line.interrupted) for line in lines] == [
        ("Let me check", True),
        ("Actually Thursday", False),
    ]
    last = (hub.since(0) or [])[-1]
    assert last.kind == "line" and '"item_id": "item_1"' in last.data


def test_events_of_a_call_never_started_here_are_ignored_but_its_end_is_told() -> None:
    hub = LiveCalls()
    hub.publish(turn("caller", "hello"))
    assert hub.last_id == 0
    hub.publish(CallEnded(SID, "caller-hung-up", 1.0))
    assert [event.kind for event in hub.since(0) or []] == ["call-ended"]


def test_resuming_reads_after_the_id_and_a_reader_left_behind_gets_a_snapshot() -> None:
    hub = LiveCalls(ring_size=5)
    hub.publish(CallStarted(SID, None, is_owner=True))
    for n in range(3):
        hub.publish(turn("caller", f"line {n}"))
    assert [event.id for event in hub.since(2) or []] == [3, 4]
    assert hub.since(4) == []
    for n in range(5):
        hub.publish(turn("caller", f"more {n}"))
    assert hub.since(2) is None  # the ring holds 5..9 only
    assert hub.since(4) is not None  # 5 is the oldest kept: nothing missed
    assert hub.since(99) is None  # an id from another server (or before a restart)
    snapshot = hub.snapshot()
    assert snapshot.kind == "snapshot" and snapshot.id == hub.last_id
    assert '"more 4"' in snapshot.data and '"line 0"' in snapshot.data
    assert '"caller": "the owner"' in snapshot.data


def test_masking_shows_only_the_last_four_digits() -> None:
    assert mask_number("+447700900123") == "•••0123"
    assert mask_number(None) == "unknown number"
    assert mask_number("anonymous") == ""


async def test_a_reader_wakes_on_each_event_and_publishing_never_waits_for_it() -> None:
    hub = LiveCalls(ring_size=100)
    received: list[LiveEvent] = []
    first, last = asyncio.Event(), asyncio.Event()

    async def read() -> None:
        async for event in hub.stream(None, heartbeat_s=5):
            if event is not None:
                received.append(event)
                first.set()
                if '"word 299"' in event.data:
                    last.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), 1)  # the snapshot
    # A burst larger than the ring, with no await in between: publish returns at once each time.
    hub.publish(CallStarted(SID, "+15551230000", is_owner=False))
    for n in range(300):
        hub.publish(turn("caller", f"word {n}"))
    await asyncio.wait_for(last.wait(), 2)
    hub.close()
    await asyncio.wait_for(reader, 1)
    # The reader fell behind the ring: it got a snapshot with the latest lines, not a gap.
    assert [event.kind for event in received].count("snapshot") == 2


def test_event_ids_carry_the_server_epoch() -> None:
    hub, other = LiveCalls(), LiveCalls()
    hub.publish(CallStarted(SID, None, is_owner=False))
    assert hub.epoch != other.epoch
    assert hub.event_id(hub.last_event_id) == 1
    assert hub.event_id(other.last_event_id) is None
    assert hub.event_id(None) is None and hub.event_id("1") is None and hub.event_id(f"{hub.epoch}.x") is None
    assert (hub.since(0) or [])[0].sse(hub.epoch).startswith(f"id: {hub.epoch}.1\nevent: call-started\n")
