"""A caller's hostile name can't make the owner's e-mail undeliverable, and a notice that can't be
delivered ends as `failed` with its reason (shown with its call and in the failed list) after a
bounded number of attempts, never retried for days."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from callassist.call.aftercall import CallFacts, owner_notice
from callassist.notify.notices import build_notifiers, close_notifiers, enqueue_call_notices
from callassist.notify.outbox import DeliveryError, Notice, OutboxWorker, Sender, enqueue
from callassist.settings import Settings
from callassist.store.db import Database
from callassist.store.models import CallRow
from callassist.store.records import get_call, list_notices
from callassist.tools.registry import ToolOutcome
from tests.notify.scenario import OWNER_EMAIL, ManualClock, notifying_settings, outbox_rows
from tests.support.smtp import SmtpTestServer

NY = ZoneInfo("America/New_York")
CALLER = "+15557654321"
# What a caller might give as their name to reach into the owner's mail headers.
HOSTILE_NAME = "Alex\r\nBcc: attacker@example.com\r\nX-Evil: 1\u2028Kim"
MESSAGE = "Please call me back about the contract,\nbefore Friday. Café 5 €."


def hostile_call_notice() -> tuple[str, str]:
    facts = CallFacts(
        caller_number=CALLER,
        caller_name=HOSTILE_NAME,
        started_at=datetime(2026, 11, 24, 15, 0, tzinfo=UTC),
        duration_s=75,
        summary=None,
        tool_outcomes=[
            ToolOutcome(
                "take_message",
                "call_1",
                json.dumps({"caller_name": HOSTILE_NAME, "message": MESSAGE, "urgency": "normal"}),
                {"ok": True, "callback_number": CALLER},
                0.2,
            )
        ],
    )
    notice = owner_notice(facts, NY)
    assert notice is not None
    return notice


@contextlib.asynccontextmanager
async def email_notifiers(smtp: SmtpTestServer) -> AsyncIterator[tuple[Settings, dict[str, Sender]]]:
    """Settings that mail the owner through `smtp`, and their senders (closed on the way out)."""
    settings = notifying_settings(None, smtp)
    senders = build_notifiers(settings)
    try:
        yield settings, senders
    finally:
        await close_notifiers(senders)


async def enqueue_email(database: Database, call_sid: str, recipient: str, subject: str, body: str) -> None:
    async with database.session() as session:
        await enqueue(
            session,
            dedupe_key=f"{call_sid}:email",
            channel="email",
            recipient=recipient,
            subject=subject,
            body=body,
            call_sid=call_sid,
        )


async def test_a_hostile_name_reaches_the_owner_by_email_intact_in_the_body_and_safe_in_the_headers(
    database: Database, clock: ManualClock, smtp: SmtpTestServer
) -> None:
    subject, text = hostile_call_notice()
    async with email_notifiers(smtp) as (settings, senders):
        async with database.session() as session:
            await enqueue_call_notices(
                session, settings, call_sid="CA1", text=text, subject=subject, sms_sender=None
            )
        assert await OutboxWorker(database, senders, clock=clock).run_once() == 1
    [mail] = smtp.received
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert mail.rcpt_tos == (OWNER_EMAIL,)  # no Bcc smuggled in
    assert mail.message["Bcc"] is None and mail.message["X-Evil"] is None
    # (strip: the email package may fold a long subject before its first word)
    assert mail.subject.strip() == "Message from Alex Bcc: attacker@example.com X-Evil: 1 Kim (+15557654321)"
    # The body says what the caller said (one line each), and the name as they gave it.
    assert mail.text.rstrip("\n") == text
    assert "Alex Bcc: attacker@example.com X-Evil: 1 Kim (+15557654321)" in mail.text
    assert 'Message: "Please call me back about the contract, before Friday. Café 5 €."' in mail.text


async def test_a_notice_queued_with_a_line_break_in_its_subject_is_still_delivered(
    database: Database, clock: ManualClock, smtp: SmtpTestServer
) -> None:
    """Rows written before names were normalised: the mailer writes the subject as one line."""
    async with email_notifiers(smtp) as (_, senders):
        await enqueue_email(
            database,
            "CA2",
            OWNER_EMAIL,
            f"Message from {HOSTILE_NAME}",
            f"Call from {HOSTILE_NAME}.\n{MESSAGE}",
        )
        assert await OutboxWorker(database, senders, clock=clock).run_once() == 1
    [mail] = smtp.received
    assert mail.subject.strip() == "Message from Alex Bcc: attacker@example.com X-Evil: 1 Kim"
    assert mail.rcpt_tos == (OWNER_EMAIL,) and mail.message["Bcc"] is None
    assert MESSAGE in mail.text.replace("\r\n", "\n")
    [row] = await outbox_rows(database)
    assert row.status == "sent"


async def test_a_notice_that_cannot_be_an_email_fails_at_once_with_its_reason(
    database: Database, clock: ManualClock, smtp: SmtpTestServer
) -> None:
    async with email_notifiers(smtp) as (_, senders):
        not_an_address = f"{OWNER_EMAIL}\r\nBcc: attacker@example.com"
        await enqueue_email(database, "CA3", not_an_address, "Message", "Hello")
        worker = OutboxWorker(database, senders, clock=clock, backoff=(5,))
        assert await worker.run_once() == 1
        clock.advance(hours=1)
        assert await worker.run_once() == 0  # never again
    assert smtp.received == []
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error is not None and row.last_error.startswith(
        "the notice can't be written as an e-mail"
    )


async def test_a_mail_server_that_refuses_the_message_for_good_fails_it_at_once(
    database: Database, clock: ManualClock, smtp: SmtpTestServer
) -> None:
    async def refuse(server: SMTP, session: Session, envelope: Envelope) -> str:
        return "554 5.6.0 Message header rejected"

    smtp.handle_DATA = refuse  # type: ignore[method-assign]
    async with email_notifiers(smtp) as (settings, senders):
        async with database.session() as session:
            await enqueue_call_notices(
                session, settings, call_sid="CA4", text="Hello", subject="Message", sms_sender=None
            )
        worker = OutboxWorker(database, senders, clock=clock)
        assert await worker.run_once() == 1
        clock.advance(hours=1)
        assert await worker.run_once() == 0
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "554" in row.last_error and "header rejected" in row.last_error


class AlwaysDown:
    """A channel that answers "try again later" forever."""

    channel = "sms"

    def __init__(self) -> None:
        self.attempts = 0

    async def send(self, notice: Notice) -> str:
        self.attempts += 1
        raise DeliveryError("Twilio refused the SMS: HTTP 503, error None: Service Unavailable")

    async def aclose(self) -> None:
        pass


async def test_a_notice_failing_for_a_temporary_reason_is_given_up_after_max_attempts(
    database: Database, clock: ManualClock
) -> None:
    sender = AlwaysDown()
    worker = OutboxWorker(database, {"sms": sender}, clock=clock, backoff=(5, 60), max_attempts=4)
    async with database.session() as session:
        await enqueue(session, dedupe_key="CA5:sms", channel="sms", recipient="+15550001111", body="Hi")
    for _ in range(10):  # far more rounds than attempts, each when the notice is due
        await worker.run_once()
        clock.advance(minutes=2)
    assert sender.attempts == 4
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("failed", 4)
    assert row.last_error == "Twilio refused the SMS: HTTP 503, error None: Service Unavailable"


def test_the_default_limits_end_retries_within_days() -> None:
    worker = OutboxWorker.__new__(OutboxWorker)
    OutboxWorker.__init__(worker, database=None, senders={})  # type: ignore[arg-type]
    delays = [worker.backoff[min(n, len(worker.backoff) - 1)] for n in range(worker.max_attempts - 1)]
    assert timedelta(hours=12) < timedelta(seconds=sum(delays)) <= worker.give_up_after


@pytest.fixture
async def failed_and_sent(database: Database, clock: ManualClock) -> Database:
    started = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    async with database.session() as session:
        session.add(CallRow(call_sid="CA6", caller_number=CALLER, started_at=started, ended_at=started))
        await session.flush()
        for channel, recipient in (("sms", "+15550001111"), ("email", f"{OWNER_EMAIL}\nBcc: x@y")):
            await enqueue(
                session,
                dedupe_key=f"CA6:{channel}",
                channel=channel,  # type: ignore[arg-type]
                recipient=recipient,
                subject="Message",
                body="Hello",
                call_sid="CA6",
            )

    class Accepts:
        channel = "sms"

        async def send(self, notice: Notice) -> str:
            return "SM1"

        async def aclose(self) -> None:
            pass

    settings = notifying_settings(None, None, smtp_url="smtp://127.0.0.1:9", notify_email=OWNER_EMAIL)
    senders = {"sms": Accepts(), "email": build_notifiers(settings)["email"]}
    assert await OutboxWorker(database, senders, clock=clock).run_once() == 2  # type: ignore[arg-type]
    return database


async def test_a_failed_notice_is_shown_with_its_call_and_in_the_failed_list(
    failed_and_sent: Database,
) -> None:
    async with failed_and_sent.session(read_only=True) as session:
        detail = await get_call(session, "CA6")
        failed = await list_notices(session, status="failed")
        every = await list_notices(session)
    assert detail is not None
    assert [(n.channel, n.status) for n in detail.notices] == [("sms", "sent"), ("email", "failed")]
    [shown] = failed
    assert (shown.call_sid, shown.channel, shown.attempts, shown.next_attempt_at) == ("CA6", "email", 1, None)
    assert shown.last_error is not None and "can't be written as an e-mail" in shown.last_error
    assert {n.status for n in every} == {"sent", "failed"}
