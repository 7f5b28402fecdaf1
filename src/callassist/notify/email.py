"""E-mail to the owner over SMTP, configured by one URL (CALLASSIST_SMTP_URL).

    smtp://user:pass@smtp.example.com:587?from=assistant@example.com&to=owner@example.com
    smtps://user:pass@smtp.example.com        (implicit TLS, port 465)
    smtp://relay.internal:25                  (no login)

smtp:// upgrades with STARTTLS whenever the server offers it, and never sends a password in clear
to anything but a loopback address. The stdlib's smtplib does the talking, in a worker thread.

Messages are built with the `email` package only (its policy encodes and folds headers and refuses
line breaks in them); the subject is one clean line whatever the notice holds, and a notice that
can't be written as an e-mail at all is a permanent failure, not a retry every few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import smtplib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from callassist import caller_text
from callassist.notify.outbox import DeliveryError, Notice

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_SUBJECT = "callassist"
SUBJECT_CHARS = 200
_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
_QUERY_OPTIONS = ("from", "to")


class SmtpUrlError(ValueError):
    """CALLASSIST_SMTP_URL can't be used. The message never quotes the URL (it holds a password)."""


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None = field(repr=False)
    from_address: str
    to: str | None

    @property
    def display(self) -> str:
        """The server as it may be logged: no password."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpConfig:
    """Read an smtp:// or smtps:// URL; user and password may be percent-encoded."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise SmtpUrlError("CALLASSIST_SMTP_URL must start with smtp:// or smtps://")
    host = parts.hostname
    if not host:
        raise SmtpUrlError("CALLASSIST_SMTP_URL has no host (e.g. smtp://user:pass@smtp.example.com:587)")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise SmtpUrlError("CALLASSIST_SMTP_URL has a port that is not a number from 1 to 65535") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_OPTIONS))
    if unknown:
        raise SmtpUrlError(
            f"CALLASSIST_SMTP_URL has unknown option(s) {', '.join(unknown)} (known: from, to)"
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    from_address = _last(query.get("from")) or (
        username if username and "@" in username else f"callassist@{host}"
    )
    to = _last(query.get("to"))
    for name, address in (("from", from_address), ("to", to)):
        if address is not None and "@" not in address:
            raise SmtpUrlError(f"CALLASSIST_SMTP_URL: ?{name}= must be an e-mail address")
    return SmtpConfig(
        host=host,
        port=port,
        implicit_tls=scheme == "smtps",
        username=username,
        password=password,
        from_address=from_address,
        to=to,
    )


def _last(values: Iterable[str] | None) -> str | None:
    found = [value.strip() for value in values or () if value.strip()]
    return found[-1] if found else None


def password_may_be_sent(host: str, encrypted: bool) -> bool:
    """Whether a login may go over this connection: encrypted, or never leaving the machine."""
    if encrypted or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpMailer:
    """Sends notices as plain-text e-mail; `to` (CALLASSIST_NOTIFY_EMAIL) wins over the URL's ?to=."""

    channel: Final = "email"

    def __init__(
        self,
        url: str,
        *,
        to: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = parse_smtp_url(url)
        recipient = to or self.config.to
        if not recipient:
            raise SmtpUrlError("no e-mail recipient: set CALLASSIST_NOTIFY_EMAIL or add ?to= to the URL")
        self.recipient: str = recipient
        self.timeout_s = timeout_s
        # Certificates are checked as a browser would; a private CA goes in through ssl_context.
        self.ssl_context = ssl_context or ssl.create_default_context()

    def __repr__(self) -> str:
        return f"SmtpMailer({self.config.display}, to={self.recipient!r})"

    def compose(self, notice: Notice) -> EmailMessage:
        """The notice as an e-mail; ValueError when it can't be one (e.g. an unusable address)."""
        message = EmailMessage()
        message["From"] = self.config.from_address
        message["To"] = notice.recipient
        # The subject names the caller: one line, so it can never end the header or add another.
        message["Subject"] = caller_text.one_line(notice.subject, SUBJECT_CHARS) or DEFAULT_SUBJECT
        message["Date"] = format_datetime(notice.created_at)
        # The same notice keeps the same Message-ID on every attempt, so a mailbox that received
        # it once already (answer lost on the way back) can drop the copy.
        identity = f"{notice.dedupe_key}|{notice.created_at.isoformat()}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        domain = self.config.from_address.rpartition("@")[2] or "callassist.invalid"
        message["Message-ID"] = f"<callassist.{digest}@{domain}>"
        # RFC 3834: tells auto-responders (vacation replies) not to answer a machine.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(notice.body)
        return message

    async def send(self, notice: Notice) -> str:
        try:
            message = self.compose(notice)
            message.as_bytes()  # everything the server will be sent encodes, or fails here
        except (ValueError, TypeError, LookupError) as exc:
            # The same notice fails the same way every time: no retry can help.
            why = caller_text.one_line(str(exc), 120)
            raise DeliveryError(
                f"the notice can't be written as an e-mail: {type(exc).__name__}"
                + (f": {why}" if why else ""),
                permanent=True,
            ) from None
        await asyncio.to_thread(self._send_blocking, message)
        return str(message["Message-ID"])

    async def aclose(self) -> None:
        """Nothing to release: each send uses its own connection."""

    def _send_blocking(self, message: EmailMessage) -> None:
        config = self.config
        try:
            connection: smtplib.SMTP
            if config.implicit_tls:
                connection = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=self.timeout_s, context=self.ssl_context
                )
            else:
                connection = smtplib.SMTP(config.host, config.port, timeout=self.timeout_s)
            try:
                self._converse(connection, message)
            finally:
                connection.close()
        except DeliveryError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login as {config.username!r} refused by {config.host}: "
                f"{exc.smtp_code} {self._server_text(exc.smtp_error)}",
                permanent=True,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"{config.host}: {self._scrub(str(exc))}", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            answers = "; ".join(f"{code} {self._server_text(text)}" for code, text in exc.recipients.values())
            permanent = all(code >= 500 for code in codes)
            refusal = f"{config.host} refused the recipient: {answers}"
            raise DeliveryError(refusal, permanent=permanent) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{config.host} answered {exc.smtp_code} {self._server_text(exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            # Connection refused or reset, timeouts, DNS, TLS handshakes: the server may be back later.
            raise DeliveryError(
                f"SMTP server {config.host}:{config.port} unreachable "
                f"({type(exc).__name__}: {self._scrub(str(exc))})"
            ) from None

    def _converse(self, connection: smtplib.SMTP, message: EmailMessage) -> None:
        config = self.config
        connection.ehlo()
        encrypted = config.implicit_tls
        if not encrypted and connection.has_extn("starttls"):
            connection.starttls(context=self.ssl_context)
            connection.ehlo()
            encrypted = True
        if config.username is not None:
            if not password_may_be_sent(config.host, encrypted):
                raise DeliveryError(
                    f"{config.host} offers no STARTTLS; refusing to send the SMTP password "
                    "unencrypted (use smtps:// or a server with STARTTLS)",
                    permanent=True,
                )
            connection.login(config.username, config.password or "")
        connection.send_message(message)
        # The message is accepted: a failed goodbye must not make it count as undelivered.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.quit()

    def _server_text(self, answer: bytes | str) -> str:
        text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
        return self._scrub(" ".join(text.split()))

    def _scrub(self, text: str) -> str:
        password = self.config.password
        return text.replace(password, "***") if password else text
