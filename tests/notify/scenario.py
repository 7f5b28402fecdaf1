"""The pieces notify tests share: a clock the test moves, settings that point at the stand-ins."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from callassist.notify.outbox import Notice
from callassist.settings import Settings
from callassist.store.db import Database
from callassist.store.models import OutboxRow, utc_now
from tests.support.smtp import SmtpTestServer
from tests.support.twilio_rest import TwilioRestStandIn

OWNER_PHONE = "+15551230000"
TWILIO_NUMBER = "+15559870000"
OWNER_EMAIL = "owner@example.com"


class ManualClock:
    """Real time plus an offset the test moves forward, so rows stamped with utc_now() are due."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def make_settings(**values: object) -> Settings:
    """Settings from `values` only (no .env, no environment beyond the cleaned test one)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def notifying_settings(
    twilio: TwilioRestStandIn | None, smtp: SmtpTestServer | None, **extra: object
) -> Settings:
    values: dict[str, object] = {"owner_phone": OWNER_PHONE}
    if twilio is not None:
        values |= {
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "twilio_phone_number": TWILIO_NUMBER,
            "twilio_api_base_url": twilio.base_url,
        }
    if smtp is not None:
        values |= {"smtp_url": smtp.url(to=None), "notify_email": OWNER_EMAIL}
    return make_settings(**(values | extra))


async def outbox_rows(database: Database) -> list[OutboxRow]:
    async with database.session(read_only=True) as session:
        return list((await session.scalars(select(OutboxRow).order_by(OutboxRow.id))).all())


def notice(**values: object) -> Notice:
    """A Notice for calling a sender directly."""
    defaults: dict[str, object] = {
        "id": 1,
        "dedupe_key": "CAtest:sms",
        "channel": "sms",
        "recipient": OWNER_PHONE,
        "sender": TWILIO_NUMBER,
        "subject": None,
        "body": "Missed call from +15557654321: please call back.",
        "call_sid": "CAtest",
        "attempts": 1,
        "created_at": utc_now(),
    }
    return Notice(**(defaults | values))  # type: ignore[arg-type]
