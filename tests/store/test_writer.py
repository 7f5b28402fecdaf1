"""The record writer: batches, and how long it waits for more while busy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callassist.store.db import Database
from callassist.store.models import CallRow, TranscriptEntryRow
from callassist.store.writer import BUSY_LINGER_S, BUSY_ROWS_PER_S, LINGER_S, RecordWriter, WriteJob


def test_the_writer_waits_longer_only_while_records_arrive_fast(tmp_path: Path) -> None:
    writer = RecordWriter(Database.from_url(f"sqlite:///{tmp_path / 'never-opened.db'}"))
    assert writer._linger(100.0) == LINGER_S  # nothing written yet: a few calls' pace
    writer._written.extend([(99.2, BUSY_ROWS_PER_S // 2), (99.6, BUSY_ROWS_PER_S // 2)])
    assert writer._linger(100.0) == BUSY_LINGER_S
    assert writer._linger(100.3) == LINGER_S  # the first batch is over a second old: half the rate
    assert list(writer._written) == [(99.6, BUSY_ROWS_PER_S // 2)]


async def test_a_burst_of_records_is_one_transaction_and_all_of_it_is_kept(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'callassist.db'}")
    await database.upgrade()
    async with database.session() as session:
        session.add(CallRow(call_sid="CA1", started_at=datetime.now(UTC)))
    transactions = 0
    opened = database.session

    def counted(**options: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return opened(**options)

    database.session = counted  # type: ignore[method-assign]
    writer = RecordWriter(database)
    writer.start()
    try:
        for n in range(BUSY_ROWS_PER_S):
            row = {"call_sid": "CA1", "role": "caller", "text": f"line {n}", "item_id": f"item{n}"}
            row["spoken_at"] = datetime.now(UTC)
            table = TranscriptEntryRow.__table__
            writer.submit(WriteJob("turn", None, None, logging.getLogger(__name__), table=table, values=row))
        assert await writer.flushed(5)
    finally:
        await writer.stop()
    assert transactions <= 2  # the burst, and perhaps the barrier's own
    async with opened(read_only=True) as session:
        rows = (await session.execute(TranscriptEntryRow.__table__.select())).all()
    assert len(rows) == BUSY_ROWS_PER_S
    await database.close()
