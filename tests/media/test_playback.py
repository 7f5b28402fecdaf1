"""PlaybackTracker: what the caller heard, from mark echoes and the clock."""

from __future__ import annotations

from callassist.media.playback import AUDIBLE_GRACE_S, Interrupted, PlaybackTracker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_marks_confirm_playback_and_interpolate_inside_the_playing_chunk() -> None:
    clock = Clock()
    tracker = PlaybackTracker(clock)
    first = tracker.sent("item_a", 800)  # 100 ms
    tracker.sent("item_a", 800)
    assert tracker.audible
    clock.now += 0.040
    assert tracker.heard_ms("item_a") == 40
    clock.now += 0.060
    tracker.marked(first)
    assert tracker.heard_ms("item_a") == 100
    clock.now += 0.030
    assert tracker.heard_ms("item_a") == 130
    [cut] = tracker.interrupt()
    assert cut == Interrupted("item_a", heard_ms=130, sent_ms=200)
    assert not tracker.audible


def test_chunk_sent_after_buffer_ran_dry_starts_on_arrival() -> None:
    clock = Clock()
    tracker = PlaybackTracker(clock)
    tracker.marked(tracker.sent("item_a", 800))
    clock.now += 5.0  # silence: nothing queued
    tracker.sent("item_a", 800)
    clock.now += 0.025
    assert tracker.heard_ms("item_a") == 125


def test_items_queued_behind_the_playing_one_were_not_heard() -> None:
    clock = Clock()
    tracker = PlaybackTracker(clock)
    tracker.sent("item_a", 400)
    tracker.sent("item_b", 400)
    clock.now += 0.010
    assert tracker.interrupt() == [Interrupted("item_a", 10, 50), Interrupted("item_b", 0, 50)]


def test_heard_never_exceeds_sent_and_stale_marks_are_ignored() -> None:
    clock = Clock()
    tracker = PlaybackTracker(clock)
    old = tracker.sent("item_a", 160)
    clock.now += 10
    assert tracker.heard_ms("item_a") == 20
    tracker.interrupt()
    tracker.sent("item_b", 160)
    tracker.marked(old)  # Twilio echoes pending marks after a clear: not a playback confirmation
    assert tracker.audible
    tracker.marked("not-ours")
    assert tracker.audible
    assert tracker.heard_ms("unknown") == 0


async def test_wait_drained() -> None:
    tracker = PlaybackTracker()
    assert await tracker.wait_drained(0.01)
    mark = tracker.sent("item_a", 160)
    assert not await tracker.wait_drained(0.01)
    tracker.marked(mark)
    assert await tracker.wait_drained(0.01)


def test_the_heard_position_is_anchored_on_the_least_late_echo_of_the_run() -> None:
    """Echoes come late by varying amounts (a loaded event loop): the last echo alone would put the
    caller 25 ms behind where they are; the least late one puts them where they are."""
    clock = Clock()
    tracker = PlaybackTracker(clock)
    start = clock.now
    marks = [tracker.sent("item_a", 800) for _ in range(5)]  # 5 x 100 ms, all queued at once
    for index, late in enumerate((0.030, 0.001, 0.025)):
        clock.now = start + 0.100 * (index + 1) + late  # chunk `index` ended, echoed `late`
        tracker.marked(marks[index])
    clock.now = start + 0.340  # really heard: 340 ms
    assert abs(tracker.heard_ms("item_a") - 340) <= 1
    [cut] = tracker.interrupt()
    assert abs(cut.heard_ms - 340) <= 1


def test_an_underrun_restarts_the_run_when_the_next_chunk_arrives() -> None:
    clock = Clock()
    tracker = PlaybackTracker(clock)
    start = clock.now
    tracker.marked(tracker.sent("item_a", 800))  # echoed at once: the run started at `start`
    tracker.sent("item_a", 800)
    clock.now = start + 0.500  # the model was slow: Twilio ran dry at 200 ms (echo not here yet)
    tracker.sent("item_a", 800)
    clock.now += 0.050
    # The second chunk played in full; the third started on arrival: 100 + 100 + 50.
    assert tracker.heard_ms("item_a") == 250


def test_unconfirmed_audio_stops_counting_as_audible_once_the_clock_says_it_played() -> None:
    clock = Clock()
    tracker = PlaybackTracker(clock)
    tracker.sent("item_a", 800)  # 100 ms, its mark not sent (media/twilio.py marks every 100 ms)
    clock.now += 0.100 + AUDIBLE_GRACE_S - 0.01
    assert tracker.audible  # within the grace: Twilio may still be playing it
    clock.now += 0.02
    assert not tracker.audible  # a barge-in now clears nothing and truncates nothing
    assert tracker.interrupt() == [Interrupted("item_a", 100, 100)]
