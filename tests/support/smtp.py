"""A real SMTP server (aiosmtpd) on 127.0.0.1, recording what it receives, for e-mail tests.

It runs in the test's event loop (smtplib clients talk to it from worker threads), can be stopped
and started again on the same port to play a mail server that is down, and can require AUTH,
offer STARTTLS or speak implicit TLS with a throwaway self-signed certificate.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import ssl
import subprocess
import warnings
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "assistant@example.com"
PASSWORD = "s3cret pass/word"


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    encrypted: bool  # the session was TLS (implicit or STARTTLS) when the mail came in
    login: str | None  # who authenticated, if anyone

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        # The wire's CRLF line ends survive parsing; compare text as Python writes it.
        return str(body.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TestCertificate:
    """A self-signed certificate for 127.0.0.1: a server context and a client one that trusts it."""

    __test__ = False  # not a pytest test class, despite the name

    server: ssl.SSLContext
    client: ssl.SSLContext


def self_signed_certificate(directory: Path) -> TestCertificate:
    """Made with the openssl command (skips the test where it isn't installed)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return TestCertificate(server=server, client=client)


class SmtpTestServer:
    """`async with SmtpTestServer() as smtp:` ... `smtp.received`, `await smtp.stop()`, `start()`."""

    __test__ = False

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.received: list[ReceivedMail] = []
        self.failed_logins = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self._server is not None

    def url(self, *, to: str | None = "owner@example.com", sender: str | None = None) -> str:
        """The CALLASSIST_SMTP_URL that reaches this server (with its credentials, if any)."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="") + ":" + quote(self.password or "", safe="") + "@"
        query = "&".join(f"{key}={value}" for key, value in (("from", sender), ("to", to)) if value)
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}" + (f"?{query}" if query else "")

    async def start(self) -> None:
        assert self._server is None, "already running"
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, "127.0.0.1", self.port, ssl=self.implicit_tls, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_for_mail(self, count: int, within_s: float = 5.0) -> list[ReceivedMail]:
        async with asyncio.timeout(within_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    def _protocol(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS: wanted here, on loopback, to test exactly that.
            warnings.simplefilter("ignore")
            return SMTP(
                self,
                hostname="smtp.stand-in.test",  # saves a reverse DNS lookup per connection
                tls_context=self.starttls,
                require_starttls=False,
                auth_required=self.username is not None,
                auth_require_tls=self.starttls is not None,
                authenticator=self._authenticate if self.username is not None else None,
                loop=asyncio.get_running_loop(),
            )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        ):
            return AuthResult(success=True, auth_data=auth_data.login.decode())
        self.failed_logins += 1
        return AuthResult(success=False, handled=False)

    # aiosmtpd handler hook
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            encrypted=server.transport is not None
            and server.transport.get_extra_info("ssl_object") is not None,
            login=session.auth_data if isinstance(session.auth_data, str) else None,
        )
        async with self._arrived:
            self.received.append(mail)
            self._arrived.notify_all()
        return "250 OK"
