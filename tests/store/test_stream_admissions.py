"""The store's record of each call's signed webhooks: one stream per CallSid, ever, on SQLite and
PostgreSQL alike (the socket-level attacks are in tests/call/test_admission.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import AsyncMock

import pytest
from sqlalchemy import select, update

from callassist.store import admission as admission_module
from callassist.store.admission import Admission, Refusal, Spent, StreamAdmissions, WebhookFacts
from callassist.store.db import Database
from callassist.store.models import CallRow, StreamAdmissionRow
from callassist.telephony.signature import StreamTokens

OWNER = "+15550001111"
ATTESTED = WebhookFacts(OWNER, "+15559870000", "TN-Validation-Passed-A")
SID = "CA" + "a" * 32


async def test_a_token_admits_one_stream_with_the_webhooks_identity(database: Database) -> None:
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    token = await admissions.issue(SID, ATTESTED)
    assert isinstance(token, str)
    # A repeat before the stream opens gets the same token back, never a second one.
    assert await admissions.issue(SID, WebhookFacts("+15557777777", None, None)) == token
    assert await admissions.claim(SID, "1.forged", "MZ1") is Refusal.token
    assert await admissions.claim("CA" + "b" * 32, token, "MZ1") is Refusal.token
    assert await admissions.claim(SID, token, "MZ1") == Admission(
        SID, OWNER, "+15559870000", "TN-Validation-Passed-A", None
    )
    assert await admissions.claim(SID, token, "MZ2") is Refusal.used
    await admissions.settled()  # the claim, made in memory, is stored
    # Spent for good: no token from any webhook for this call, also from a new process (a restart).
    restarted = StreamAdmissions(database, StreamTokens("secret"))
    assert await restarted.claim(SID, token, "MZ3") is Refusal.used
    assert await restarted.issue(SID, ATTESTED) is Spent.streamed
    assert await restarted.note(SID, ATTESTED) is Spent.streamed


async def test_the_first_webhook_fixes_the_identity_later_ones_only_fill_gaps(database: Database) -> None:
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    # The owner was rung first: the incoming webhook is noted, the dial result issues the token.
    assert await admissions.note(SID, WebhookFacts("+15551230000", "+15559870000", None)) is None
    token = await admissions.issue(
        SID, WebhookFacts(OWNER, "+15550000000", "TN-Validation-Passed-A", dial_status="no-answer")
    )
    assert isinstance(token, str)
    admitted = await admissions.claim(SID, token, "MZ1")
    assert admitted == Admission(SID, "+15551230000", "+15559870000", "TN-Validation-Passed-A", "no-answer")
    assert isinstance(admitted, Admission) and admitted.attested
    await admissions.settled()


async def test_an_expired_unused_token_is_not_renewed(database: Database) -> None:
    tokens = StreamTokens("secret", ttl_seconds=60)
    admissions = StreamAdmissions(database, tokens)
    assert isinstance(await admissions.issue(SID, ATTESTED), str)
    async with database.session() as session:
        await session.execute(update(StreamAdmissionRow).values(token_issued=int(time.time()) - 3600))
    assert await admissions.issue(SID, ATTESTED) is Spent.expired
    old = tokens.issue(SID, issued=int(time.time()) - 3600)
    assert await admissions.claim(SID, old, "MZ1") is Refusal.token


async def test_a_call_recorded_before_this_table_existed_gets_no_token(database: Database) -> None:
    async with database.session() as session:
        session.add(CallRow(call_sid=SID, started_at=datetime(2026, 1, 5, tzinfo=UTC)))
    assert await StreamAdmissions(database, StreamTokens("s")).issue(SID, ATTESTED) is Spent.streamed


async def test_concurrent_claims_admit_exactly_one_stream(database: Database) -> None:
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    tokens = await asyncio.gather(*(admissions.issue(SID, ATTESTED) for _ in range(5)))
    assert len(set(tokens)) == 1 and isinstance(tokens[0], str)
    outcomes = await asyncio.gather(*(admissions.claim(SID, tokens[0], f"MZ{i}") for i in range(8)))
    assert sum(isinstance(outcome, Admission) for outcome in outcomes) == 1
    assert outcomes.count(Refusal.used) == 7
    await admissions.settled()


async def test_values_longer_than_twilios_do_not_break_the_columns(database: Database) -> None:
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    token = await admissions.issue(SID, WebhookFacts("+1" * 100, "x" * 500, "A" * 500, dial_status="b" * 99))
    assert isinstance(token, str)
    admitted = await admissions.claim(SID, token, "MZ" * 500)
    assert isinstance(admitted, Admission)
    assert len(admitted.stir_verstat or "") == 64 and len(admitted.dial_status or "") == 32
    await admissions.settled()
    async with database.session(read_only=True) as session:
        row = (await session.execute(select(StreamAdmissionRow))).scalar_one()
    assert row.stream_sid is not None and len(row.stream_sid) == 64


def memory_path_or_skip(database: Database) -> None:
    if database.dialect_name != "sqlite":
        pytest.skip("on PostgreSQL the store's UPDATE admits a stream at once (no write lock to wait for)")


@contextlib.asynccontextmanager
async def store_busy(database: Database) -> AsyncIterator[None]:
    """Another writer holds SQLite's write lock, as on a loaded server."""
    async with database.session() as session:
        await session.execute(
            update(StreamAdmissionRow).where(StreamAdmissionRow.call_sid == "none").values(stream_sid=None)
        )
        yield


async def test_the_issuing_process_admits_its_stream_without_waiting_for_the_write_lock(
    database: Database,
) -> None:
    memory_path_or_skip(database)
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    token = await admissions.issue(SID, ATTESTED)
    assert isinstance(token, str)
    async with store_busy(database):
        admitted = await asyncio.wait_for(admissions.claim(SID, token, "MZ1"), 2.0)
        assert admitted == Admission(SID, OWNER, "+15559870000", "TN-Validation-Passed-A", None)
        assert isinstance(admitted, Admission) and admitted.claimed_elsewhere is not None
        # Until the claim is stored, this process's memory refuses every replay the store would.
        assert await admissions.claim(SID, token, "MZ2") is Refusal.used
        assert await admissions.unclaimed(SID, token) is Refusal.used
        assert await admissions.never_streamed(SID) is False
        replayed_webhooks = [
            asyncio.create_task(admissions.issue(SID, ATTESTED)),
            asyncio.create_task(admissions.note(SID, ATTESTED)),
        ]
        assert not admitted.claimed_elsewhere.done()  # still waiting for the write lock
    assert await asyncio.wait_for(admitted.claimed_elsewhere, 10.0) is False
    assert await asyncio.gather(*replayed_webhooks) == [Spent.streamed, Spent.streamed]
    async with database.session(read_only=True) as session:
        row = (await session.execute(select(StreamAdmissionRow))).scalar_one()
    assert row.stream_started_at is not None and row.stream_sid == "MZ1"


async def test_a_webhook_replayed_while_the_stream_is_claimed_gets_no_token(database: Database) -> None:
    memory_path_or_skip(database)
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    token = await admissions.issue(SID, ATTESTED)
    assert isinstance(token, str)
    async with store_busy(database):
        # The replay waits for the write lock; the real stream's `start` is claimed meanwhile.
        replayed = asyncio.create_task(admissions.issue(SID, ATTESTED))
        noted = asyncio.create_task(admissions.note(SID, ATTESTED))
        await asyncio.sleep(0)
        assert isinstance(await admissions.claim(SID, token, "MZ1"), Admission)
    assert await replayed is Spent.streamed
    assert await noted is Spent.streamed
    await admissions.settled()


async def test_a_stream_another_process_claimed_is_refused_by_the_issuing_one(database: Database) -> None:
    issuing = StreamAdmissions(database, StreamTokens("secret"))
    token = await issuing.issue(SID, ATTESTED)
    assert isinstance(token, str)
    # A replayed handshake reached another process sharing the store, and claimed the record first.
    other = StreamAdmissions(database, StreamTokens("secret"))
    theirs = await other.claim(SID, token, "MZ-replay")
    assert isinstance(theirs, Admission) and theirs.claimed_elsewhere is None
    assert await issuing.unclaimed(SID, token) is Refusal.used
    assert await issuing.claim(SID, token, "MZ1") is Refusal.used


async def test_a_claim_the_store_finds_taken_says_so(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_path_or_skip(database)
    issuing = StreamAdmissions(database, StreamTokens("secret"))
    token = await issuing.issue(SID, ATTESTED)
    assert isinstance(token, str)
    other = StreamAdmissions(database, StreamTokens("secret"))
    assert isinstance(await other.claim(SID, token, "MZ-replay"), Admission)
    # The issuing process read the record an instant before the other process's UPDATE.
    monkeypatch.setattr(issuing, "_unclaimed_in_store", AsyncMock(return_value=True))
    ours = await issuing.claim(SID, token, "MZ1")
    assert isinstance(ours, Admission) and ours.claimed_elsewhere is not None
    assert await asyncio.wait_for(ours.claimed_elsewhere, 10.0) is True


async def test_concurrent_claims_across_processes_admit_exactly_one_stream(database: Database) -> None:
    issuing = StreamAdmissions(database, StreamTokens("secret"))
    token = await issuing.issue(SID, ATTESTED)
    assert isinstance(token, str)
    processes = [issuing] + [StreamAdmissions(database, StreamTokens("secret")) for _ in range(4)]
    outcomes = await asyncio.gather(*(p.claim(SID, token, f"MZ{i}") for i, p in enumerate(processes)))
    await issuing.settled()
    kept = [
        outcome
        for outcome in outcomes
        if isinstance(outcome, Admission)
        and (outcome.claimed_elsewhere is None or not outcome.claimed_elsewhere.result())
    ]
    assert len(kept) == 1


async def test_memory_holds_only_live_tokens(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    memory_path_or_skip(database)
    monkeypatch.setattr(admission_module, "MAX_REMEMBERED", 2)
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    stored = asyncio.Event()
    store = admissions._update_claim

    async def slow_store(*args: Any) -> Any:
        await stored.wait()
        return await store(*args)

    monkeypatch.setattr(admissions, "_update_claim", slow_store)
    sids = [f"CA{i:032d}" for i in range(4)]
    tokens = [str(await admissions.issue(sid, ATTESTED)) for sid in sids[:2]]
    assert isinstance(await admissions.claim(sids[1], tokens[1], "MZ"), Admission)  # not stored yet
    tokens += [str(await admissions.issue(sid, ATTESTED)) for sid in sids[2:]]
    # Past the cap the oldest is forgotten, but not a claim the store doesn't have yet.
    assert await admissions.claim(sids[1], tokens[1], "MZ-replay") is Refusal.used
    stored.set()
    first = await admissions.claim(sids[0], tokens[0], "MZ")
    assert isinstance(first, Admission) and first.claimed_elsewhere is None  # admitted by the store
    await admissions.settled()
    for sid, token in zip(sids[:2], tokens, strict=False):  # both claims stored
        assert (
            await StreamAdmissions(database, StreamTokens("secret")).claim(sid, token, "MZ2") is Refusal.used
        )
