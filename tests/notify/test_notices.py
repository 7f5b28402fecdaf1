"""Which channels the settings turn on, and the notices a call leaves in the outbox."""

from __future__ import annotations

import pytest

from callassist.notify.email import SmtpMailer, SmtpUrlError, parse_smtp_url
from callassist.notify.notices import build_notifiers, email_recipient, enqueue_call_notices, sms_enabled
from callassist.notify.sms import TwilioSms
from callassist.settings import SettingsError, load_settings
from callassist.store.db import Database
from tests.notify.scenario import OWNER_EMAIL, OWNER_PHONE, TWILIO_NUMBER, make_settings, outbox_rows

TWILIO = {"twilio_account_sid": "AC" + "1" * 32, "twilio_auth_token": "token", "owner_phone": OWNER_PHONE}
SMTP = {"smtp_url": "smtp://user:pw@mail.example.com:587", "notify_email": OWNER_EMAIL}


def test_nothing_configured_means_no_notifiers() -> None:
    assert build_notifiers(make_settings()) == {}


def test_sms_needs_credentials_the_owner_phone_and_not_being_switched_off() -> None:
    senders = build_notifiers(make_settings(**TWILIO, twilio_phone_number=TWILIO_NUMBER))
    assert isinstance(senders["sms"], TwilioSms)
    assert senders["sms"].from_number == TWILIO_NUMBER
    assert not sms_enabled(make_settings(**(TWILIO | {"owner_phone": None})))
    assert not sms_enabled(make_settings(**(TWILIO | {"twilio_auth_token": None})))
    assert not sms_enabled(make_settings(**TWILIO, notify_sms=False))


def test_email_needs_an_smtp_url_and_a_recipient() -> None:
    senders = build_notifiers(make_settings(**SMTP))
    assert isinstance(senders["email"], SmtpMailer)
    assert senders["email"].recipient == OWNER_EMAIL
    from_url = make_settings(smtp_url="smtp://mail.example.com:25?to=desk@example.com")
    assert email_recipient(from_url) == "desk@example.com"
    assert build_notifiers(from_url)["email"].recipient == "desk@example.com"  # type: ignore[attr-defined]
    # No recipient: refused when the settings load, with one line naming what is missing.
    with pytest.raises(SettingsError, match="CALLASSIST_NOTIFY_EMAIL"):
        load_settings(_env_file=None, smtp_url="smtp://mail.example.com:25")


def test_a_bad_smtp_url_stops_the_start_up_without_showing_the_password() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(
            _env_file=None, smtp_url="smpt://user:topsecret@mail.example.com", notify_email=OWNER_EMAIL
        )
    assert "CALLASSIST_SMTP_URL" in str(raised.value)
    assert "topsecret" not in str(raised.value)
    with pytest.raises(SmtpUrlError) as direct:
        parse_smtp_url("smpt://user:topsecret@mail.example.com")
    assert "topsecret" not in str(direct.value)


async def test_a_call_enqueues_one_notice_per_configured_channel_once(database: Database) -> None:
    settings = make_settings(**TWILIO, **SMTP, twilio_phone_number=TWILIO_NUMBER)
    for expected in (2, 0):  # a second call for the same call adds nothing
        async with database.session() as session:
            new = await enqueue_call_notices(
                session, settings, call_sid="CA9", text="Ann called", subject="Missed call", sms_sender=None
            )
        assert new == expected
    rows = await outbox_rows(database)
    assert [(r.dedupe_key, r.channel, r.recipient, r.sender, r.subject, r.body) for r in rows] == [
        ("CA9:sms", "sms", OWNER_PHONE, TWILIO_NUMBER, None, "Ann called"),
        ("CA9:email", "email", OWNER_EMAIL, None, "Missed call", "Ann called"),
    ]


async def test_the_sms_comes_from_the_called_number_when_no_twilio_number_is_set(database: Database) -> None:
    async with database.session() as session:
        assert await enqueue_call_notices(
            session, make_settings(**TWILIO), call_sid="CA1", text="t", subject="s", sms_sender="+15550001111"
        )
        # Without any number to send from there is no SMS to enqueue.
        assert not await enqueue_call_notices(
            session, make_settings(**TWILIO), call_sid="CA2", text="t", subject="s", sms_sender=None
        )
    [row] = await outbox_rows(database)
    assert (row.dedupe_key, row.sender) == ("CA1:sms", "+15550001111")


async def test_nothing_configured_enqueues_nothing(database: Database) -> None:
    async with database.session() as session:
        assert (
            await enqueue_call_notices(
                session, make_settings(), call_sid="CA1", text="t", subject="s", sms_sender="+15550001111"
            )
            == 0
        )
    assert await outbox_rows(database) == []
