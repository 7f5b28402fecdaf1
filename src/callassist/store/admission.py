"""Which Media Stream may open which call, and as whom: the server's own record of Twilio's webhooks.

Twilio's signatures carry no nonce or time: a captured webhook and handshake can be replayed at will.
So nothing a stream says about itself is believed. The handshake's URL carries the call's token (see
`unclaimed`), so a replayed handshake of a call whose stream was opened is refused before accept.
Each signed webhook that answers a call records what Twilio
told us (caller number, SHAKEN/STIR attestation, called number, the owner's dial result), keyed by
CallSid; the stream only proves, with its token, which record it belongs to, and takes its identity
from there. A CallSid gets one stream, ever: the claim is a conditional UPDATE, so it holds across
processes and restarts, and a replayed webhook for a call whose stream was opened gets no token.

A caller waits on the claim, and on a loaded server SQLite's write lock can take seconds: writers
of a process queue for it (store/db.py), and at 200 calls a stream waited over 5 s and was refused.
So on SQLite the process that issued a token keeps the record as it issued it, in memory, until the
token expires: at `start` the store is only read (a WAL read never waits for the write lock), the
stream is admitted at once, single use enforced in memory, and the conditional UPDATE follows in the
background. Until it lands, memory refuses replays (webhooks and handshakes) as the store would; a
claim not stored yet is kept in memory past the size cap; the server waits for these UPDATEs when it
stops. Two processes on one SQLite file (unusual: the CLI serves no streams) could both read the
record unclaimed in the same instant: the UPDATE then finds the other stream's claim, and that call
learns it (`Admission.claimed_elsewhere`) and is ended. PostgreSQL needs none of this (no write
lock to wait for, and several processes are plausible): there the UPDATE itself admits the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.store.db import Database
from callassist.store.models import CallRow, StreamAdmissionRow, utc_now
from callassist.telephony.signature import StreamTokens

log = logging.getLogger(__name__)

# Twilio's values are short; anything longer is not Twilio's and must not break a column's limit.
_MAX_NUMBER = 64
_MAX_STIR = 64
_MAX_DIAL = 32
_MAX_SID = 64
MAX_REMEMBERED = 10_000  # issued tokens kept in memory (a call's entry lives as long as its token)
DURABLE_RETRY_S = (0.2, 1.0, 3.0, 10.0)  # a claim's UPDATE that failed is tried again after these


@dataclass(frozen=True, slots=True)
class WebhookFacts:
    """What one signed webhook said about its call."""

    caller_number: str | None
    called_number: str | None
    stir_verstat: str | None
    dial_status: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """A stream admitted for its call, with the identity Twilio's webhooks gave that call."""

    call_sid: str
    caller_number: str | None
    called_number: str | None
    stir_verstat: str | None
    dial_status: str | None
    # Admitted from memory (SQLite): True once the claim's UPDATE found another stream had the record
    # (the call must end), False once it is stored (or could not be: logged). None: by the store.
    claimed_elsewhere: asyncio.Task[bool] | None = field(default=None, compare=False)

    @property
    def attested(self) -> bool:
        """The carrier vouches for the caller ID (SHAKEN/STIR full attestation, level A)."""
        return (self.stir_verstat or "").startswith("TN-Validation-Passed-A")


class Refusal(StrEnum):
    token = "token"  # missing, forged, for another call, or expired
    used = "used"  # this call already had its stream (or no webhook of ours issued that token)


class Spent(StrEnum):
    """Why a webhook gets no stream token."""

    streamed = "streamed"  # the call's stream was opened already
    expired = "expired"  # its token was issued long ago and never used


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


@dataclass(slots=True)
class _Issued:
    """A token this process issued, with the call's record as it stood then."""

    issued: int
    admission: Admission
    claimed: bool = False  # by a stream of this process
    stored: bool = False  # that claim's UPDATE is done (or given up)


class StreamAdmissions:
    def __init__(self, database: Database, tokens: StreamTokens) -> None:
        self._database = database
        self._tokens = tokens
        self._issued: OrderedDict[str, _Issued] = OrderedDict()  # by CallSid, oldest first
        self._from_memory = database.dialect_name == "sqlite"  # see the module's docstring
        self._storing: set[asyncio.Task[bool]] = set()  # claims' UPDATEs under way

    async def note(self, call_sid: str, facts: WebhookFacts) -> Spent | None:
        """Record a webhook that issues no token yet (the owner is rung first). Spent if the call's
        stream was opened already: a replay."""
        if self._claimed_here(call_sid):
            return Spent.streamed
        async with self._database.session() as session:
            row = await self._row(session, call_sid, facts)
            streamed = row.stream_started_at is not None
        # Claimed in memory while this waited for the write lock: a replay all the same.
        return Spent.streamed if streamed or self._claimed_here(call_sid) else None

    async def issue(self, call_sid: str, facts: WebhookFacts) -> str | Spent:
        """The stream token for this call, or why there is none.

        The first token-issuing webhook fixes the record (identity and issue time); a repeat before
        the stream opens gets the same token back (still good for one stream only), never a new one.
        """
        if self._claimed_here(call_sid):
            return Spent.streamed
        async with self._database.session() as session:
            row = await self._row(session, call_sid, facts)
            if row.stream_started_at is not None:
                return Spent.streamed
            if row.token_issued is None:
                if await self._call_recorded(session, call_sid):
                    return Spent.streamed  # a call from before this table existed
                row.dial_status = _clip(facts.dial_status, _MAX_DIAL)
                token = self._tokens.issue(call_sid)
                row.token_issued = int(token.partition(".")[0])
            elif self._tokens.expired(row.token_issued):
                return Spent.expired
            else:
                token = self._tokens.issue(call_sid, issued=row.token_issued)
            issued = row.token_issued
            admission = Admission(
                call_sid, row.caller_number, row.called_number, row.stir_verstat, row.dial_status
            )
        if self._claimed_here(call_sid):  # while this waited for the write lock
            return Spent.streamed
        if self._from_memory:
            self._remember(call_sid, issued, admission)  # committed: the token may be given out
        return token

    async def never_streamed(self, call_sid: str) -> bool:
        """Our webhook connected this call to a stream that never became a call (refused before
        `start`, no `start`, a stream error): its caller is still owed an answer."""
        if self._claimed_here(call_sid):
            return False
        async with self._database.session(read_only=True) as session:
            found = await session.execute(
                select(StreamAdmissionRow.stream_started_at).where(StreamAdmissionRow.call_sid == call_sid)
            )
            row = found.first()
        return row is not None and row[0] is None

    async def unclaimed(self, call_sid: str, token: str) -> Refusal | None:
        """Whether a stream handshake for this call and token may be accepted: the token is ours, for
        this call, not expired, and no stream has claimed it yet (`claim`, at `start`, still decides).
        A forged or expired token is refused before the store is asked."""
        issued = self._tokens.verify(call_sid, token)
        if issued is None:
            return Refusal.token
        if self._claimed_here(call_sid):
            return Refusal.used
        return None if await self._unclaimed_in_store(call_sid, issued) else Refusal.used

    async def claim(self, call_sid: str, token: str, stream_sid: str) -> Admission | Refusal:
        """Admit the stream that carries this call's token, once. A forged or expired token is
        refused before the store is asked. A token this process issued is claimed in memory at once,
        and in the store in the background (see the module's docstring)."""
        issued = self._tokens.verify(call_sid, token)
        if issued is None:
            return Refusal.token
        here = self._issued.get(call_sid)
        if here is not None and here.issued == issued:
            if here.claimed:
                return Refusal.used
            # Read, not written: another process (or a restart) may have claimed it in the store.
            unclaimed = await self._unclaimed_in_store(call_sid, issued)
            if not unclaimed or here.claimed:  # or a stream of this process, during that read
                return Refusal.used
            here.claimed = True
            self._issued[call_sid] = here  # kept until stored, even if it was evicted meanwhile
            storing = asyncio.create_task(self._store_claim(here, call_sid, stream_sid), name="claim")
            self._storing.add(storing)
            storing.add_done_callback(self._storing.discard)
            return replace(here.admission, claimed_elsewhere=storing)
        claimed = await self._update_claim(call_sid, issued, stream_sid)
        if claimed is None:
            return Refusal.used
        return Admission(call_sid, *claimed)

    async def settled(self, within_s: float | None = None) -> bool:
        """Wait for the claims' UPDATEs under way (at shutdown, before the store closes); False if
        some were not done within `within_s` (then logged and cancelled)."""
        try:
            async with asyncio.timeout(within_s):
                while self._storing:
                    await asyncio.wait(set(self._storing))
        except TimeoutError:
            log.error("%d stream claim(s) not stored at shutdown", len(self._storing))
            for task in list(self._storing):
                task.cancel()
            await asyncio.wait(set(self._storing))
            return False
        return True

    async def _store_claim(self, here: _Issued, call_sid: str, stream_sid: str) -> bool:
        """The claim made in memory, stored: True if another stream had the record first."""
        try:
            for delay in (0.0, *DURABLE_RETRY_S):
                await asyncio.sleep(delay)
                try:
                    return await self._update_claim(call_sid, here.issued, stream_sid) is None
                except Exception as exc:
                    failure = exc
            log.error(
                "call %s: its stream's claim could not be stored (%s): only this process refuses a replay",
                call_sid,
                type(failure).__name__,
            )
            return False
        finally:
            here.stored = True

    async def _unclaimed_in_store(self, call_sid: str, issued: int) -> bool:
        async with self._database.session(read_only=True) as session:
            found = await session.execute(
                select(StreamAdmissionRow.call_sid).where(
                    StreamAdmissionRow.call_sid == call_sid,
                    StreamAdmissionRow.token_issued == issued,
                    StreamAdmissionRow.stream_started_at.is_(None),
                )
            )
            return found.first() is not None

    async def _update_claim(
        self, call_sid: str, issued: int, stream_sid: str
    ) -> tuple[str | None, str | None, str | None, str | None] | None:
        """The conditional UPDATE: the record's facts if this stream claimed it, None if taken."""
        async with self._database.session() as session:
            result = await session.execute(
                update(StreamAdmissionRow)
                .where(
                    StreamAdmissionRow.call_sid == call_sid,
                    StreamAdmissionRow.token_issued == issued,
                    StreamAdmissionRow.stream_started_at.is_(None),
                )
                .values(stream_started_at=utc_now(), stream_sid=_clip(stream_sid, _MAX_SID))
                .returning(
                    StreamAdmissionRow.caller_number,
                    StreamAdmissionRow.called_number,
                    StreamAdmissionRow.stir_verstat,
                    StreamAdmissionRow.dial_status,
                )
                .execution_options(synchronize_session=False)
            )
            claimed = result.one_or_none()
        return None if claimed is None else tuple(claimed)  # type: ignore[return-value]

    def _claimed_here(self, call_sid: str) -> bool:
        here = self._issued.get(call_sid)
        return here is not None and here.claimed

    def _remember(self, call_sid: str, issued: int, admission: Admission) -> None:
        """Keep an issued token's record until the token expires (at most MAX_REMEMBERED, but a
        claim is kept until it is stored)."""
        remembered = self._issued
        if call_sid not in remembered:
            remembered[call_sid] = _Issued(issued, admission)
        oldest = time.time() - self._tokens.ttl_seconds
        while remembered:
            first = next(iter(remembered.values()))
            if first.issued >= oldest and len(remembered) <= MAX_REMEMBERED:
                break
            if first.claimed and not first.stored:
                break
            remembered.popitem(last=False)

    async def _row(self, session: AsyncSession, call_sid: str, facts: WebhookFacts) -> StreamAdmissionRow:
        """The call's record, created by its first webhook and locked for this transaction. Facts a
        later webhook adds (e.g. an attestation only the first one lacked) fill gaps until the token
        is issued; nothing is overwritten."""
        values = {
            "caller_number": _clip(facts.caller_number, _MAX_NUMBER),
            "called_number": _clip(facts.called_number, _MAX_NUMBER),
            "stir_verstat": _clip(facts.stir_verstat, _MAX_STIR),
        }
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
        await session.execute(
            insert(StreamAdmissionRow)
            .values(call_sid=call_sid, first_seen_at=utc_now(), **values)
            .on_conflict_do_nothing(index_elements=[StreamAdmissionRow.call_sid])
        )
        row = (
            await session.execute(
                select(StreamAdmissionRow)
                .where(StreamAdmissionRow.call_sid == call_sid)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        if row.token_issued is None:
            for name, value in values.items():
                if value and getattr(row, name) is None:
                    setattr(row, name, value)
        return row

    @staticmethod
    async def _call_recorded(session: AsyncSession, call_sid: str) -> bool:
        found = await session.execute(select(CallRow.call_sid).where(CallRow.call_sid == call_sid))
        return found.first() is not None
