"""`callassist call`: play Twilio and a caller against a running server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from callassist.cli.common import console, errors, fail


def _call_settings() -> tuple[str, int, str | None, str | None, str | None]:
    """(host, port, Twilio auth token, public base URL, account SID) as `serve` sees them: from
    Settings (the environment and the .env files), or, when settings that have nothing to do with
    calling are invalid, from those values alone, with a one-line warning."""
    from callassist.envfiles import env_file_values
    from callassist.settings import DEFAULT_PORT, SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        names = (
            "CALLASSIST_HOST", "CALLASSIST_PORT", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL",
            "TWILIO_ACCOUNT_SID",
        )  # fmt: skip
        raw = {name: value.strip() for name, value in env_file_values(*names).items()}
        errors.print(
            f"[yellow]warning:[/] `serve` would refuse this configuration ({exc}); "
            "calling with CALLASSIST_PORT, TWILIO_AUTH_TOKEN and PUBLIC_BASE_URL as they are",
            highlight=False,
            soft_wrap=True,
        )
        port_text = raw.get("CALLASSIST_PORT") or str(DEFAULT_PORT)
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise fail(f"CALLASSIST_PORT: {port_text!r} is not a port number (1-65535)", 2) from None
        return (
            raw.get("CALLASSIST_HOST") or "127.0.0.1",
            int(port_text),
            raw.get("TWILIO_AUTH_TOKEN") or None,
            (raw.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            raw.get("TWILIO_ACCOUNT_SID") or None,
        )
    return (
        settings.host,
        settings.port,
        settings.signature_token,
        settings.public_base_url,
        settings.twilio_account_sid,
    )


def _local_url(host: str, port: int) -> str:
    """Where a server listening on host:port is reached from this machine."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # all interfaces: loopback is one of them
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def call(
    url: Annotated[
        str | None,
        typer.Option(help="Where the callassist server listens (default: the port `serve` uses)"),
    ] = None,
    say: Annotated[str | None, typer.Option(help="What the caller says (spoken with espeak-ng)")] = None,
    audio: Annotated[
        Path | None, typer.Option(help="A WAV file the caller plays instead of --say", exists=True)
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Save what the caller heard to this WAV file")] = None,
    seconds: Annotated[float, typer.Option(help="Hang up after this many seconds at most")] = 60.0,
    from_number: Annotated[str, typer.Option("--from", help="The caller's number")] = "+15551230000",
    to_number: Annotated[str, typer.Option("--to", help="The number dialled")] = "+15559870000",
    owner_answers: Annotated[bool, typer.Option(help="Pretend the owner picks up when rung")] = False,
) -> None:
    """Play Twilio and a caller against a running server, and report what happened.

    Reads the environment and .env as `serve` does: the port, TWILIO_AUTH_TOKEN (to sign requests
    as Twilio would) and PUBLIC_BASE_URL (the URL signatures are computed on).
    """
    from callassist.simulator.errors import SimulatorError
    from callassist.simulator.report import run_call

    if say and audio:
        raise fail("give either --say or --audio, not both", 2)
    host, port, token, public, account_sid = _call_settings()
    try:
        asyncio.run(
            run_call(
                url or _local_url(host, port),
                say=say,
                audio=audio,
                out=out,
                seconds=seconds,
                auth_token=token,
                public_base_url=public,
                account_sid=account_sid,  # a server with TWILIO_ACCOUNT_SID refuses any other
                from_number=from_number,
                to_number=to_number,
                owner_answers=owner_answers,
                console=console,
            )
        )
    except SimulatorError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
