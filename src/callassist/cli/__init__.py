"""The `callassist` command: run the server, play a caller against it, and read what it recorded.

One module per command group: `serve`, `call`, `db`, `calendar`, `calls`, `messages`, `notices`,
`contacts`; `common` holds what they share (the consoles, settings, the database) and `text` how
records are shown. A command imports what it works with in its own body, so `callassist --help`
and every other command load no server code: no web app, no OpenAI SDK, no call core.
"""

from __future__ import annotations

import typer

from callassist.cli import calendar, call, calls, contacts, db, messages, notices, serve

__all__ = ["app", "main"]

app = typer.Typer(
    help="callassist: an AI phone assistant that answers your Twilio number when you can't.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve.serve)
app.command()(call.call)
app.add_typer(db.app, name="db")
app.add_typer(calendar.app, name="calendar")
app.add_typer(calls.app, name="calls")
app.add_typer(messages.app, name="messages")
app.add_typer(notices.app, name="notices")
app.add_typer(contacts.app, name="contacts")
app.command()(contacts.block)
app.command()(contacts.unblock)
app.command()(contacts.blocked)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="callassist")
