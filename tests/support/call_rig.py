"""A Call in process for tests: an in-memory media leg, a scripted engine, a real record writer.

`call_rig(database, settings=..., owner_line=...)` runs one call until the test is over; the test
plays the model (typed engine events) and the caller (frames, keys, hang-up, what was heard).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI

from callassist.call.call import Call
from callassist.call.deps import CallDeps, EndReason, MemoryLoader
from callassist.call.events import CallEvent, CallEvents
from callassist.call.journal import CallJournal
from callassist.call.recorder import CallRecorder
from callassist.call.transfer import OwnerLine
from callassist.engine.events import AudioOut, EngineLost, ResponseFinished, ResponseStarted, SpokenItem
from callassist.media.memory import MemoryLeg
from callassist.realtime.config import CallContext
from callassist.realtime.pricing import PriceTable
from callassist.settings import Settings
from callassist.store.admission import StreamAdmissions
from callassist.store.db import Database
from callassist.store.writer import RecordWriter
from callassist.telephony.signature import StreamTokens
from callassist.tools import all_tools
from tests.support.scripted_engine import ScriptedEngine

CHUNK = bytes(range(256)) * 2  # 512 bytes of μ-law: 64 ms
B64 = base64.b64encode(CHUNK).decode("ascii")
CALL_SID = "CAtest"
CALLER = "+15550100"


@dataclass
class Rig:
    call: Call
    leg: MemoryLeg
    engine: ScriptedEngine
    events: list[CallEvent]
    run: asyncio.Task[EndReason]
    writer: RecordWriter

    async def until(self, what: str, count: int = 1) -> list[tuple[Any, ...]]:
        return await self.engine.wait_for(what, count)

    async def greeted(self) -> None:
        """The greeting was said and heard: the floor is free."""
        self.engine.emit(*speaks("r0", "i0", request=self.engine.setups[0].greeting))
        await self.settle()
        self.leg.played()

    async def settle(self) -> None:
        """Until the call has handled every event emitted so far."""
        await self.engine.handled()


def speaks(response: str, item: str, words: str = "Hello there", *, request: str | None = None) -> list[Any]:
    return [
        ResponseStarted(response, request),
        AudioOut(response, item, B64),
        AudioOut(response, item, B64),
        ResponseFinished(response, request, "completed", spoken=(SpokenItem(item, words, True),)),
    ]


def settings_for(**values: Any) -> Settings:
    return Settings(_env_file=None, owner_name="Dana", openai_api_key="sk-test", **values)


@contextlib.asynccontextmanager
async def call_rig(
    database: Database,
    *,
    settings: Settings | None = None,
    owner_line: OwnerLine | None = None,
    context: CallContext | None = None,
    load_memory: MemoryLoader | None = None,
) -> AsyncIterator[Rig]:
    settings = settings or settings_for()
    writer = RecordWriter(database)
    writer.start()
    events: list[CallEvent] = []
    bus = CallEvents(events.append)
    deps = CallDeps(
        settings=settings,
        openai=AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9"),
        admissions=StreamAdmissions(database, StreamTokens(secret=None)),
        tools=all_tools(transfer=settings.transfer if settings.transfer_possible else "never"),
        records=writer,
        prices=PriceTable.from_json(None),
        events=bus,
        owner_line=owner_line,
        load_memory=load_memory,
    )
    log = logging.getLogger("tests.call_core")
    recorder = CallRecorder(writer, CALL_SID)
    journal = CallJournal(recorder, deps.prices, model="m", transcription_model="t", logger=log, events=bus)
    leg, engine = MemoryLeg(), ScriptedEngine()
    call = Call(
        CALL_SID, leg, engine, deps, context or CallContext(caller_number=CALLER), journal, logger=log
    )
    recorder.call_started(
        started_at=call.started_at,
        stream_sid="MZ1",
        caller_number=CALLER,
        called_number=None,
        caller_name=None,
        is_owner=False,
        dial_status=None,
        model="m",
    )
    connecting = asyncio.create_task(engine.connect())
    run = asyncio.create_task(call.run(connecting))
    rig = Rig(call, leg, engine, events, run, writer)
    async with asyncio.timeout(2):
        await engine.configured.wait()
    try:
        yield rig
    finally:
        if not run.done():
            engine.emit(EngineLost("the test is over"))  # no summary, no waiting for transcripts
            leg.hang_up()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await run
        await writer.stop()
