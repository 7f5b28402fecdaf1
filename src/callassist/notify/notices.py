"""Which channels reach the owner, built from Settings, and the notices one call leaves behind.

`build_notifiers` decides at start-up which senders exist; `enqueue_call_notices` applies the same
rules when a call ends, so a notice is only enqueued for a channel the worker can deliver.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from callassist.notify.email import SmtpMailer, SmtpUrlError, parse_smtp_url
from callassist.notify.outbox import Sender, enqueue
from callassist.notify.sms import TwilioSms
from callassist.settings import Settings

log = logging.getLogger(__name__)


def sms_enabled(settings: Settings) -> bool:
    """SMS goes out when asked for and Twilio credentials and the owner's number are known."""
    return bool(
        settings.notify_sms
        and settings.twilio_account_sid
        and settings.twilio_auth_token
        and settings.twilio_auth_token.get_secret_value()
        and settings.owner_phone
    )


def email_recipient(settings: Settings) -> str | None:
    """Where e-mail notices go (CALLASSIST_NOTIFY_EMAIL, else the SMTP URL's ?to=), or None."""
    if settings.smtp_url is None or not settings.smtp_url.get_secret_value():
        return None
    if settings.notify_email:
        return settings.notify_email
    try:
        return parse_smtp_url(settings.smtp_url.get_secret_value()).to
    except SmtpUrlError:
        return None  # build_notifiers reports it at start-up


def build_notifiers(settings: Settings) -> dict[str, Sender]:
    """The senders the settings configure, keyed by channel ("sms", "email").

    Raises SmtpUrlError for an unusable CALLASSIST_SMTP_URL, so a typo stops the start-up instead of
    losing every e-mail. Whoever builds them closes them: `await close_notifiers(...)`.
    """
    senders: dict[str, Sender] = {}
    if sms_enabled(settings):
        assert settings.twilio_account_sid is not None and settings.twilio_auth_token is not None
        senders["sms"] = TwilioSms(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_phone_number,
            api_base_url=settings.twilio_api_base_url,
        )
    if settings.smtp_url is not None and settings.smtp_url.get_secret_value():
        mailer = SmtpMailer(settings.smtp_url.get_secret_value(), to=settings.notify_email)
        senders["email"] = mailer
    for sender in senders.values():
        log.info("owner notices by %s: %r", sender.channel, sender)
    return senders


async def close_notifiers(senders: Mapping[str, Sender]) -> None:
    for sender in senders.values():
        try:
            await sender.aclose()
        except Exception:
            log.exception("closing the %s notifier failed", sender.channel)


async def enqueue_call_notices(
    session: AsyncSession,
    settings: Settings,
    *,
    call_sid: str,
    text: str,
    subject: str,
    sms_sender: str | None,
) -> int:
    """Enqueue the owner's SMS and/or e-mail about one call, in `session`'s transaction.

    `sms_sender` is the number the call came in on, used when TWILIO_PHONE_NUMBER is not set.
    Idempotent per call and channel; returns how many notices were new.
    """
    return await enqueue_owner_notices(
        session, settings, key=call_sid, text=text, subject=subject, sms_sender=sms_sender, call_sid=call_sid
    )


async def enqueue_owner_notices(
    session: AsyncSession,
    settings: Settings,
    *,
    key: str,
    text: str,
    subject: str,
    sms_sender: str | None,
    call_sid: str | None = None,
) -> int:
    """Enqueue one notice to the owner on every channel that can deliver it, in `session`'s
    transaction: idempotent per `key` and channel (dedupe keys `<key>:sms`, `<key>:email`).
    Returns how many were new."""
    new = 0
    if sms_enabled(settings):
        assert settings.owner_phone is not None
        from_number = settings.twilio_phone_number or sms_sender
        if from_number:
            new += await enqueue(
                session,
                dedupe_key=f"{key}:sms",
                channel="sms",
                recipient=settings.owner_phone,
                sender=from_number,
                body=text,
                call_sid=call_sid,
            )
        else:
            log.warning("notice %s: no SMS to the owner, no number to send it from", key)
    recipient = email_recipient(settings)
    if recipient:
        new += await enqueue(
            session,
            dedupe_key=f"{key}:email",
            channel="email",
            recipient=recipient,
            subject=subject,
            body=text,
            call_sid=call_sid,
        )
    return new
