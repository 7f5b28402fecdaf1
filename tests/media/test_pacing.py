"""PacedLeg: a burst of assistant audio reaches the leg at real time plus the lead; a clear drops
what was held, which was never sent and so never heard."""

from __future__ import annotations

import asyncio
import time

from callassist.media.memory import MemoryLeg
from callassist.media.pacing import PacedLeg


class TimedLeg(MemoryLeg):
    """A MemoryLeg that notes when each chunk reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def play(self, item_id: str, payload: str, size: int) -> None:
        self.times.append(time.monotonic())
        await super().play(item_id, payload, size)


def chunk(ms: int) -> tuple[str, int]:
    size = ms * 8
    return "f" * (size * 4 // 3), size  # base64 of `size` bytes (content doesn't matter here)


async def test_a_burst_is_handed_over_at_real_time_plus_the_lead() -> None:
    inner = TimedLeg()
    paced = PacedLeg(inner, lead_ms=100)
    payload, size = chunk(50)
    started = time.monotonic()
    for index in range(8):  # 400 ms of audio, all at once (the service streams faster than real time)
        await paced.play(f"a{index}", payload, size)
    assert len(inner.times) == 3  # 50, 100 and... the lead's worth go at once, with no wait
    assert paced.audible and await paced.wait_drained(0.01) is False
    await inner.wait_for_chunk("a7", within_s=2.0)
    for index, at in enumerate(inner.times):
        # Never more than the lead ahead of real-time playback (5 ms for the clock's resolution).
        assert at - started >= index * 0.050 - 0.100 - 0.005, (index, at - started)
    assert inner.times[-1] - started < 0.6  # and not much later either
    assert paced.held_max == 5


async def test_a_clear_drops_what_was_held_and_it_was_never_sent() -> None:
    inner = TimedLeg()
    paced = PacedLeg(inner, lead_ms=200)
    payload, size = chunk(100)
    for _ in range(10):  # one second of audio
        await paced.play("item", payload, size)
    sent = len(inner.played_chunks)
    assert sent == 3
    cuts = await paced.clear()
    assert [cut.item_id for cut in cuts] == ["item"] and cuts[0].sent_ms == 300
    assert not paced._held and paced._pacer is not None
    await asyncio.wait_for(paced._pacer, 1.0)  # the pacer finds nothing more to send
    assert len(inner.played_chunks) == sent
    # After the clear, a new answer starts at once.
    await paced.play("next", payload, size)
    assert inner.played_chunks[-1][0] == "next"
    await paced.close()
    assert inner.closed
