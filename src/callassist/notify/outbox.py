"""The owner's notices, kept in the `outbox` table until a channel (SMS, e-mail) has accepted them.

A notice is enqueued in the caller's transaction, so it exists exactly when the call record that
caused it was committed. An `OutboxWorker` delivers it later, retrying with backoff while the
channel is down. Each delivery is claimed first with a conditional UPDATE (a lease), so any number
of workers, in one process or many, send a given notice once.

Nothing is retried forever: a notice the channel refuses for good (a bad address, a message the
server rejects, an SMTP 5xx, a Twilio 4xx such as an invalid number) fails at once; one that keeps
failing otherwise fails after `max_attempts` attempts or `give_up_after`, whichever comes first.
A failed notice keeps its reason in `last_error`, is logged as an error, and is listed by
`callassist.store.records.list_notices` (and with its call in `get_call`).

One reason this module runs to about 500 lines: it is one job, the life of an `outbox` row (enqueued,
claimed under a lease, then sent, retried or failed), and every part of it keeps the same invariants
on the same columns (`status`, `attempts`, `next_attempt_at`, `locked_until` as the fencing token).
What the channels do (`sms`, `email`) and what a notice says (`notices`) live in their own modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, get_args

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.store.db import Database
from callassist.store.models import OutboxRow, utc_now

log = logging.getLogger(__name__)

Channel = Literal["sms", "email"]
CHANNELS: tuple[str, ...] = get_args(Channel)

DEFAULT_BACKOFF: tuple[float, ...] = (5, 15, 30, 60, 120, 300, 900)
DEFAULT_GIVE_UP_AFTER = timedelta(days=3)
# With DEFAULT_BACKOFF, a hundred attempts take about a day: a channel down longer than that is
# something the owner must be told about (the notice fails, with its reason), not something to
# keep knocking on.
DEFAULT_MAX_ATTEMPTS = 100
# Long enough for a human-readable reason, short enough that a provider's page of HTML doesn't land
# in the table.
MAX_ERROR_LENGTH = 300


class DeliveryError(Exception):
    """A channel did not accept a notice. `permanent` means trying again cannot help.

    The message is stored in `outbox.last_error` and logged, so it must never carry a secret.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Notice:
    """What a Sender needs to deliver one outbox row (a plain copy: no session attached)."""

    id: int
    dedupe_key: str
    channel: str
    recipient: str
    sender: str | None
    subject: str | None
    body: str
    call_sid: str | None
    attempts: int  # this delivery included
    created_at: datetime


class Sender(Protocol):
    """One notification channel. `send` returns the provider's id for the message, if it has one."""

    @property
    def channel(self) -> str: ...

    async def send(self, notice: Notice) -> str | None:
        """Deliver `notice`, or raise DeliveryError. Returning means the provider accepted it."""
        ...

    async def aclose(self) -> None:
        """Release connections; the sender is not used afterwards."""
        ...


async def enqueue(
    session: AsyncSession,
    *,
    dedupe_key: str,
    channel: Channel,
    recipient: str,
    body: str,
    subject: str | None = None,
    sender: str | None = None,
    call_sid: str | None = None,
) -> bool:
    """Add a notice in the caller's transaction, unless one with `dedupe_key` exists already.

    Returns whether it was new. Committing the transaction is the caller's business: a notice
    enqueued in a transaction that rolls back is never sent.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    now = utc_now()
    values: dict[str, Any] = {
        "dedupe_key": dedupe_key,
        "channel": channel,
        "recipient": recipient,
        "body": body,
        "subject": subject,
        "sender": sender,
        "call_sid": call_sid,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        statement = (
            insert(OutboxRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[OutboxRow.dedupe_key])
            .returning(OutboxRow.id)
        )
        return (await session.execute(statement)).scalar_one_or_none() is not None
    # Any other database: look first, then insert in a savepoint so that losing a race to a
    # concurrent enqueue of the same key leaves the caller's transaction usable.
    existing = await session.scalar(select(OutboxRow.id).where(OutboxRow.dedupe_key == dedupe_key))
    if existing is not None:
        return False
    try:
        async with session.begin_nested():
            session.add(OutboxRow(**values))
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Sent:
    """A send the provider accepted but whose `sent` mark hasn't reached the database yet."""

    lease: datetime
    sent_at: datetime
    provider_id: str | None


class OutboxWorker:
    """Delivers due outbox rows through `senders` (keyed by channel), in the background or on demand.

    A row is claimed by setting `locked_until` (the lease) with a conditional UPDATE, sent outside
    any transaction, then marked `sent` only if the lease is still this worker's: the lease value
    is the fencing token, so a worker whose lease ran out can't overwrite the row's fate.
    `lease_s` must exceed the time a send can take; sends are cut off at half of it.
    """

    def __init__(
        self,
        database: Database,
        senders: Mapping[str, Sender],
        *,
        poll_interval_s: float = 30.0,
        lease_s: float = 60.0,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        give_up_after: timedelta = DEFAULT_GIVE_UP_AFTER,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], datetime] = utc_now,
        batch_size: int = 50,
    ) -> None:
        if not backoff or min(backoff) < 0:
            raise ValueError("backoff needs at least one delay, none negative")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if lease_s <= 0 or poll_interval_s <= 0:
            raise ValueError("lease_s and poll_interval_s must be positive")
        for channel, sender in senders.items():
            if sender.channel != channel:
                raise ValueError(f"sender for {channel!r} says it sends {sender.channel!r}")
        self.database = database
        self.senders = dict(senders)
        self.poll_interval_s = poll_interval_s
        self.lease = timedelta(seconds=lease_s)
        self.send_timeout_s = lease_s / 2
        self.backoff = tuple(backoff)
        self.give_up_after = give_up_after
        self.max_attempts = max_attempts
        self.clock = clock
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._unrecorded: dict[int, _Sent] = {}
        self._warned_channels: set[str] = set()

    # Running in the background --------------------------------------------------------------------

    def start(self) -> None:
        """Run the delivery loop as a background task of the current event loop (once)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-worker")

    def wake(self) -> None:
        """Deliver now instead of at the next poll, e.g. right after a call enqueued its notices."""
        self._wake.set()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let the send in flight finish (up to `grace_s`), then end the loop."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            # Cut off mid-send: the lease lapses and the row is tried again later (delivered twice
            # if the provider had accepted it already, which is why the grace comes first).
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            delay = self.poll_interval_s
            try:
                await self.run_once()
                if not self._stopping:
                    delay = await self._seconds_until_next_due()
            except Exception:
                # A database that is down or a bug tripped by one row must not end deliveries.
                log.exception("outbox round failed; trying again in %.0f s", delay)
            if self._stopping:
                break
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _seconds_until_next_due(self) -> float:
        """Until the earliest row (of a channel we can send) becomes claimable, capped at the poll."""
        # A row is claimable at the later of its next attempt and the end of its lease.
        ready_at = case(
            (OutboxRow.locked_until > OutboxRow.next_attempt_at, OutboxRow.locked_until),
            else_=OutboxRow.next_attempt_at,
        )
        async with self.database.session(read_only=True) as session:
            earliest = await session.scalar(
                select(func.min(ready_at)).where(
                    OutboxRow.status == "pending", OutboxRow.channel.in_(self.senders)
                )
            )
        if earliest is None:
            return self.poll_interval_s
        wait = (earliest - self.clock()).total_seconds()
        # The floor keeps a row that is due but can't be claimed yet from spinning the loop.
        return min(max(wait, 0.5), self.poll_interval_s)

    # One round ----------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Try every row that is due now, once; returns how many were attempted (sent or not).

        Channels are worked through side by side, so a mail server that hangs doesn't hold up SMS.
        Raises the first database error met, after every channel had its turn.
        """
        await self._record_unrecorded_sends()
        await self._warn_about_channels_without_sender()
        results = await asyncio.gather(
            *(self._drain(channel) for channel in self.senders), return_exceptions=True
        )
        attempted = 0
        for result in results:
            if isinstance(result, BaseException):
                raise result
            attempted += result
        return attempted

    async def _drain(self, channel: str) -> int:
        attempted = 0
        after_id = 0
        while not self._stopping:
            now = self.clock()
            async with self.database.session(read_only=True) as session:
                ids = (
                    await session.scalars(
                        select(OutboxRow.id)
                        .where(_claimable(now), OutboxRow.channel == channel, OutboxRow.id > after_id)
                        .order_by(OutboxRow.id)
                        .limit(self.batch_size)
                    )
                ).all()
            if not ids:
                break
            for row_id in ids:
                if self._stopping:
                    break
                after_id = row_id
                if row_id in self._unrecorded:
                    continue  # sent already; only the record of it is missing
                claimed = await self._claim(row_id)
                if claimed is None:
                    continue  # another worker was quicker, or the row changed since the query
                notice, lease = claimed
                attempted += 1
                await self._deliver(notice, lease)
        return attempted

    async def _claim(self, row_id: int) -> tuple[Notice, datetime] | None:
        now = self.clock()
        async with self.database.session() as session:
            result = await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id, _claimable(now))
                .values(locked_until=now + self.lease, attempts=OutboxRow.attempts + 1)
                .returning(
                    OutboxRow.id,
                    OutboxRow.dedupe_key,
                    OutboxRow.channel,
                    OutboxRow.recipient,
                    OutboxRow.sender,
                    OutboxRow.subject,
                    OutboxRow.body,
                    OutboxRow.call_sid,
                    OutboxRow.attempts,
                    OutboxRow.created_at,
                    OutboxRow.locked_until,
                )
                .execution_options(synchronize_session=False)
            )
            row = result.one_or_none()
        if row is None:
            return None
        notice = Notice(
            id=row.id,
            dedupe_key=row.dedupe_key,
            channel=row.channel,
            recipient=row.recipient,
            sender=row.sender,
            subject=row.subject,
            body=row.body,
            call_sid=row.call_sid,
            attempts=row.attempts,
            created_at=row.created_at,
        )
        # The stored value, not the one computed here: it is compared for equality later.
        return notice, row.locked_until

    async def _deliver(self, notice: Notice, lease: datetime) -> None:
        sender = self.senders[notice.channel]
        try:
            async with asyncio.timeout(self.send_timeout_s):
                provider_id = await sender.send(notice)
        except DeliveryError as exc:
            await self._record_failure(notice, lease, exc.message, permanent=exc.permanent)
        except TimeoutError:
            await self._record_failure(notice, lease, f"no answer within {self.send_timeout_s:g} s")
        except Exception as exc:
            # A sender bug, not a channel being down; its message might hold anything, so only the
            # type goes into the table.
            log.exception("sender %s raised unexpectedly on notice %s", notice.channel, notice.id)
            await self._record_failure(notice, lease, f"unexpected {type(exc).__name__}")
        else:
            sent = _Sent(lease=lease, sent_at=self.clock(), provider_id=provider_id)
            try:
                await self._record_sent(notice.id, sent)
            except Exception:
                # Remembered and recorded next round; until then this worker won't send it again.
                self._unrecorded[notice.id] = sent
                log.exception("notice %s was delivered but could not be marked sent yet", notice.id)
            else:
                log.info(
                    "notice %s delivered by %s to %s (%s)",
                    notice.id,
                    notice.channel,
                    notice.recipient,
                    provider_id or "no provider id",
                )

    async def _record_sent(self, row_id: int, sent: _Sent) -> None:
        async with self.database.session() as session:
            marked = await session.scalar(
                update(OutboxRow)
                .where(_held(row_id, sent.lease))
                .values(status="sent", sent_at=sent.sent_at, locked_until=None, last_error=None)
                .returning(OutboxRow.id)
                .execution_options(synchronize_session=False)
            )
        if marked is None:
            log.warning(
                "notice %s was delivered after its lease ran out; another worker may deliver it too",
                row_id,
            )

    async def _record_unrecorded_sends(self) -> None:
        for row_id, sent in list(self._unrecorded.items()):
            await self._record_sent(row_id, sent)  # a database still down raises: next round
            del self._unrecorded[row_id]

    async def _record_failure(
        self, notice: Notice, lease: datetime, reason: str, *, permanent: bool = False
    ) -> None:
        now = self.clock()
        reason = _shorten(reason)
        too_old = now - notice.created_at >= self.give_up_after
        too_many = notice.attempts >= self.max_attempts
        values: dict[str, Any] = {"last_error": reason, "locked_until": None}
        if permanent or too_old or too_many:
            values["status"] = "failed"
        else:
            delay = self.backoff[min(notice.attempts - 1, len(self.backoff) - 1)]
            values["next_attempt_at"] = now + timedelta(seconds=delay)
        try:
            async with self.database.session() as session:
                marked = await session.scalar(
                    update(OutboxRow)
                    .where(_held(notice.id, lease))
                    .values(**values)
                    .returning(OutboxRow.id)
                    .execution_options(synchronize_session=False)
                )
        except Exception:
            # The lease will lapse and the row be tried again; nothing is lost.
            log.exception("could not record the failed delivery of notice %s", notice.id)
            return
        if marked is None:
            log.warning("notice %s: lease ran out during a failed delivery", notice.id)
        elif "status" in values:
            if permanent:
                why = "permanent error"
            elif too_many:
                why = f"undelivered after {self.max_attempts} attempts"
            else:
                why = f"undelivered for {self.give_up_after}"
            log.error(
                "notice %s (%s to %s) failed for good after %d attempt(s), %s: %s",
                notice.id,
                notice.channel,
                notice.recipient,
                notice.attempts,
                why,
                reason,
            )
        else:
            log.warning(
                "notice %s (%s) not delivered, attempt %d, next try at %s: %s",
                notice.id,
                notice.channel,
                notice.attempts,
                values["next_attempt_at"].isoformat(timespec="seconds"),
                reason,
            )

    async def _warn_about_channels_without_sender(self) -> None:
        unserved = [c for c in CHANNELS if c not in self.senders and c not in self._warned_channels]
        if not unserved:
            return
        async with self.database.session(read_only=True) as session:
            waiting = (
                await session.scalars(
                    select(OutboxRow.channel)
                    .distinct()
                    .where(OutboxRow.status == "pending", OutboxRow.channel.in_(unserved))
                )
            ).all()
        for channel in waiting:
            self._warned_channels.add(channel)
            log.warning(
                "%s notices are waiting in the outbox but no %s channel is configured; "
                "they will be sent once it is",
                channel,
                channel,
            )


def _claimable(now: datetime) -> ColumnElement[bool]:
    return and_(
        OutboxRow.status == "pending",
        OutboxRow.next_attempt_at <= now,
        or_(OutboxRow.locked_until.is_(None), OutboxRow.locked_until <= now),
    )


def _held(row_id: int, lease: datetime) -> ColumnElement[bool]:
    return and_(OutboxRow.id == row_id, OutboxRow.status == "pending", OutboxRow.locked_until == lease)


def _shorten(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_ERROR_LENGTH else reason[: MAX_ERROR_LENGTH - 1] + "…"
