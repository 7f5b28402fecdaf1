"""`callassist calls|messages|contacts` as real processes against a seeded SQLite database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from callassist.dashboard.serialize import call_detail_json, calls_json, contacts_json, messages_json
from callassist.store.contacts import ContactRepository
from callassist.store.db import Database
from callassist.store.records import get_call, list_calls, list_messages
from tests.records.seed import ALEX, BOB_CALL, DETAILED, NEWEST_FIRST, NY
from tests.support.records import Cli


async def test_json_output_is_the_api_shape(cli: Cli, cli_database: Database) -> None:
    listed, from_alex, older, shown, messages, contacts = await asyncio.gather(
        cli.json("calls", "list"),
        cli.json("calls", "list", "--caller", "+1 555 123 0000", "--limit", "2"),
        cli.json("calls", "list", "--before", "2026-11-23T08:00"),  # the owner's local time
        cli.json("calls", "show", DETAILED),
        cli.json("messages", "list"),
        cli.json("contacts", "list"),
    )
    async with cli_database.session(read_only=True) as session:
        detail = await get_call(session, DETAILED)
        assert detail is not None
        assert listed == calls_json(await list_calls(session), NY, limit=50)
        assert from_alex == calls_json(await list_calls(session, limit=2, caller=ALEX), NY, limit=2)
        assert shown == call_detail_json(detail, NY)
        assert messages == messages_json(await list_messages(session), NY)
        assert contacts == contacts_json(await ContactRepository(session).list(), NY)
    assert [call["call_sid"] for call in listed["calls"]] == NEWEST_FIRST
    assert [call["call_sid"] for call in older["calls"]] == NEWEST_FIRST[2:]
    assert from_alex["next_before"] is not None and BOB_CALL not in json.dumps(from_alex)
    assert shown["transcript"][2]["interrupted"] is True


async def test_human_output(cli: Cli) -> None:
    (listed_code, listed), (shown_code, shown), (missing_code, missing) = await asyncio.gather(
        cli.run("calls", "list"),
        cli.run("calls", "show", DETAILED),
        cli.run("calls", "show", "CAnope"),
    )
    assert listed_code == 0, listed
    assert all(sid in listed for sid in NEWEST_FIRST)
    assert "Alex Chen" in listed and "2m 30s" in listed and "1 booking" in listed

    assert shown_code == 0, shown
    for expected in (
        "Alex Chen +15551230000",
        "Tue 2026-11-24 10:00:00 EST",
        "ended 10:02:30 (2m 30s)",
        "caller-hung-up",
        "$0.012346",
        "greeting 850 ms",
        "p50 700 ms",
        "max 1020 ms",
        "Let me check Wednesday for (interrupted after 1.4 s)",
        "2 pm? [urgent]",  # caller text is printed as is, never read as rich markup
        "create_event failed",
        "Please bring the contract.",
        "Usage",
    ):
        assert expected in shown, f"{expected!r} not in:\n{shown}"
    # The tool call sits between the turns it happened between.
    assert shown.index("Actually, make it 2:30.") < shown.index("check_availability ok")
    assert shown.index("check_availability ok") < shown.index("You're booked")

    assert missing_code == 1
    assert missing.splitlines() == ["error: no call 'CAnope' (see `callassist calls list`)"]


async def test_contacts_add_list_remove(cli: Cli) -> None:
    code, output = await cli.run("contacts", "add", "+1 555-987-6543", "Sam Lee", "--note", "Plumber")
    assert code == 0, output
    assert "Saved Sam Lee (+15559876543)" in output
    code, output = await cli.run("contacts", "add", "555-1234", "Bob")
    assert code == 2
    assert len(output.splitlines()) == 1 and "country code" in output

    listed = await cli.json("contacts", "list")
    assert [(c["phone"], c["name"], c["note"]) for c in listed["contacts"]] == [
        (ALEX, "Alex Chen", "Prefers afternoons"),
        ("+15559876543", "Sam Lee", "Plumber"),
    ]

    code, output = await cli.run("contacts", "remove", "+15559876543")
    assert code == 0 and "Removed +15559876543" in output
    code, output = await cli.run("contacts", "remove", "+15559876543")
    assert code == 1 and output.splitlines() == ["error: no contact with the number +15559876543"]


async def test_block_unblock_and_vip(cli: Cli) -> None:
    code, output = await cli.run("block", "+1 555 000 4444")
    assert (code, output) == (0, "Blocked +15550004444")
    code, output = await cli.run("contacts", "add", "+15559876543", "Sam Lee", "--vip")
    assert code == 0 and "Saved Sam Lee (+15559876543) (VIP)" in output
    code, output = await cli.run("blocked")
    assert (code, output) == (0, "+15550004444")
    listed = {c["phone"]: (c["vip"], c["blocked"]) for c in (await cli.json("contacts", "list"))["contacts"]}
    assert listed["+15550004444"] == (False, True) and listed["+15559876543"] == (True, False)
    code, output = await cli.run("unblock", "+15550004444")
    assert (code, output) == (0, "Unblocked +15550004444")
    assert await cli.run("blocked") == (0, "No blocked numbers.")
    code, output = await cli.run("block", "555-1234")
    assert code == 2 and "country code" in output


async def test_an_empty_database_is_created_and_an_unreachable_one_is_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "fresh", tmp_path)
    unreachable = Cli(tmp_path / "unused", tmp_path)
    # Nothing listens on the discard port: the failure is one line, the password never shown.
    unreachable.env["DATABASE_URL"] = "postgresql://owner:s3cret@127.0.0.1:9/callassist"
    (calls_code, calls), (messages_code, messages), (down_code, down) = await asyncio.gather(
        cli.run("calls", "list"), cli.run("messages", "list"), unreachable.run("contacts", "list")
    )
    assert (calls_code, calls) == (0, "No calls yet.")
    assert (messages_code, messages) == (0, "No messages.")
    assert (tmp_path / "fresh" / "callassist.db").exists()
    assert down_code == 1 and len(down.splitlines()) == 1
    assert down.startswith("error: could not read the database:") and "s3cret" not in down
