"""E-mail through smtplib against a real local SMTP server: content, outages, login, TLS."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from callassist.notify.email import SmtpMailer, SmtpUrlError, parse_smtp_url, password_may_be_sent
from callassist.notify.notices import build_notifiers, close_notifiers, enqueue_call_notices
from callassist.notify.outbox import DeliveryError, Notice, OutboxWorker
from callassist.store.db import Database
from tests.notify.scenario import OWNER_EMAIL, ManualClock, notice, notifying_settings, outbox_rows
from tests.support.smtp import PASSWORD, USERNAME, SmtpTestServer, self_signed_certificate


def email_notice(**values: object) -> Notice:
    email_values: dict[str, object] = {
        "channel": "email",
        "recipient": OWNER_EMAIL,
        "sender": None,
        "dedupe_key": "CA1:email",
        "subject": "Missed call",
    }
    return notice(**(email_values | values))


async def test_a_call_notice_reaches_the_owner_by_email(
    database: Database, clock: ManualClock, smtp: SmtpTestServer
) -> None:
    settings = notifying_settings(None, smtp, smtp_url=smtp.url(to=None, sender="assistant@example.com"))
    senders = build_notifiers(settings)
    assert set(senders) == {"email"}
    text = "Ann Lee called at 14:05.\nShe wants to move Friday's appointment. Café 5 € ok."
    try:
        async with database.session() as session:
            new = await enqueue_call_notices(
                session, settings, call_sid="CA7", text=text, subject="Missed call: Ann Lee", sms_sender=None
            )
        assert new == 1
        assert await OutboxWorker(database, senders, clock=clock).run_once() == 1
    finally:
        await close_notifiers(senders)
    [mail] = smtp.received
    assert mail.rcpt_tos == (OWNER_EMAIL,)
    assert mail.mail_from == "assistant@example.com"
    assert mail.subject == "Missed call: Ann Lee"
    assert mail.text.rstrip("\n") == text
    assert mail.message["To"] == OWNER_EMAIL
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert str(mail.message["Message-ID"]).endswith("@example.com>")
    [row] = await outbox_rows(database)
    assert (row.status, row.dedupe_key, row.subject) == ("sent", "CA7:email", "Missed call: Ann Lee")


async def test_mail_server_down_then_back_delivers_exactly_once(
    database: Database, clock: ManualClock, smtp: SmtpTestServer
) -> None:
    settings = notifying_settings(None, smtp)
    senders = build_notifiers(settings)
    worker = OutboxWorker(database, senders, clock=clock, backoff=(5, 15))
    async with database.session() as session:
        await enqueue_call_notices(
            session, settings, call_sid="CA1", text="hello", subject="s", sms_sender=None
        )
    await smtp.stop()
    assert await worker.run_once() == 1
    [row] = await outbox_rows(database)
    assert row.status == "pending"
    assert row.last_error is not None and "unreachable" in row.last_error
    clock.advance(seconds=5)
    assert await worker.run_once() == 1
    assert smtp.received == []

    await smtp.start()
    assert await worker.run_once() == 0  # backing off: 15 s after the second attempt
    clock.advance(seconds=15)
    assert await worker.run_once() == 1
    clock.advance(hours=2)
    assert await worker.run_once() == 0
    assert [mail.text.strip() for mail in smtp.received] == ["hello"]
    [row] = await outbox_rows(database)
    assert (row.status, row.attempts) == ("sent", 3)


async def test_login_on_loopback_without_tls(smtp: SmtpTestServer) -> None:
    async with SmtpTestServer(username=USERNAME, password=PASSWORD) as server:
        mailer = SmtpMailer(server.url(), to=None)
        await mailer.send(email_notice())
        [mail] = server.received
    assert (mail.login, mail.encrypted) == (USERNAME, False)
    assert mail.mail_from == USERNAME  # the login doubles as the From address


async def test_starttls_is_used_when_offered(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path / "tls")
    # The server accepts a login only over TLS: the mail getting through proves STARTTLS happened.
    async with SmtpTestServer(username=USERNAME, password=PASSWORD, starttls=certificate.server) as server:
        mailer = SmtpMailer(server.url(), to=None, ssl_context=certificate.client)
        await mailer.send(email_notice())
        [mail] = server.received
    assert (mail.login, mail.encrypted) == (USERNAME, True)


async def test_smtps_speaks_tls_from_the_start(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path / "tls")
    async with SmtpTestServer(
        username=USERNAME, password=PASSWORD, implicit_tls=certificate.server
    ) as server:
        assert server.url().startswith("smtps://")
        mailer = SmtpMailer(server.url(), to=None, ssl_context=certificate.client)
        await mailer.send(email_notice())
        [mail] = server.received
    assert (mail.login, mail.encrypted) == (USERNAME, True)


async def test_an_untrusted_certificate_is_a_temporary_failure(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path / "tls")
    async with SmtpTestServer(implicit_tls=certificate.server) as server:
        mailer = SmtpMailer(server.url(), to=None)  # the system's CAs: the self-signed one isn't there
        with pytest.raises(DeliveryError) as refused:
            await mailer.send(email_notice())
    assert not refused.value.permanent
    assert server.received == []


async def test_a_wrong_password_fails_for_good_and_is_never_shown(
    database: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_password = "hunter2-but-wrong"
    async with SmtpTestServer(username=USERNAME, password=PASSWORD) as server:
        bad_url = server.url().replace(PASSWORD.replace(" ", "%20").replace("/", "%2F"), wrong_password)
        assert wrong_password in bad_url
        settings = notifying_settings(None, server, smtp_url=bad_url)
        senders = build_notifiers(settings)
        async with database.session() as session:
            await enqueue_call_notices(
                session, settings, call_sid="CA1", text="hi", subject="s", sms_sender=None
            )
        with caplog.at_level(logging.DEBUG):
            assert await OutboxWorker(database, senders, clock=clock).run_once() == 1
        assert server.received == []
        assert server.failed_logins >= 1  # smtplib tries each mechanism offered (PLAIN, LOGIN)
    [row] = await outbox_rows(database)
    assert row.status == "failed"
    assert row.last_error is not None and "login" in row.last_error and "535" in row.last_error
    assert wrong_password not in row.last_error
    assert wrong_password not in caplog.text
    assert wrong_password not in repr(senders["email"])


def test_a_notice_keeps_its_message_id_across_attempts() -> None:
    mailer = SmtpMailer("smtp://mail.example.com:25?from=bot@example.com", to=OWNER_EMAIL)
    first = email_notice(attempts=1)
    again = email_notice(attempts=2, created_at=first.created_at)
    other = email_notice(dedupe_key="CA2:email", created_at=first.created_at)
    message_id = mailer.compose(first)["Message-ID"]
    assert message_id.endswith("@example.com>")
    assert mailer.compose(again)["Message-ID"] == message_id
    assert mailer.compose(other)["Message-ID"] != message_id


def test_parse_smtp_url() -> None:
    config = parse_smtp_url(
        "smtp://me%40example.com:p%40ss%3Aw%2Frd@smtp.example.com:2525?from=bot@example.com&to=owner@example.com"
    )
    assert (config.host, config.port, config.implicit_tls) == ("smtp.example.com", 2525, False)
    assert (config.username, config.password) == ("me@example.com", "p@ss:w/rd")
    assert (config.from_address, config.to) == ("bot@example.com", "owner@example.com")
    assert "p@ss" not in repr(config) and "p@ss" not in config.display

    assert parse_smtp_url("smtps://u:p@mail.example.com").port == 465
    assert parse_smtp_url("smtp://u:p@mail.example.com").port == 587
    relay = parse_smtp_url("smtp://relay.internal:25")
    assert (relay.port, relay.username, relay.password, relay.from_address) == (
        25,
        None,
        None,
        "callassist@relay.internal",
    )


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://u:topsecret@mail.example.com", "smtp://"),
        ("smtp://u:topsecret@:25", "no host"),
        ("smtp://u:topsecret@mail.example.com:99999", "port"),
        ("smtp://u:topsecret@mail.example.com?tls=yes", "unknown option"),
        ("smtp://u:topsecret@mail.example.com?to=nobody", "e-mail address"),
    ],
)
def test_a_bad_smtp_url_is_explained_without_its_password(url: str, complaint: str) -> None:
    with pytest.raises(SmtpUrlError) as raised:
        parse_smtp_url(url)
    assert complaint in str(raised.value)
    assert "topsecret" not in str(raised.value)


def test_the_recipient_comes_from_the_setting_or_the_url() -> None:
    assert SmtpMailer("smtp://h:25?to=a@example.com", to=None).recipient == "a@example.com"
    assert SmtpMailer("smtp://h:25?to=a@example.com", to="b@example.com").recipient == "b@example.com"
    with pytest.raises(SmtpUrlError, match="CALLASSIST_NOTIFY_EMAIL"):
        SmtpMailer("smtp://h:25", to=None)


def test_a_password_only_travels_encrypted_or_on_loopback() -> None:
    assert password_may_be_sent("smtp.example.com", encrypted=True)
    assert not password_may_be_sent("smtp.example.com", encrypted=False)
    assert not password_may_be_sent("192.0.2.10", encrypted=False)
    assert password_may_be_sent("127.0.0.1", encrypted=False)
    assert password_may_be_sent("::1", encrypted=False)
    assert password_may_be_sent("localhost", encrypted=False)
