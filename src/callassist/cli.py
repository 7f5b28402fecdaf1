"""The `callassist` command: run the server, and play a caller against it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from callassist.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="callassist: an AI phone assistant that answers your Twilio number when you can't.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise fail(str(exc), 2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on [CALLASSIST_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [CALLASSIST_PORT]")] = None,
) -> None:
    """Run the server that answers calls."""
    from callassist import server
    from callassist.observability import setup_logging

    settings = settings_or_exit(host=host, port=port)
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        raise fail("OPENAI_API_KEY is not set: put it in the environment or in .env", 2)
    setup_logging(settings.log_level)
    server.run(settings)


@app.command()
def call(
    url: Annotated[str, typer.Option(help="Where the callassist server listens")] = "http://127.0.0.1:8000",
    say: Annotated[str | None, typer.Option(help="What the caller says (spoken with espeak-ng)")] = None,
    audio: Annotated[
        Path | None, typer.Option(help="A WAV file the caller plays instead of --say", exists=True)
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Save what the caller heard to this WAV file")] = None,
    seconds: Annotated[float, typer.Option(help="Hang up after this many seconds at most")] = 30.0,
    from_number: Annotated[str, typer.Option("--from", help="The caller's number")] = "+15551230000",
    to_number: Annotated[str, typer.Option("--to", help="The number dialled")] = "+15559870000",
    owner_answers: Annotated[bool, typer.Option(help="Pretend the owner picks up when rung")] = False,
) -> None:
    """Play Twilio and a caller against a running server, and report what happened.

    Signs requests with TWILIO_AUTH_TOKEN when it is set, as Twilio would (PUBLIC_BASE_URL tells
    which URL the server validates against).
    """
    from callassist.simulator.report import SimulatorError, run_call

    if say and audio:
        raise fail("give either --say or --audio, not both", 2)
    token = os.environ.get("TWILIO_AUTH_TOKEN") or None
    public = os.environ.get("PUBLIC_BASE_URL") or None
    try:
        asyncio.run(
            run_call(
                url,
                say=say,
                audio=audio,
                out=out,
                seconds=seconds,
                auth_token=token,
                public_base_url=public,
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


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="callassist")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
