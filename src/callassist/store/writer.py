"""The server's one writer of call records: what each call's CallRecorder hands it, committed in order.

What is queued within a tenth of a second goes into one transaction, and rows for the same table go
in one executemany (with a hundred live calls the writes cost a fifth of the CPU otherwise). A
transaction costs about as much as the rows in it (on SQLite, eleven round trips to aiosqlite's
thread for two tables): while records arrive faster than BUSY_ROWS_PER_S (dozens of live calls),
the writer waits BUSY_LINGER_S instead, so there are a third as many. A few calls never reach that
rate, and a crash loses at most the linger's worth of records either way. A failed
batch is retried job by job so one bad write can't take the others with it. A job someone waits for
(`WriteJob.done`) is committed without lingering for others.

Failed writes are logged by kind and by the database's own error, never with the statement's
parameters (they hold what callers said).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.store.db import Database

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.1, 0.5, 2.0, 5.0)
MAX_BATCH = 512
LINGER_S = 0.1  # how long the writer waits for more records to share a transaction
BUSY_ROWS_PER_S = 30  # records a second (about thirty live calls) from which the writer is busy
BUSY_LINGER_S = 0.3  # its wait while busy

Operation = Callable[[AsyncSession], Awaitable[Any]]


@dataclass
class WriteJob:
    """A plain insert (`table` + `values`: batched with others of its table), or an operation."""

    what: str
    operation: Operation | None
    done: asyncio.Future[Any] | None
    logger: logging.Logger | logging.LoggerAdapter[Any]
    table: Any = None
    values: dict[str, Any] | None = None

    async def run(self, session: AsyncSession) -> Any:
        if self.operation is None:
            await session.execute(insert(self.table), [self.values or {}])
            return None
        return await self.operation(session)


class RecordWriter:
    """The server's one writer of call records."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._queue: asyncio.Queue[WriteJob | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._written: deque[tuple[float, int]] = deque()  # (when, jobs) of the last second's batches

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="record-writer")

    def submit(self, job: WriteJob) -> None:
        self._queue.put_nowait(job)

    async def flushed(self, within_s: float) -> bool:
        """Wait until everything submitted so far is written (False if that took too long)."""
        barrier: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit(WriteJob("barrier", _nothing, barrier, log))
        try:
            await asyncio.wait_for(asyncio.shield(barrier), within_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, within_s: float = 10.0) -> None:
        """Write what is queued (bounded), then end."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), within_s)
        except TimeoutError:
            log.error("call records: %d write(s) not done at shutdown", self._queue.qsize())
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            # Let more records join this transaction, unless someone is waiting for the commit.
            now = asyncio.get_running_loop().time()
            deadline = now + (0 if first.done else self._linger(now))
            while len(batch) < MAX_BATCH:
                if self._queue.empty():
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0 or any(job.done for job in batch):
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    job = self._queue.get_nowait()
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            self._written.append((asyncio.get_running_loop().time(), len(batch)))
            await self._write(batch)

    def _linger(self, now: float) -> float:
        """LINGER_S, or BUSY_LINGER_S while BUSY_ROWS_PER_S or more records a second arrive."""
        written = self._written
        while written and written[0][0] < now - 1.0:
            written.popleft()
        return BUSY_LINGER_S if sum(jobs for _, jobs in written) >= BUSY_ROWS_PER_S else LINGER_S

    async def _write(self, batch: list[WriteJob]) -> None:
        try:
            results: list[Any] = []
            async with self._database.session() as session:
                pending: dict[Any, list[dict[str, Any]]] = {}
                for job in batch:
                    if job.operation is None:
                        pending.setdefault(job.table, []).append(job.values or {})
                        results.append(None)
                        continue
                    # An operation may depend on rows inserted before it: write those first.
                    await _insert_all(session, pending)
                    results.append(await job.operation(session))
                await _insert_all(session, pending)
        except Exception as exc:
            if len(batch) > 1:
                log.warning(
                    "call records: a batch of %d failed (%s); writing one by one",
                    len(batch),
                    database_error(exc),
                )
            for job in batch:
                _settle(job, await self._write_one(job))
            return
        for job, result in zip(batch, results, strict=True):
            _settle(job, result)

    async def _write_one(self, job: WriteJob) -> Any:
        last: BaseException | None = None
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            if delay:
                await asyncio.sleep(delay)
            try:
                async with self._database.session() as session:
                    return await job.run(session)
            except Exception as exc:
                last = exc
                job.logger.warning(
                    "call record: writing %s failed (attempt %d): %s",
                    job.what,
                    attempt + 1,
                    database_error(exc),
                )
        job.logger.error("call record: gave up writing %s", job.what)
        return last


def database_error(exc: BaseException) -> str:
    """A failed write for the log: the driver's own error, without SQLAlchemy's statement and
    parameters (which quote the row: a caller's words, name and number)."""
    original = getattr(exc, "orig", None)
    cause = original if isinstance(original, BaseException) else exc
    first_line = (str(cause).splitlines() or [""])[0][:200]
    if isinstance(exc, StatementError) and cause is exc:
        first_line = ""  # no driver error to quote: its own text would carry the parameters
    kind = type(cause).__name__
    return f"{kind}: {first_line}" if first_line else kind


async def _nothing(session: AsyncSession) -> None:
    return None


async def _insert_all(session: AsyncSession, pending: dict[Any, list[dict[str, Any]]]) -> None:
    """One executemany per table, in the order the tables first appeared."""
    for table, rows in pending.items():
        await session.execute(insert(table), rows)
    pending.clear()


def _settle(job: WriteJob, result: Any) -> None:
    if job.done is None or job.done.done():
        return
    if isinstance(result, BaseException):
        job.done.set_exception(result)
    else:
        job.done.set_result(result)
