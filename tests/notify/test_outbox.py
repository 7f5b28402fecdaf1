"""The outbox: idempotent enqueue, claims that let each notice out once, retries, giving up."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from callassist.notify.outbox import DeliveryError, Notice, OutboxWorker, enqueue
from callassist.notify.sms import TwilioSms
from callassist.store.db import Database
from tests.notify.scenario import OWNER_EMAIL, OWNER_PHONE, TWILIO_NUMBER, ManualClock, outbox_rows
from tests.support.twilio_rest import TwilioRestStandIn


class FakeSender:
    """Accepts (or refuses, or holds at `gate`) whatever it is given, and remembers it."""

    def __init__(self, channel: str = "sms") -> None:
        self.channel = channel
        self.sent: list[Notice] = []
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.delivered = asyncio.Event()

    async def send(self, notice: Notice) -> str:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.sent.append(notice)
        self.delivered.set()
        return f"fake-{notice.id}"

    async def aclose(self) -> None:
        pass


async def add_notice(
    database: Database, key: str = "CA1:sms", body: str = "Missed call", **extra: str
) -> bool:
    values: dict[str, str] = {"channel": "sms", "recipient": OWNER_PHONE, "sender": TWILIO_NUMBER} | extra
    async with database.session() as session:
        return await enqueue(session, dedupe_key=key, body=body, **values)  # type: ignore[arg-type]


# Enqueue --------------------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_per_dedupe_key(database_url: str) -> None:
    database = Database.from_url(database_url)
    try:
        async with database.session() as session:
            assert await enqueue(
                session, dedupe_key="CA1:sms", channel="sms", recipient=OWNER_PHONE, body="first"
            )
            assert not await enqueue(
                session, dedupe_key="CA1:sms", channel="sms", recipient=OWNER_PHONE, body="second"
            )
        assert not await add_notice(database, "CA1:sms", body="third")
        # Two transactions racing to enqueue the same notice: one wins, the other finds it there.
        results = await asyncio.gather(*(add_notice(database, "CA2:sms", body="race") for _ in range(2)))
        assert sorted(results) == [False, True]
        rows = await outbox_rows(database)
        assert [(row.dedupe_key, row.body, row.status, row.attempts) for row in rows] == [
            ("CA1:sms", "first", "pending", 0),
            ("CA2:sms", "race", "pending", 0),
        ]
    finally:
        await database.close()


async def test_enqueue_refuses_an_unknown_channel(database: Database) -> None:
    async with database.session() as session:
        with pytest.raises(ValueError, match="unknown channel"):
            await enqueue(session, dedupe_key="k", channel="fax", recipient="x", body="b")  # type: ignore[arg-type]


async def test_a_notice_enqueued_in_a_rolled_back_transaction_is_never_sent(
    database: Database, clock: ManualClock
) -> None:
    with pytest.raises(RuntimeError):
        async with database.session() as session:
            await enqueue(session, dedupe_key="CA1:sms", channel="sms", recipient=OWNER_PHONE, body="hi")
            raise RuntimeError("the call record could not be written")
    sender = FakeSender()
    worker = OutboxWorker(database, {"sms": sender}, clock=clock)
    assert await worker.run_once() == 0
    assert sender.sent == []
    assert await outbox_rows(database) == []


# Claims ---------------------------------------------------------------------------------------------


async def test_racing_workers_deliver_each_notice_exactly_once(
    database_url: str, twilio: TwilioRestStandIn
) -> None:
    # Two Database handles: as far as the database can tell, two processes.
    databases = [Database.from_url(database_url) for _ in range(2)]
    senders = [
        TwilioSms(twilio.account_sid, twilio.auth_token, from_number=None, api_base_url=twilio.base_url)
        for _ in databases
    ]
    try:
        for number in range(12):
            await add_notice(databases[0], f"CA{number}:sms", body=f"notice {number}")
        workers = [OutboxWorker(db, {"sms": sender}) for db, sender in zip(databases, senders, strict=True)]
        attempted = await asyncio.gather(*(worker.run_once() for worker in workers))
        assert sum(attempted) == 12
        assert sorted(message.body for message in twilio.messages) == sorted(
            f"notice {number}" for number in range(12)
        )
        rows = await outbox_rows(databases[0])
        assert {(row.status, row.attempts) for row in rows} == {("sent", 1)}
        assert all(row.sent_at is not None and row.locked_until is None for row in rows)
        assert await asyncio.gather(*(worker.run_once() for worker in workers)) == [0, 0]
        assert len(twilio.messages) == 12
    finally:
        for sender in senders:
            await sender.aclose()
        for database in databases:
            await database.close()


async def test_only_the_current_lease_holder_may_mark_a_row(
    database_url: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database.from_url(database_url)
    slow, fast = FakeSender(), FakeSender()
    slow.gate = asyncio.Event()
    first = OutboxWorker(database, {"sms": slow}, clock=clock, lease_s=60)
    second = OutboxWorker(database, {"sms": fast}, clock=clock, lease_s=60, poll_interval_s=120)
    try:
        await add_notice(database)
        held = asyncio.create_task(first.run_once())
        await asyncio.wait_for(slow.entered.wait(), 5)
        assert await second.run_once() == 0  # leased by the first worker
        assert 59 < await second._seconds_until_next_due() <= 60  # the background loop sleeps that long
        clock.advance(seconds=61)
        assert await second.run_once() == 1  # the lease ran out: the second worker takes over
        slow.gate.set()
        assert await asyncio.wait_for(held, 5) == 1

        [row] = await outbox_rows(database)
        assert (row.status, row.attempts, row.locked_until) == ("sent", 2, None)
        assert "after its lease ran out" in caplog.text
        clock.advance(hours=1)
        assert await first.run_once() == 0
        assert await second.run_once() == 0
    finally:
        await database.close()


# Failures -------------------------------------------------------------------------------------------


async def test_temporary_failures_back_off_and_the_notice_is_delivered_once(
    database: Database, clock: ManualClock
) -> None:
    sender = FakeSender()
    sender.failure = DeliveryError("channel down")
    worker = OutboxWorker(database, {"sms": sender}, clock=clock, backoff=(5, 15))
    await add_notice(database)

    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.last_error, row.locked_until) == (
        "pending",
        1,
        "channel down",
        None,
    )
    assert timedelta(seconds=4) < row.next_attempt_at - clock() <= timedelta(seconds=5)
    assert await worker.run_once() == 0  # not due yet
    assert 4 < await worker._seconds_until_next_due() <= 5

    clock.advance(seconds=5)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert row.attempts == 2
    assert timedelta(seconds=14) < row.next_attempt_at - clock() <= timedelta(seconds=15)

    clock.advance(seconds=15)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert row.attempts == 3  # the last delay repeats
    assert timedelta(seconds=14) < row.next_attempt_at - clock() <= timedelta(seconds=15)

    sender.failure = None
    clock.advance(seconds=15)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.last_error) == ("sent", 4, None)
    clock.advance(hours=1)
    assert await worker.run_once() == 0
    assert len(sender.sent) == 1


async def test_a_permanent_error_fails_the_notice_at_once(
    database: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sender = FakeSender()
    sender.failure = DeliveryError("not a mobile number", permanent=True)
    worker = OutboxWorker(database, {"sms": sender}, clock=clock)
    await add_notice(database)
    with caplog.at_level(logging.ERROR, logger="callassist.notify.outbox"):
        assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "not a mobile number")
    assert any(
        record.levelno == logging.ERROR and "failed for good" in record.message for record in caplog.records
    )
    clock.advance(days=1)
    assert await worker.run_once() == 0


async def test_a_notice_undelivered_for_too_long_is_given_up(database: Database, clock: ManualClock) -> None:
    sender = FakeSender()
    sender.failure = DeliveryError("still down")
    worker = OutboxWorker(database, {"sms": sender}, clock=clock, give_up_after=timedelta(days=3))
    await add_notice(database)
    assert await worker.run_once() == 1
    clock.advance(days=3)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "still down")


async def test_a_sender_bug_is_retried_without_its_message_in_the_table(
    database: Database, clock: ManualClock
) -> None:
    sender = FakeSender()
    sender.failure = RuntimeError("boom, token=abc123")
    worker = OutboxWorker(database, {"sms": sender}, clock=clock)
    await add_notice(database)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert (row.status, row.last_error) == ("pending", "unexpected RuntimeError")


async def test_a_channel_without_sender_waits_and_is_reported_once(
    database: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await add_notice(database, "CA1:email", channel="email", recipient=OWNER_EMAIL, sender="")
    worker = OutboxWorker(database, {"sms": FakeSender()}, clock=clock)
    with caplog.at_level(logging.WARNING, logger="callassist.notify.outbox"):
        assert await worker.run_once() == 0
        assert await worker.run_once() == 0
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("pending", 0)
    assert len([record for record in caplog.records if "no email channel" in record.message]) == 1

    mailer = FakeSender("email")
    assert await OutboxWorker(database, {"email": mailer}, clock=clock).run_once() == 1
    assert [notice.recipient for notice in mailer.sent] == [OWNER_EMAIL]


async def test_a_delivery_whose_mark_failed_is_recorded_later_not_sent_again(
    database: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = FakeSender()
    worker = OutboxWorker(database, {"sms": sender}, clock=clock, lease_s=60)
    await add_notice(database)
    record_sent = worker._record_sent
    calls = 0

    async def flaky_record_sent(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        await record_sent(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(worker, "_record_sent", flaky_record_sent)
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert row.status == "pending"
    assert await worker.run_once() == 0  # records the earlier delivery, sends nothing
    [row] = await outbox_rows(database)
    assert row.status == "sent"
    assert len(sender.sent) == 1


# The background loop ---------------------------------------------------------------------------------


async def test_the_loop_delivers_when_woken_and_stops(database: Database, clock: ManualClock) -> None:
    sender = FakeSender()
    worker = OutboxWorker(database, {"sms": sender}, clock=clock, poll_interval_s=30)
    worker.start()
    try:
        await add_notice(database)
        worker.wake()
        await asyncio.wait_for(sender.delivered.wait(), 5)
    finally:
        await worker.stop()
    [row] = await outbox_rows(database)
    assert row.status == "sent"


async def test_stop_lets_the_send_in_flight_finish(database: Database, clock: ManualClock) -> None:
    sender = FakeSender()
    sender.gate = asyncio.Event()
    worker = OutboxWorker(database, {"sms": sender}, clock=clock)
    await add_notice(database)
    worker.start()
    await asyncio.wait_for(sender.entered.wait(), 5)
    stopping = asyncio.create_task(worker.stop(grace_s=5))
    sender.gate.set()
    await asyncio.wait_for(stopping, 5)
    [row] = await outbox_rows(database)
    assert row.status == "sent"


async def test_the_loop_survives_a_database_error(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'late.db'}")  # not migrated yet
    sender = FakeSender()
    worker = OutboxWorker(database, {"sms": sender}, clock=clock)
    rounds: asyncio.Queue[None] = asyncio.Queue()
    run_once = worker.run_once

    async def counted_run_once() -> int:
        try:
            return await run_once()
        finally:
            rounds.put_nowait(None)

    worker.run_once = counted_run_once  # type: ignore[method-assign]
    try:
        worker.start()
        await asyncio.wait_for(rounds.get(), 5)
        assert "outbox round failed" in caplog.text  # no outbox table: logged, not fatal
        await database.upgrade()
        await add_notice(database)
        worker.wake()
        await asyncio.wait_for(sender.delivered.wait(), 5)
    finally:
        await worker.stop()
        await database.close()
