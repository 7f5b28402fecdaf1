"""`callassist messages`: the messages callers left for the owner."""

from __future__ import annotations

from typing import Annotated

import typer

from callassist.cli.common import console, echo_json, open_records, run_on_database, settings_or_exit
from callassist.cli.text import local, who

app = typer.Typer(help="Messages callers left for the owner.", no_args_is_help=True)


@app.command("list")
def messages_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/messages)")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many messages, newest first")] = 50,
) -> None:
    """List the messages callers left, newest first."""
    from rich.text import Text

    from callassist.dashboard.serialize import messages_json
    from callassist.store.records import MessageRecord, list_messages

    settings = settings_or_exit()

    async def listing() -> list[MessageRecord]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await list_messages(session, limit=limit)

    messages = run_on_database(listing())
    if as_json:
        echo_json(messages_json(messages, settings.zone))
        return
    if not messages:
        console.print("No messages.")
        return
    from rich.padding import Padding

    for message in messages:
        head = Text.assemble(
            (local(message.created_at, settings), "bold"),
            "  ",
            who(message.caller_name, message.caller_number),
            "  ",
            (message.urgency, "bold red" if message.urgency in ("high", "urgent") else ""),
        )
        if message.callback_number:
            head.append(f"  call back on {message.callback_number}")
        console.print(head)
        console.print(Padding(Text(message.message), (0, 0, 0, 2), expand=False))
