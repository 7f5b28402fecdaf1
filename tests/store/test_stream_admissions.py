"""The store's record of each call's signed webhooks: one stream per CallSid, ever, on SQLite and
PostgreSQL alike (the socket-level attacks are in tests/call/test_admission.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

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


async def test_values_longer_than_twilios_do_not_break_the_columns(database: Database) -> None:
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    token = await admissions.issue(SID, WebhookFacts("+1" * 100, "x" * 500, "A" * 500, dial_status="b" * 99))
    assert isinstance(token, str)
    admitted = await admissions.claim(SID, token, "MZ" * 500)
    assert isinstance(admitted, Admission)
    assert len(admitted.stir_verstat or "") == 64 and len(admitted.dial_status or "") == 32


@contextlib.asynccontextmanager
async def store_busy(database: Database) -> AsyncIterator[None]:
    """The call's record locked by another writer (on SQLite: the write lock), as on a loaded server."""
    async with database.session() as session:
        await session.execute(
            select(StreamAdmissionRow).where(StreamAdmissionRow.call_sid == SID).with_for_update()
        )
        yield


async def test_the_issuing_process_admits_its_stream_without_waiting_for_the_store(
    database: Database,
) -> None:
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
        assert await admissions.issue(SID, ATTESTED) is Spent.streamed
        assert await admissions.note(SID, ATTESTED) is Spent.streamed
        assert await admissions.never_streamed(SID) is False
        assert not admitted.claimed_elsewhere.done()  # still waiting for the store
    assert await asyncio.wait_for(admitted.claimed_elsewhere, 10.0) is False
    async with database.session(read_only=True) as session:
        row = (await session.execute(select(StreamAdmissionRow))).scalar_one()
    assert row.stream_started_at is not None and row.stream_sid == "MZ1"


async def test_a_stream_another_process_claimed_first_is_told_so(database: Database) -> None:
    issuing = StreamAdmissions(database, StreamTokens("secret"))
    token = await issuing.issue(SID, ATTESTED)
    assert isinstance(token, str)
    # A replayed handshake reached another process sharing the store, and claimed the record first.
    other = StreamAdmissions(database, StreamTokens("secret"))
    theirs = await other.claim(SID, token, "MZ-replay")
    assert isinstance(theirs, Admission) and theirs.claimed_elsewhere is None
    ours = await issuing.claim(SID, token, "MZ1")
    assert isinstance(ours, Admission) and ours.claimed_elsewhere is not None
    assert await asyncio.wait_for(ours.claimed_elsewhere, 10.0) is True


async def test_memory_holds_only_live_tokens(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "MAX_REMEMBERED", 2)
    admissions = StreamAdmissions(database, StreamTokens("secret"))
    sids = [f"CA{i:032d}" for i in range(3)]
    tokens = [await admissions.issue(sid, ATTESTED) for sid in sids]
    # The oldest was forgotten: its stream is admitted by the store, the others from memory.
    outcomes = [
        await admissions.claim(sid, str(token), "MZ") for sid, token in zip(sids, tokens, strict=True)
    ]
    assert [isinstance(o, Admission) and o.claimed_elsewhere is None for o in outcomes] == [
        True,
        False,
        False,
    ]
    await admissions.settled()
    assert all(
        [
            await admissions.claim(sid, str(token), "MZ2") is Refusal.used
            for sid, token in zip(sids, tokens, strict=True)
        ]
    )
