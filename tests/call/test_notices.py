"""A message left during a call reaches the owner by SMS (Twilio REST) and e-mail (SMTP), once."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from callassist.simulator.audio import tone
from callassist.store.models import MessageRow, OutboxRow
from tests.fakes.realtime_server import Reply, ResponseContext, Say, Script, UseTool
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN
from tests.support.smtp import SmtpTestServer
from tests.support.stack import Stack, StackFactory
from tests.support.twilio_rest import TwilioRestStandIn

OWNER_PHONE = "+15550001111"
TWILIO_NUMBER = "+15559870000"
# What the caller said, as the model's intent; it writes take_message's arguments from the schema.
MESSAGE = {
    "caller_name": "Alex Kim",
    "message": "Please call me back about the contract before Friday.",
    "urgency": "high",
}


def speak_tool_result(ctx: ResponseContext) -> Reply:
    output = json.loads(ctx.last_function_output or "{}")
    return Reply([Say(output.get("say") or output.get("error") or "Sorry.", audio=tone(400, 500))])


def notifying(twilio: TwilioRestStandIn, smtp: SmtpTestServer) -> dict[str, Any]:
    return {
        "owner_phone": OWNER_PHONE,
        "ring_owner_seconds": 0,
        "twilio_api_base_url": twilio.base_url,
        "smtp_url": smtp.url(to="dana@example.com", sender="assistant@example.com"),
    }


async def leave_a_message(stack: Stack) -> str:
    call = await stack.simulator.place_call(from_number="+15551230000", to_number=TWILIO_NUMBER)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    said = time.monotonic()
    await call.say(tone(800, 300))
    session = stack.fake.sessions[-1]
    await stack.fake.wait_until(lambda: len(session.responses) >= 3, timeout=15)
    await call.wait_until_quiet(quiet_ms=150, timeout=10, after=said)
    await call.hang_up()
    await stack.server.services.registry.wait_idle(10)
    return call.call_sid


def script() -> Script:
    return Script(
        replies=[
            Reply([Say("Hi, Dana's assistant.", audio=tone(300, 400))]),
            Reply([UseTool("take_message", intent=MESSAGE)]),
            speak_tool_result,
        ],
        transcripts=[
            "Alex Kim here, please have Dana call me back about the contract before Friday. It's important."
        ],
        summary=json.dumps({"summary": "Alex wants a call back about the contract.", "urgency": "high"}),
    )


async def test_a_message_reaches_the_owner_by_sms_and_email(make_stack: StackFactory) -> None:
    async with (
        TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio,
        SmtpTestServer() as smtp,
    ):
        stack = await make_stack(script(), **notifying(twilio, smtp))
        call_sid = await leave_a_message(stack)
        [sms] = await twilio.wait_for_messages(1, within_s=10)
        [mail] = await smtp.wait_for_mail(1, within_s=10)
        worker = stack.server.services.outbox
        assert worker is not None
        await worker.stop()  # lets the sends in flight record their outcome

    assert sms.to == OWNER_PHONE and sms.from_ == TWILIO_NUMBER and sms.account_sid == ACCOUNT_SID
    assert MESSAGE["message"] in sms.body and "Alex Kim (+15551230000)" in sms.body
    assert sms.body.startswith("URGENT: ")
    assert "Call back: +15551230000" in sms.body
    assert mail.rcpt_tos == ("dana@example.com",)
    assert "Alex Kim" in mail.subject
    assert MESSAGE["message"] in mail.message.get_content()
    # The message itself is in the store, and the assistant said it was taken.
    async with stack.server.services.database.session(read_only=True) as session:
        [stored] = list(await session.scalars(select(MessageRow)))
        outbox = list(await session.scalars(select(OutboxRow).order_by(OutboxRow.channel)))
    assert (stored.call_sid, stored.caller_name, stored.urgency) == (call_sid, "Alex Kim", "high")
    assert stored.message == MESSAGE["message"] and stored.callback_number == "+15551230000"
    assert [(row.channel, row.status) for row in outbox] == [("email", "sent"), ("sms", "sent")]
    said = stack.fake.sessions[0].responses[-2]["output"][0]["content"][0]["transcript"]
    assert said == "I've taken your message; Dana will get it as soon as this call ends."


async def test_with_the_notifiers_down_the_notice_arrives_when_they_are_back_exactly_once(
    make_stack: StackFactory,
) -> None:
    twilio, smtp = TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN), SmtpTestServer()
    await twilio.start()
    await smtp.start()
    twilio.failure_status = 503  # Twilio answers "unavailable"
    await smtp.stop()  # the mail server is down: connections are refused
    try:
        stack = await make_stack(script(), **notifying(twilio, smtp))
        worker = stack.server.services.outbox
        assert worker is not None
        worker.backoff = (0.2, 0.4)  # retry quickly in this test (production: 5 s, 15 s, ... 15 min)
        await leave_a_message(stack)
        database = stack.server.services.database

        async def outbox() -> list[OutboxRow]:
            async with database.session(read_only=True) as session:
                return list(await session.scalars(select(OutboxRow).order_by(OutboxRow.channel)))

        # Attempted, failed, still waiting: nothing is lost.
        await twilio.wait_for_requests(1, within_s=10)
        rows = await outbox()
        assert [(r.channel, r.status) for r in rows] == [("email", "pending"), ("sms", "pending")]
        assert twilio.messages == [] and smtp.received == []

        twilio.failure_status = None
        await smtp.start()  # same port as before
        [sms] = await twilio.wait_for_messages(1, within_s=10)
        [mail] = await smtp.wait_for_mail(1, within_s=10)
        assert MESSAGE["message"] in sms.body and MESSAGE["message"] in mail.message.get_content()
        await worker.stop()  # lets the sends in flight record their outcome
        # Further rounds of the worker send nothing more.
        for _ in range(3):
            await worker.run_once()
        assert len(twilio.messages) == 1 and len(smtp.received) == 1
        rows = await outbox()
        assert [(r.channel, r.status) for r in rows] == [("email", "sent"), ("sms", "sent")]
        sms_row = next(r for r in rows if r.channel == "sms")
        assert sms_row.attempts >= 2  # refused once while Twilio was down (we waited for that)
    finally:
        await twilio.stop()
        await smtp.stop()
