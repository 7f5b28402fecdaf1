"""The owner sees what became of the notices: each call's notices (`calls show`, GET /api/calls/<sid>)
and the list of them (`callassist notices list`, GET /api/notices), a failed one with its reason as
stored; never a notice's body."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from callassist.dashboard.serialize import notice_json, notices_json
from callassist.store.db import Database
from callassist.store.models import OutboxRow
from callassist.store.records import get_call, list_notices
from tests.records.seed import (
    BAD_ADDRESS,
    BOB_CALL,
    DETAILED,
    NOTICE_BODY_MARK,
    NOTICES_NEWEST_FIRST,
    NY,
    OWNER_EMAIL,
    OWNER_PHONE,
    SMTP_REFUSAL,
    TWILIO_REFUSAL,
    at,
)
from tests.support.records import ADMIN_TOKEN, Cli, get_json
from tests.support.server import RunningServer

FAILED_EMAIL = {
    "call_sid": DETAILED,
    "channel": "email",
    "recipient": OWNER_EMAIL,
    "subject": "Call from Alex Chen (+15551230000)",
    "status": "failed",
    "attempts": 3,
    "last_error": SMTP_REFUSAL,
    "created_at": "2026-11-24T10:02:31.000-05:00",
    "next_attempt_at": None,  # only while pending
    "sent_at": None,
}


def keys(notices: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(notice["call_sid"], notice["channel"], notice["status"]) for notice in notices]


def without_id(notice: dict[str, object]) -> dict[str, object]:
    assert isinstance(notice["id"], int)
    return {key: value for key, value in notice.items() if key != "id"}


# The store ----------------------------------------------------------------------------------------


async def test_notices_in_the_store(seeded: Database) -> None:
    async with seeded.session(read_only=True) as session:
        every = await list_notices(session)
        failed = await list_notices(session, status="failed")
        pending = await list_notices(session, status="pending")
        detail = await get_call(session, DETAILED)
    assert [(n.call_sid, n.channel, n.status) for n in every] == NOTICES_NEWEST_FIRST
    assert [(n.call_sid, n.last_error) for n in failed] == [(DETAILED, SMTP_REFUSAL), (None, BAD_ADDRESS)]
    [retrying] = pending
    assert retrying.next_attempt_at is not None and retrying.last_error == TWILIO_REFUSAL
    assert detail is not None and [(n.channel, n.status) for n in detail.notices] == [
        ("sms", "sent"),
        ("email", "failed"),
    ]
    shown = notices_json(every, NY)
    assert without_id(shown["notices"][0]) == FAILED_EMAIL
    assert without_id(notice_json(every[1], NY)) == {
        "call_sid": DETAILED,
        "channel": "sms",
        "recipient": OWNER_PHONE,
        "subject": None,
        "status": "sent",
        "attempts": 1,
        "last_error": None,
        "created_at": "2026-11-24T10:02:31.000-05:00",
        "next_attempt_at": None,
        "sent_at": "2026-11-24T10:02:32.000-05:00",
    }
    assert shown["notices"][2]["next_attempt_at"] == "2026-11-23T07:03:25.000-05:00"
    assert NOTICE_BODY_MARK not in json.dumps(shown)


# The CLI, as real processes -----------------------------------------------------------------------


async def test_cli_json_is_the_api_shape(cli: Cli, cli_database: Database) -> None:
    every, failed, pending, shown = await asyncio.gather(
        cli.json("notices", "list"),
        cli.json("notices", "list", "--failed"),
        cli.json("notices", "list", "--status", "pending", "--limit", "1"),
        cli.json("calls", "show", DETAILED),
    )
    async with cli_database.session(read_only=True) as session:
        assert every == notices_json(await list_notices(session), NY)
        assert failed == notices_json(await list_notices(session, status="failed"), NY)
        assert pending == notices_json(await list_notices(session, status="pending", limit=1), NY)
    assert keys(every["notices"]) == NOTICES_NEWEST_FIRST
    assert keys(failed["notices"]) == [(DETAILED, "email", "failed"), (None, "email", "failed")]
    assert keys(pending["notices"]) == [(BOB_CALL, "sms", "pending")]
    assert [without_id(notice) for notice in shown["notices"]][1] == FAILED_EMAIL
    assert keys(shown["notices"]) == [(DETAILED, "sms", "sent"), (DETAILED, "email", "failed")]
    for output in (every, shown):
        assert NOTICE_BODY_MARK not in json.dumps(output)


async def test_cli_shows_failed_notices_with_their_reasons(cli: Cli) -> None:
    (shown_code, shown), (listed_code, listed), (failed_code, failed) = await asyncio.gather(
        cli.run("calls", "show", DETAILED),
        cli.run("notices", "list"),
        cli.run("notices", "list", "--failed"),
    )
    assert shown_code == 0, shown
    section = shown[shown.index("Notices") : shown.index("Usage")]
    rows = [line.split() for line in section.splitlines()[1:] if line.strip()]
    assert rows[0] == ["Channel", "To", "Status", "Attempts", "Last", "error"]
    assert rows[1] == ["sms", OWNER_PHONE, "sent", "1"]
    assert rows[2] == ["email", OWNER_EMAIL, "failed", "3", *SMTP_REFUSAL.split()]  # markup-like text kept

    assert listed_code == 0, listed
    lines = listed.splitlines()
    # Newest first, times in the owner's zone, each with its delivery state and call.
    assert lines == [
        f"Tue 2026-11-24 10:02  email to {OWNER_EMAIL}  failed  3 attempts",
        f"  last error: {SMTP_REFUSAL}",
        f"  call {DETAILED}",
        f"Tue 2026-11-24 10:02  sms to {OWNER_PHONE}  sent 10:02  1 attempt",
        f"  call {DETAILED}",
        f"Mon 2026-11-23 07:03  sms to {OWNER_PHONE}  pending (next try 07:03)  2 attempts",
        f"  last error: {TWILIO_REFUSAL}",
        f"  call {BOB_CALL}",
        "Sat 2026-11-21 04:00  email to dana@  failed  1 attempt",
        f"  last error: {BAD_ADDRESS}",
        "  no call",
    ]
    assert failed_code == 0, failed
    assert failed.splitlines() == [line for index, line in enumerate(lines) if index in (0, 1, 2, 8, 9, 10)]
    for output in (shown, listed):
        assert NOTICE_BODY_MARK not in output


async def test_a_stored_reason_is_printed_never_obeyed(cli: Cli, cli_database: Database) -> None:
    # A row written before reasons were one clean line, holding a terminal escape and a line break.
    reason = "relay said\n\x1b[2J[bold]no[/bold]\u202e"
    async with cli_database.session() as session:
        session.add(
            OutboxRow(
                dedupe_key="old",
                channel="email",
                recipient=OWNER_EMAIL,
                body=NOTICE_BODY_MARK,
                call_sid=DETAILED,
                status="failed",
                attempts=1,
                last_error=reason,
                created_at=at(3000),
                next_attempt_at=at(3000),
            )
        )
    (listed_code, listed), (shown_code, shown), as_json = await asyncio.gather(
        cli.run("notices", "list", "--failed", "--limit", "1"),
        cli.run("calls", "show", DETAILED),
        cli.json("notices", "list", "--limit", "1"),
    )
    assert listed_code == 0 and shown_code == 0, (listed, shown)
    escaped = r"relay said \x1b[2J[bold]no[/bold]\u202e"
    assert f"  last error: {escaped}" in listed.splitlines()
    assert escaped in shown
    for output in (listed, shown):
        assert "\x1b" not in output and "\u202e" not in output
    assert as_json["notices"][0]["last_error"] == reason  # the JSON has it exactly as stored


async def test_cli_refuses_a_bad_status_and_says_when_there_is_none(cli: Cli, tmp_path: Path) -> None:
    empty = Cli(tmp_path / "fresh", tmp_path)
    results = await asyncio.gather(
        cli.run("notices", "list", "--status", "lost"),
        cli.run("notices", "list", "--failed", "--status", "sent"),
        empty.run("notices", "list"),
        empty.run("notices", "list", "--failed"),
        empty.json("notices", "list"),
    )
    (bad_code, bad), (clash_code, clash), (none_code, none), (no_failed_code, no_failed), none_json = results
    assert bad_code == 2 and bad.splitlines() == ["error: --status must be one of: pending, sent, failed"]
    assert clash_code == 2 and len(clash.splitlines()) == 1 and "contradict" in clash
    assert (none_code, none) == (0, "No notices.")
    assert (no_failed_code, no_failed) == (0, "No failed notices.")
    assert none_json == {"notices": []}


# The API, over real HTTP --------------------------------------------------------------------------


async def test_api_notices(server: RunningServer, http: aiohttp.ClientSession) -> None:
    url = server.base_url + "/api/notices"
    status, every = await get_json(http, url)
    assert status == 200 and keys(every["notices"]) == NOTICES_NEWEST_FIRST
    assert without_id(every["notices"][0]) == FAILED_EMAIL
    status, failed = await get_json(http, url, status="failed")
    assert status == 200
    assert [(n["call_sid"], n["last_error"]) for n in failed["notices"]] == [
        (DETAILED, SMTP_REFUSAL),
        (None, BAD_ADDRESS),
    ]
    for wanted in ("pending", "sent"):
        status, body = await get_json(http, url, status=wanted)
        assert status == 200 and {n["status"] for n in body["notices"]} == {wanted}
    status, first = await get_json(http, url, limit="1")
    assert status == 200 and keys(first["notices"]) == NOTICES_NEWEST_FIRST[:1]
    status, blank = await get_json(http, url, status="")  # no filter, as with the other parameters
    assert status == 200 and blank == every

    for params in ({"status": "lost"}, {"status": "FAILED"}, {"limit": "0"}, {"limit": "201"}):
        status, body = await get_json(http, url, **params)
        assert status == 400, params
        assert set(body) == {"error"}
    _, body = await get_json(http, url, status="lost")
    assert body["error"] == "status must be one of: pending, sent, failed"

    status, detail = await get_json(http, f"{server.base_url}/api/calls/{DETAILED}")
    assert status == 200
    assert keys(detail["notices"]) == [(DETAILED, "sms", "sent"), (DETAILED, "email", "failed")]
    assert without_id(detail["notices"][1]) == FAILED_EMAIL
    status, bob = await get_json(http, f"{server.base_url}/api/calls/{BOB_CALL}")
    assert status == 200 and [n["last_error"] for n in bob["notices"]] == [TWILIO_REFUSAL]

    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        assert response.headers["Cache-Control"] == "no-store"
        assert NOTICE_BODY_MARK not in await response.text()


async def test_api_notices_need_the_owner(server: RunningServer, http: aiohttp.ClientSession) -> None:
    # Refused before the parameters are looked at: a bad status gets 401, not 400.
    status, body = await get_json(http, server.base_url + "/api/notices", token="wrong", status="lost")
    assert status == 401 and set(body) == {"error"}
