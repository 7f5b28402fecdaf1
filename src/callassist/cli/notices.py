"""`callassist notices`: the notices sent to the owner, and whether they arrived."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from callassist.cli.common import console, echo_json, fail, open_records, run_on_database, settings_or_exit
from callassist.cli.text import NOTICE_STYLES, attempts, local, local_since, terminal_safe

if TYPE_CHECKING:
    from callassist.store.records import NoticeRecord

app = typer.Typer(
    help="Notices sent to the owner (SMS, e-mail) and whether they arrived.", no_args_is_help=True
)


@app.command("list")
def notices_list(
    failed: Annotated[bool, typer.Option("--failed", help="Only the notices that failed for good")] = False,
    status: Annotated[
        str | None, typer.Option(help="Only notices with this status: pending, sent or failed")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/notices)")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many notices, newest first")] = 50,
) -> None:
    """List the notices sent to the owner and their delivery, newest first (CALLASSIST_TIMEZONE).

    A failed notice will never arrive; it shows the reason it was given up, as stored.
    """
    from rich.padding import Padding
    from rich.text import Text

    from callassist.dashboard.serialize import notices_json
    from callassist.store.records import NOTICE_STATUSES, list_notices

    if status is not None and status not in NOTICE_STATUSES:
        raise fail(f"--status must be one of: {', '.join(NOTICE_STATUSES)}", 2)
    if failed and status not in (None, "failed"):
        raise fail(f"--failed and --status {status} contradict each other", 2)
    wanted = "failed" if failed else status
    settings = settings_or_exit()

    async def listing() -> list[NoticeRecord]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await list_notices(session, status=wanted, limit=limit)

    notices = run_on_database(listing())
    if as_json:
        echo_json(notices_json(notices, settings.zone))
        return
    if not notices:
        console.print("No notices." if wanted is None else f"No {wanted} notices.", highlight=False)
        return
    for notice in notices:
        state = notice.status
        if notice.sent_at is not None:
            state += f" {local_since(notice.sent_at, notice.created_at, settings)}"
        elif notice.next_attempt_at is not None:
            state += f" (next try {local_since(notice.next_attempt_at, notice.created_at, settings)})"
        head = Text.assemble(
            (local(notice.created_at, settings), "bold"),
            f"  {notice.channel} to ",
            notice.recipient,
            "  ",
            (state, NOTICE_STYLES.get(notice.status, "")),
            f"  {attempts(notice.attempts)}",
        )
        console.print(head)
        if notice.last_error:
            reason = Text.assemble(("last error: ", "dim"), terminal_safe(notice.last_error))
            console.print(Padding(reason, (0, 0, 0, 2), expand=False))
        about = f"call {notice.call_sid}" if notice.call_sid else "no call"
        console.print(Padding(Text(about, style="dim"), (0, 0, 0, 2), expand=False))
