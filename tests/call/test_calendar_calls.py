"""The calendar during a call: the fake model calls our tools, the call runs them and answers."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callassist.calendar.base import NewEvent
from callassist.calendar.booking import BookingService
from callassist.calendar.timeutil import localize
from callassist.settings import Settings
from callassist.simulator.audio import tone
from tests.fakes.realtime_server import (
    CallFunction,
    FakeSession,
    Reply,
    ResponseContext,
    Say,
    Script,
    UseTool,
)
from tests.support.process import ChildProcess, callassist_command
from tests.support.stack import Stack, StackFactory

ZONE = ZoneInfo("America/New_York")
OWNER_PHONE = "+15550001111"
CALLER = "+15551230000"
ATTESTED = {"StirVerstat": "TN-Validation-Passed-A"}  # the carrier vouches for the caller ID
# Every day is a working day here, so "tomorrow at 2 pm" is bookable whatever day the suite runs.
SETTINGS: dict[str, Any] = {"timezone": "America/New_York", "working_hours": "Mon-Sun 09:00-17:00"}


def tomorrow() -> date:
    return datetime.now(ZONE).date() + timedelta(days=1)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return localize(datetime.combine(day, datetime.min.time()).replace(hour=hour, minute=minute), ZONE)


def speak_tool_result(ctx: ResponseContext) -> Reply:
    """The model's next turn: say what the tool told it to say (or its error)."""
    output = json.loads(ctx.last_function_output or "{}")
    return Reply([Say(output.get("say") or output.get("error") or "Sorry.", audio=tone(400, 500))])


async def caller_turn(stack: Stack, call: Any, expected_responses: int) -> None:
    """The caller says something; wait until the model has answered `expected_responses` times."""
    session = stack.fake.sessions[-1]
    said = time.monotonic()
    await call.say(tone(800, 300))
    await stack.fake.wait_until(
        lambda: len([r for r in session.responses if r["status"] == "completed"]) >= expected_responses,
        timeout=15,
    )
    await call.wait_until_quiet(quiet_ms=150, timeout=10, after=said)


def function_outputs(session: FakeSession) -> list[dict[str, Any]]:
    return [json.loads(output) for _, output in session.function_outputs]


def arguments_text(session: FakeSession) -> list[str]:
    """The arguments of each function call the fake model made, as sent on the wire."""
    return [
        sent.event["arguments"]
        for sent in session.server_events
        if sent.type == "response.function_call_arguments.done"
    ]


def arguments_sent(session: FakeSession) -> list[dict[str, Any]]:
    return [json.loads(text) for text in arguments_text(session)]


async def test_booking_tomorrow_at_2pm_is_stored_and_answered_after_the_tool(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    day = tomorrow()
    # What the caller said; the model writes the arguments from the declared schema (no length
    # given, so none is sent: the tool's default of one hour applies).
    intent = {
        "title": "Meeting with Alex Kim",
        "start": "tomorrow 14:00",
        "caller_name": "Alex Kim",
        "notes": "Project kickoff",
    }
    script = Script(
        replies=[
            Reply([Say("Hi, Dana's assistant.", audio=tone(500, 400))]),
            Reply(
                [
                    Say("One moment, let me check.", audio=tone(300, 450)),
                    UseTool("create_event", intent=intent),
                ]
            ),
            speak_tool_result,
        ],
        transcripts=["Hi, can you add a meeting tomorrow at 2pm?"],
    )
    stack = await make_stack(script, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await caller_turn(stack, call, expected_responses=3)
    await call.hang_up()

    session = stack.fake.sessions[0]
    # "tomorrow 14:00" as the model wrote it, from the date the instructions gave it.
    assert arguments_sent(session) == [
        {
            "title": "Meeting with Alex Kim",
            "start": f"{day.isoformat()}T14:00",
            "caller_name": "Alex Kim",
            "notes": "Project kickoff",
        }
    ]
    [output] = function_outputs(session)
    assert output["ok"] is True
    assert output["event"]["start"] == f"{day.isoformat()}T14:00:00{local(day, 14).strftime('%z')[:3]}:00"
    assert output["say"].startswith("Done: ") and "one hour, with Dana" in output["say"]
    # The answer was spoken after the tool result: output item, then one response.create, then audio.
    types = [e.type for e in session.client_events if e.type != "input_audio_buffer.append"]
    after_output = types[types.index("conversation.item.create") :]
    assert after_output[:2] == ["conversation.item.create", "response.create"]
    last = session.responses[-1]
    assert last["output"][0]["content"][0]["transcript"] == output["say"]
    output_at = next(e.t for e in session.client_events if e.type == "conversation.item.create")
    answer_started = next(
        e.t
        for e in session.server_events
        if e.type == "response.created" and e.event["response"]["id"] == last["id"]
    )
    assert answer_started > output_at
    # The session told the model about the tools and today's date.
    config = session.session_config
    assert {tool["name"] for tool in config["tools"]} >= {"check_availability", "create_event"}
    assert "get_my_agenda" not in {tool["name"] for tool in config["tools"]}
    assert datetime.now(ZONE).strftime("%A") in config["instructions"]

    # Stored at 14:00 local, visible from the CLI.
    listing = await ChildProcess(
        callassist_command("calendar", "list", "--json", "--from", day.isoformat(), "--to", day.isoformat()),
        env={
            "CALLASSIST_DATA_DIR": str(stack.server.settings.data_dir),
            "CALLASSIST_TIMEZONE": "America/New_York",
        },
        cwd=tmp_path,
    ).start()
    assert await listing.wait(timeout=30) == 0, listing.output
    [event] = json.loads(listing.output)
    assert event["title"] == "Meeting with Alex Kim"
    assert datetime.fromisoformat(event["start"]) == local(day, 14)
    assert datetime.fromisoformat(event["start"]).astimezone(ZONE).hour == 14
    assert datetime.fromisoformat(event["end"]) - datetime.fromisoformat(event["start"]) == timedelta(hours=1)
    assert event["caller_number"] == CALLER and event["caller_name"] == "Alex Kim"
    assert sys.executable  # the CLI ran in this interpreter's environment


# The day before a DST change, so "tomorrow 14:00" has another UTC offset than "now": an offset taken
# from the clock, from UTC or from the server's zone instead of the owner's zone on that day is an
# hour off. Both clocks the call reads (the instructions' date line and the booking's "now") are
# pinned to that morning; the model resolves "tomorrow" from the date line, as a real one does.
DST_EVES = [
    pytest.param("America/New_York", datetime(2026, 3, 7, 10, 0), id="new-york-springs-forward-overnight"),
    pytest.param("Europe/Berlin", datetime(2026, 10, 24, 10, 0), id="berlin-falls-back-overnight"),
]


@pytest.mark.parametrize(("zone_name", "wall_clock"), DST_EVES)
async def test_a_booking_by_a_schema_driven_model_lands_at_the_right_local_time(
    make_stack: StackFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    zone_name: str,
    wall_clock: datetime,
) -> None:
    zone = ZoneInfo(zone_name)
    now = wall_clock.replace(tzinfo=zone)
    monkeypatch.setattr(Settings, "local_now", lambda self: now.astimezone(self.zone))
    monkeypatch.setattr(BookingService, "now", lambda self: now.astimezone(UTC))
    day = now.date() + timedelta(days=1)
    wanted = datetime.combine(day, datetime.min.time()).replace(hour=14, tzinfo=zone)
    assert wanted.utcoffset() != now.utcoffset()  # the clocks change overnight

    def book_if_free(ctx: ResponseContext) -> Reply:
        """The model saw the availability; it books what the caller asked for, by intent only."""
        checked = ctx.last_output_of("check_availability") or {}
        if not checked.get("ok"):
            return Reply([Say("Sorry, I can't see the calendar right now.", audio=tone(300, 500))])
        intent = {"title": "Meeting with Alex Kim", "start": "tomorrow 14:00", "caller_name": "Alex Kim"}
        return Reply([UseTool("create_event", intent=intent)])

    script = Script(
        replies=[
            Reply([Say("Hi, Dana's assistant.", audio=tone(500, 400))]),
            Reply(
                [
                    Say("Let me check.", audio=tone(300, 450)),
                    UseTool("check_availability", intent={"date": "tomorrow"}),
                ]
            ),
            book_if_free,
            speak_tool_result,
        ],
        transcripts=["Hi, this is Alex Kim. Can I meet Dana tomorrow at 2 pm?"],
    )
    stack = await make_stack(script, **{**SETTINGS, "timezone": zone_name})
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await caller_turn(stack, call, expected_responses=4)
    await call.hang_up()

    session = stack.fake.sessions[0]
    assert f"{now:%A}, {now:%B} {now.day}, {now.year}" in session.session_config["instructions"]
    # The arguments are the model's, written from the schema: the local wall time, no offset.
    assert arguments_sent(session) == [
        {"date": day.isoformat()},
        {"title": "Meeting with Alex Kim", "start": f"{day.isoformat()}T14:00", "caller_name": "Alex Kim"},
    ]
    availability, booked = function_outputs(session)
    assert availability["ok"] is True and availability["days"][0]["date"] == day.isoformat()
    assert availability["days"][0]["free"] == "9 am to 5 pm"
    assert booked["ok"] is True, booked
    assert datetime.fromisoformat(booked["event"]["start"]) == wanted
    assert booked["event"]["start"] == wanted.isoformat()  # with that day's offset, not today's
    spoken = session.responses[-1]["output"][0]["content"][0]["transcript"]
    assert spoken == booked["say"] and "2 pm" in spoken

    # Stored at 14:00 local on that day, as the CLI reads it back from the store.
    listing = await ChildProcess(
        callassist_command("calendar", "list", "--json", "--from", day.isoformat(), "--to", day.isoformat()),
        env={"CALLASSIST_DATA_DIR": str(stack.server.settings.data_dir), "CALLASSIST_TIMEZONE": zone_name},
        cwd=tmp_path,
    ).start()
    assert await listing.wait(timeout=30) == 0, listing.output
    [event] = json.loads(listing.output)
    assert event["title"] == "Meeting with Alex Kim"
    start = datetime.fromisoformat(event["start"])
    assert start == wanted and start.astimezone(zone).hour == 14
    assert start.astimezone(zone).utcoffset() == wanted.utcoffset()
    assert datetime.fromisoformat(event["end"]) - start == timedelta(hours=1)
    assert event["caller_number"] == CALLER and event["caller_name"] == "Alex Kim"
    assert make_stack.protocol_problems() == []


async def test_conflict_past_time_and_nonsense_are_spoken_and_the_call_goes_on(
    make_stack: StackFactory,
) -> None:
    day = tomorrow()
    sync = {"title": "Sync", "caller_name": "Sam"}
    script = Script(
        replies=[
            Reply([Say("Hi", audio=tone(300, 400))]),
            Reply([UseTool("create_event", intent={**sync, "start": "tomorrow 14:00"})]),
            speak_tool_result,
            # A caller can ask for a time long gone; the schema allows it, the booking refuses it.
            Reply([UseTool("create_event", intent={**sync, "start": "2020-01-06 10:00"})]),
            speak_tool_result,
            # Bypasses the schema on purpose: truncated JSON, as from a cut-off argument stream.
            Reply(
                [CallFunction("create_event", '{"title": "Sync", "start": "next blursday", "caller_name": ')]
            ),
            speak_tool_result,
            # Bypasses the schema on purpose: wrong types and nonsense values, to hear the refusal.
            Reply([CallFunction("create_event", {"title": 42, "start": "whenever", "duration_minutes": -5})]),
            speak_tool_result,
        ]
    )
    stack = await make_stack(script, **SETTINGS)
    calendar = stack.server.services.calendar
    assert calendar is not None
    await calendar.create(
        NewEvent("Board meeting", local(day, 13, 30), local(day, 15), caller_number="+15559990000")
    )
    call = await stack.simulator.place_call(from_number=CALLER)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    for turn in range(4):
        await caller_turn(stack, call, expected_responses=3 + 2 * turn)
    session = stack.fake.sessions[0]
    conflict, past, bad_json, bad_types = function_outputs(session)
    assert [json.loads(text)["start"] for text in arguments_text(session)[:2]] == [
        f"{day}T14:00",
        "2020-01-06T10:00",
    ]

    assert conflict["ok"] is False and conflict["reason"] == "conflict"
    assert "already taken" in conflict["error"]
    offered = [datetime.fromisoformat(a["start"]) for a in conflict["alternatives"]]
    assert offered and all(
        o >= local(day, 15) or o + timedelta(hours=1) <= local(day, 13, 30) for o in offered
    )
    assert "Board meeting" not in json.dumps(conflict)  # only free/busy, never what the event is
    assert past["ok"] is False and past["reason"] == "past" and past["alternatives"]
    assert bad_json["ok"] is False and "not valid JSON" in bad_json["error"]
    assert bad_types["ok"] is False and "Invalid arguments" in bad_types["error"]
    # Each refusal was spoken, and the call is still up.
    spoken = [r["output"][0]["content"][0]["transcript"] for r in session.responses[2::2]]
    assert spoken[0].startswith("Sync") is False and "already taken" in spoken[0]
    assert len(spoken) == 4 and not call.ended
    assert len(await calendar.events_between(local(day, 0), local(day, 23))) == 1  # nothing double-booked
    await call.hang_up()


async def test_two_calls_in_one_response_are_both_answered_before_one_response_create(
    make_stack: StackFactory,
) -> None:
    day = tomorrow()
    script = Script(
        replies=[
            Reply([Say("Hi", audio=tone(300, 400))]),
            Reply([UseTool("check_availability", intent={"date": "tomorrow"}), UseTool("find_my_events")]),
            Reply([Say("You're free most of the day.", audio=tone(300, 500))]),
        ]
    )
    stack = await make_stack(script, **SETTINGS)
    call = await stack.simulator.place_call(from_number=CALLER, extra_params=ATTESTED)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await caller_turn(stack, call, expected_responses=3)
    session = stack.fake.sessions[0]
    events = [e for e in session.client_events if e.type in ("conversation.item.create", "response.create")]
    assert [e.type for e in events[-3:]] == [
        "conversation.item.create",
        "conversation.item.create",
        "response.create",
    ]
    assert len([e for e in events if e.type == "response.create"]) == 2  # the greeting and this one
    assert arguments_sent(session) == [{"date": day.isoformat()}, {}]
    availability, mine = function_outputs(session)
    assert availability["ok"] and availability["days"][0]["free"] == "9 am to 5 pm"
    assert availability["days"][0]["date"] == day.isoformat()
    assert mine == {"ok": True, "events": []}
    assert session.errors_sent == []
    await call.hang_up()


async def test_callers_hear_only_free_busy_and_the_owner_hears_the_agenda(make_stack: StackFactory) -> None:
    day = tomorrow()

    def ask_for_everything(ctx: ResponseContext) -> Reply:
        if "get_my_agenda" in ctx.tool_names:  # the owner's own call declares it
            agenda: UseTool | CallFunction = UseTool("get_my_agenda", intent={"date": "tomorrow"})
        else:
            # Bypasses the schema on purpose: a tool this caller's session doesn't declare.
            agenda = CallFunction("get_my_agenda", {"date": day.isoformat()})
        return Reply(
            [UseTool("check_availability", intent={"date": "tomorrow"}), UseTool("find_my_events"), agenda]
        )

    script = lambda: Script(  # noqa: E731 - each call gets its own script
        replies=[
            Reply([Say("Hi", audio=tone(300, 400))]),
            ask_for_everything,
            Reply([Say("Here you go.", audio=tone(300, 500))]),
        ]
    )
    stack = await make_stack(script, owner_phone=OWNER_PHONE, ring_owner_seconds=0, **SETTINGS)
    calendar = stack.server.services.calendar
    assert calendar is not None
    await calendar.create(
        NewEvent("Secret acquisition talk", local(day, 10), local(day, 11), caller_number="+15559990000",
                 caller_name="Pat Other", notes="Confidential")
    )  # fmt: skip
    await calendar.create(NewEvent("Call with Alex", local(day, 15), local(day, 16), caller_number=CALLER))

    # Their own bookings need their number to be theirs: here the carrier attests it (SHAKEN/STIR A).
    call = await stack.simulator.place_call(from_number=CALLER, extra_params=ATTESTED)
    await call.wait_until_quiet(quiet_ms=150, timeout=10)
    await caller_turn(stack, call, expected_responses=3)
    await call.hang_up()
    session = stack.fake.sessions[0]
    assert arguments_sent(session) == [{"date": day.isoformat()}, {}, {"date": day.isoformat()}]
    availability, mine, agenda = function_outputs(session)
    leaked = json.dumps([availability, mine, agenda])
    for secret in ("Secret acquisition talk", "Pat Other", "Confidential", "+15559990000"):
        assert secret not in leaked
    assert availability["days"][0]["free"] == "9 am to 10 am and 11 am to 3 pm and 4 pm to 5 pm"
    assert [event["title"] for event in mine["events"]] == ["Call with Alex"]
    assert agenda["ok"] is False  # not offered to callers, and refused if called anyway
    assert "get_my_agenda" not in {tool["name"] for tool in session.session_config["tools"]}

    # The owner's number without the carrier's attestation could be spoofed: just a caller.
    spoofed = await stack.simulator.place_call(from_number=OWNER_PHONE)
    await spoofed.wait_until_quiet(quiet_ms=150, timeout=10)
    await spoofed.hang_up()
    assert "get_my_agenda" not in {tool["name"] for tool in stack.fake.sessions[1].session_config["tools"]}

    owner_call = await stack.simulator.place_call(from_number=OWNER_PHONE, extra_params=ATTESTED)
    await owner_call.wait_until_quiet(quiet_ms=150, timeout=10)
    await caller_turn(stack, owner_call, expected_responses=3)
    await owner_call.hang_up()
    owner_session = stack.fake.sessions[2]
    assert "get_my_agenda" in {tool["name"] for tool in owner_session.session_config["tools"]}
    assert arguments_sent(owner_session)[-1] == {"date": day.isoformat()}
    *_, owner_agenda = function_outputs(owner_session)
    assert [event["title"] for event in owner_agenda["events"]] == [
        "Secret acquisition talk",
        "Call with Alex",
    ]
    assert owner_agenda["events"][0]["notes"] == "Confidential"
    assert datetime.fromisoformat(owner_agenda["events"][0]["start"]).astimezone(UTC) == local(day, 10)


async def test_the_same_booking_works_with_caldav_and_an_independent_client_sees_it(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    import aiohttp

    from tests.support.caldav_client import RawCalDAV
    from tests.support.radicale import running_radicale

    day = tomorrow()
    intent = {"title": "Meeting with Alex Kim", "start": "tomorrow 14:00", "caller_name": "Alex Kim"}
    script = Script(
        replies=[
            Reply([Say("Hi", audio=tone(300, 400))]),
            Reply([UseTool("create_event", intent=intent)]),
            speak_tool_result,
        ]
    )
    async with running_radicale(tmp_path / "radicale") as radicale:
        stack = await make_stack(
            script,
            calendar="caldav",
            caldav_url=radicale.url,
            caldav_username=radicale.username,
            caldav_password=radicale.password,
            caldav_calendar=radicale.calendar_name,
            **SETTINGS,
        )
        call = await stack.simulator.place_call(from_number=CALLER)
        await call.wait_until_quiet(quiet_ms=150, timeout=10)
        await caller_turn(stack, call, expected_responses=3)
        await call.hang_up()
        [output] = function_outputs(stack.fake.sessions[0])
        assert output["ok"] is True, output
        uid = output["event"]["id"]

        headers = {"Authorization": aiohttp.encode_basic_auth(radicale.username, radicale.password)}
        async with aiohttp.ClientSession(headers=headers) as http:
            stored = await RawCalDAV(http, radicale.calendar_url).event(uid)
        assert stored is not None
        assert str(stored["SUMMARY"]) == "Meeting with Alex Kim"
        assert stored.decoded("DTSTART") == local(day, 14)
        assert stored.decoded("DTEND") - stored.decoded("DTSTART") == timedelta(hours=1)
        assert str(stored["X-CALLASSIST-CALLER-NUMBER"]) == CALLER
        # A second request for the same slot is refused because CalDAV now says it's busy.
        services = stack.server.services
        assert services.tool_services is not None
        with pytest.raises(Exception, match="already taken"):
            await services.tool_services.booking.book(NewEvent("Again", local(day, 14), local(day, 15)))
