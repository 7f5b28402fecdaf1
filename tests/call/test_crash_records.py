"""A SIGKILL right after the caller is told "booked" loses nothing: the booking's record is in the
store, the next start closes the call and the owner gets the notice about the booking."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from callassist.simulator import CallerSimulator
from callassist.simulator.audio import tone
from callassist.store.db import Database
from callassist.store.models import CalendarEventRow, OutboxRow, ToolCallRow
from callassist.store.records import get_call
from tests.fakes.realtime_server import FakeRealtimeServer, Reply, Say, Script, UseTool
from tests.support.process import ChildProcess, callassist_command, free_port
from tests.support.server import AUTH_TOKEN
from tests.support.smtp import SmtpTestServer

CALLER = "+15551230000"
OWNER_EMAIL = "dana@example.com"


def serve_env(data_dir: Path, port: int, fake: FakeRealtimeServer, smtp: SmtpTestServer) -> dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    return {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.base_url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PUBLIC_BASE_URL": base,
        "CALLASSIST_PORT": str(port),
        "CALLASSIST_DATA_DIR": str(data_dir),
        "OWNER_NAME": "Dana",
        "CALLASSIST_TIMEZONE": "America/New_York",
        # Every day is a working day, so "tomorrow at 2 pm" is bookable whatever day the suite runs.
        "CALLASSIST_WORKING_HOURS": "Mon-Sun 09:00-17:00",
        "CALLASSIST_SMTP_URL": smtp.url(to=OWNER_EMAIL, sender="assistant@example.com"),
    }


async def stored(database: Database, call_sid: str) -> dict[str, Any]:
    async with database.session(read_only=True) as session:
        tools = list(await session.scalars(select(ToolCallRow).where(ToolCallRow.call_sid == call_sid)))
        events = list(await session.scalars(select(CalendarEventRow)))
        notices = list(await session.scalars(select(OutboxRow).where(OutboxRow.call_sid == call_sid)))
        detail = await get_call(session, call_sid)
    return {"tools": tools, "events": events, "notices": notices, "detail": detail}


async def test_a_sigkill_right_after_the_booking_is_confirmed_keeps_its_record_and_notice(
    tmp_path: Path,
) -> None:
    intent = {"title": "Meeting with Alex Kim", "start": "tomorrow 14:00", "caller_name": "Alex Kim"}
    script = Script(
        replies=[
            Reply([Say("Hello, Dana's assistant.", audio=tone(300, 400))]),
            Reply([UseTool("create_event", intent=intent)]),
            # The confirmation is still being spoken when the server dies.
            Reply([Say("Booked for tomorrow at two.", audio=tone(8000, 460))]),
        ],
        transcripts=["This is Alex Kim, can I meet Dana tomorrow at two?"],
    )
    data_dir = tmp_path / "data"
    async with FakeRealtimeServer(script) as fake, SmtpTestServer() as smtp:
        port = free_port()
        serve = await ChildProcess(
            callassist_command("serve"), env=serve_env(data_dir, port, fake, smtp)
        ).start()
        try:
            await serve.wait_until_serving()
            simulator = CallerSimulator(f"http://127.0.0.1:{port}", auth_token=AUTH_TOKEN)
            call = await simulator.place_call(from_number=CALLER)
            await call.wait_until_quiet(quiet_ms=150, timeout=10)
            await call.say(tone(800, 300))
            # The moment the model has the tool's output (it will tell the caller "booked"): kill.
            await fake.wait_until(lambda: bool(fake.sessions[0].function_outputs), timeout=15)
            serve.send_signal(signal.SIGKILL)
            assert await serve.wait(timeout=5) == -signal.SIGKILL
        finally:
            await serve.stop()
        [(_, output)] = fake.sessions[0].function_outputs
        assert json.loads(output)["ok"] is True, output

        database = Database.from_url(f"sqlite+aiosqlite:///{data_dir / 'callassist.db'}")
        try:
            killed = await stored(database, call.call_sid)
            # The booking is in the calendar, and so is the record of it, as the caller was told.
            [event] = killed["events"]
            [tool] = killed["tools"]
            assert (tool.name, tool.ok) == ("create_event", True)
            assert json.loads(tool.result)["event"]["id"] == event.id
            assert killed["detail"].call.ended_at is None  # the end was never written

            # The next start closes the call and tells the owner what was done.
            restarted = await ChildProcess(
                callassist_command("serve"), env=serve_env(data_dir, free_port(), fake, smtp)
            ).start()
            try:
                await restarted.wait_until_serving()
                assert "closed 1 call record(s) left open" in restarted.output
                [mail] = await smtp.wait_for_mail(1, within_s=15)
                await restarted.wait_for_line("delivered by email")  # and marked sent
            finally:
                await restarted.stop()
            after = await stored(database, call.call_sid)
        finally:
            await database.close()

    detail = after["detail"]
    assert detail.call.outcome == "interrupted" and detail.call.booking_count == 1
    assert [(n.channel, n.status) for n in after["notices"]] == [("email", "sent")]
    assert mail.rcpt_tos == (OWNER_EMAIL,)
    assert "Booking from Alex Kim (+15551230000)" in mail.subject
    [booked] = [line for line in mail.text.splitlines() if line.startswith("Booked: ")]
    assert booked.endswith(', one hour ("Meeting with Alex Kim").'), booked
