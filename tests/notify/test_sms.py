"""SMS through the Twilio SDK's asyncio client, against a stand-in as strict as Twilio's API."""

from __future__ import annotations

import pytest

from callassist.notify.notices import build_notifiers, close_notifiers, enqueue_call_notices
from callassist.notify.outbox import DeliveryError, OutboxWorker
from callassist.notify.sms import MAX_BODY_CHARS, TwilioSms, sms_body
from callassist.store.db import Database
from callassist.telephony.rest import redirect_url
from tests.notify.scenario import (
    OWNER_PHONE,
    TWILIO_NUMBER,
    ManualClock,
    notice,
    notifying_settings,
    outbox_rows,
)
from tests.support.twilio_rest import TwilioRestStandIn


def stand_in_sms(twilio: TwilioRestStandIn, *, auth_token: str | None = None) -> TwilioSms:
    return TwilioSms(
        twilio.account_sid,
        auth_token or twilio.auth_token,
        from_number=TWILIO_NUMBER,
        api_base_url=twilio.base_url,
    )


async def test_a_call_notice_reaches_the_owner_by_sms(
    database: Database, clock: ManualClock, twilio: TwilioRestStandIn
) -> None:
    settings = notifying_settings(twilio, None)
    senders = build_notifiers(settings)
    assert set(senders) == {"sms"}
    text = "Missed call from Ann Lee (+15557654321): wants to move Friday's appointment."
    try:
        async with database.session() as session:
            new = await enqueue_call_notices(
                session, settings, call_sid="CA100", text=text, subject="unused", sms_sender=None
            )
        assert new == 1
        assert await OutboxWorker(database, senders, clock=clock).run_once() == 1
    finally:
        await close_notifiers(senders)
    [message] = twilio.messages
    assert (message.to, message.from_, message.body) == (OWNER_PHONE, TWILIO_NUMBER, text)
    assert message.sid.startswith("SM") and len(message.sid) == 34
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts, row.dedupe_key, row.call_sid) == ("sent", 1, "CA100:sms", "CA100")
    assert row.sent_at is not None


async def test_twilio_down_then_back_delivers_exactly_once(
    database: Database, clock: ManualClock, twilio: TwilioRestStandIn
) -> None:
    sms = stand_in_sms(twilio)
    worker = OutboxWorker(database, {"sms": sms}, clock=clock, backoff=(5, 15))
    settings = notifying_settings(twilio, None)
    async with database.session() as session:
        await enqueue_call_notices(
            session, settings, call_sid="CA1", text="call me", subject="", sms_sender=None
        )
    try:
        twilio.failure_status = 503
        assert await worker.run_once() == 1
        [row] = await outbox_rows(database)
        assert row.status == "pending"
        assert row.last_error is not None and "HTTP 503" in row.last_error
        assert (twilio.requests, twilio.messages) == (1, [])

        await twilio.stop()  # not even listening now
        clock.advance(seconds=5)
        assert await worker.run_once() == 1
        [row] = await outbox_rows(database)
        assert row.status == "pending"
        assert row.last_error is not None and "unreachable" in row.last_error

        twilio.failure_status = None
        await twilio.start()
        clock.advance(seconds=15)
        assert await worker.run_once() == 1
        clock.advance(hours=1)
        assert await worker.run_once() == 0
    finally:
        await sms.aclose()
    assert [message.body for message in twilio.messages] == ["call me"]
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("sent", 3)


async def test_a_wrong_auth_token_is_a_permanent_failure(
    database: Database, clock: ManualClock, twilio: TwilioRestStandIn
) -> None:
    wrong_token = "not-the-token-0000000000000000"
    sms = stand_in_sms(twilio, auth_token=wrong_token)
    async with database.session() as session:
        settings = notifying_settings(twilio, None)
        await enqueue_call_notices(session, settings, call_sid="CA1", text="hi", subject="", sms_sender=None)
    try:
        assert await OutboxWorker(database, {"sms": sms}, clock=clock).run_once() == 1
    finally:
        await sms.aclose()
    [row] = await outbox_rows(database)
    assert row.status == "failed"
    assert row.last_error is not None
    assert "HTTP 401" in row.last_error and "20003" in row.last_error
    assert wrong_token not in row.last_error
    assert twilio.messages == []


async def test_an_invalid_number_is_permanent_and_rate_limits_are_not(twilio: TwilioRestStandIn) -> None:
    sms = stand_in_sms(twilio)
    try:
        with pytest.raises(DeliveryError) as refused:
            await sms.send(notice(recipient="5551234"))
        assert refused.value.permanent
        assert "21211" in refused.value.message

        twilio.failure_status = 429
        with pytest.raises(DeliveryError) as throttled:
            await sms.send(notice())
        assert not throttled.value.permanent
    finally:
        await sms.aclose()


async def test_without_a_from_number_the_sms_cannot_be_sent(twilio: TwilioRestStandIn) -> None:
    sms = TwilioSms(twilio.account_sid, twilio.auth_token, from_number=None, api_base_url=twilio.base_url)
    with pytest.raises(DeliveryError) as refused:
        await sms.send(notice(sender=None))
    assert refused.value.permanent
    assert twilio.requests == 0


async def test_a_long_body_is_cut_to_what_twilio_accepts(twilio: TwilioRestStandIn) -> None:
    sms = stand_in_sms(twilio)
    try:
        sid = await sms.send(notice(body="word " * 500))
    finally:
        await sms.aclose()
    [message] = twilio.messages
    assert message.sid == sid
    assert len(message.body) == MAX_BODY_CHARS
    assert message.body.endswith("…")


def test_sms_body_keeps_short_text_whole() -> None:
    assert sms_body("short") == "short"
    assert sms_body("x" * MAX_BODY_CHARS) == "x" * MAX_BODY_CHARS
    assert sms_body("x" * (MAX_BODY_CHARS + 1)) == "x" * (MAX_BODY_CHARS - 1) + "…"


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        (
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
            "http://127.0.0.1:8123",
            "http://127.0.0.1:8123/2010-04-01/Accounts/AC1/Messages.json",
        ),
        (
            "https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC1/Messages.json?x=1",
            "https://proxy.example/twilio/",
            "https://proxy.example/twilio/2010-04-01/Accounts/AC1/Messages.json?x=1",
        ),
        (
            "https://api.twilio.com/2010-04-01/Accounts.json",
            None,
            "https://api.twilio.com/2010-04-01/Accounts.json",
        ),
        ("https://example.com/not-twilio", "http://127.0.0.1:1", "https://example.com/not-twilio"),
        ("https://eviltwilio.com/x", "http://127.0.0.1:1", "https://eviltwilio.com/x"),
    ],
)
def test_redirect_url_swaps_only_twilio_hosts(url: str, base: str | None, expected: str) -> None:
    assert redirect_url(url, base) == expected


async def test_aclose_closes_the_http_session(twilio: TwilioRestStandIn) -> None:
    sms = stand_in_sms(twilio)
    await sms.send(notice())
    http = sms._http
    assert http is not None and http.session is not None
    await sms.aclose()
    assert http.session.closed
    assert twilio.auth_token not in repr(sms)
    await sms.aclose()  # twice is fine


async def test_the_credentials_check_asks_twilio_for_the_account(twilio: TwilioRestStandIn) -> None:
    from callassist.telephony.rest import credentials_valid

    assert await credentials_valid(twilio.account_sid, twilio.auth_token, api_base_url=twilio.base_url)
    refused = await credentials_valid(twilio.account_sid, "wrong-token", api_base_url=twilio.base_url)
    assert refused is False
    twilio.failure_status = 503
    assert (
        await credentials_valid(twilio.account_sid, twilio.auth_token, api_base_url=twilio.base_url) is None
    )
    await twilio.stop()
    assert (
        await credentials_valid(twilio.account_sid, twilio.auth_token, api_base_url=twilio.base_url) is None
    )
