"""The owner's JSON API over real HTTP: refused without the admin token, the records with it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yarl

from tests.records.seed import ALEX, BOB_CALL, DETAILED, LIVE, NEWEST_FIRST, SUMMARY
from tests.support.records import ADMIN_TOKEN, get_json, seeded_api_server
from tests.support.server import AUTH_TOKEN, RunningServer

ROUTES = ["/api/calls", f"/api/calls/{DETAILED}", "/api/messages", "/api/notices", "/api/contacts"]


@pytest.mark.parametrize("route", ROUTES)
async def test_refused_without_the_token(
    server: RunningServer, http: aiohttp.ClientSession, route: str
) -> None:
    attempts = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN_TOKEN}"})
    for number, headers in enumerate(attempts):
        # Each from its own client (as a tunnel reports it): repeated refusals of one client get 429.
        headers = {**headers, "X-Forwarded-For": f"203.0.113.{number + 1}"}
        # Refused before anything else is looked at, bad parameters included.
        async with http.get(server.base_url + route, headers=headers, params={"limit": "999"}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            body = await response.json()
            assert set(body) == {"error"} and "Bearer" in body["error"]


async def test_calls_list(server: RunningServer, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, server.base_url + "/api/calls")
    assert status == 200
    assert [call["call_sid"] for call in body["calls"]] == NEWEST_FIRST
    assert body["next_before"] is None
    detailed = body["calls"][1]
    assert detailed == {
        "call_sid": DETAILED,
        "caller_number": ALEX,
        "caller_name": "Alex Chen",
        "started_at": "2026-11-24T10:00:00.000-05:00",
        "ended_at": "2026-11-24T10:02:30.000-05:00",
        "duration_s": 150.0,
        "outcome": "caller-hung-up",
        "cost_usd": "0.012346",
        "cost_usd_float": 0.012345678,
        "cost_nanousd": 12_345_678,
        "summary": SUMMARY,
        "urgency": "normal",
        "follow_up": True,
        "message_count": 1,
        "booking_count": 1,
    }
    assert body["calls"][0]["ended_at"] is None and body["calls"][0]["duration_s"] is None


async def test_calls_pages_and_filters(server: RunningServer, http: aiohttp.ClientSession) -> None:
    url = server.base_url + "/api/calls"
    _, first = await get_json(http, url, limit="3")
    assert [call["call_sid"] for call in first["calls"]] == NEWEST_FIRST[:3]
    _, rest = await get_json(http, url, limit="3", before=first["next_before"])
    assert [call["call_sid"] for call in rest["calls"]] == NEWEST_FIRST[3:]
    assert rest["next_before"] is None

    _, alex = await get_json(http, url, caller="+1 (555) 123-0000")
    assert [call["call_sid"] for call in alex["calls"]] == [sid for sid in NEWEST_FIRST if sid != BOB_CALL]
    _, anonymous = await get_json(http, url, caller="anonymous")
    assert anonymous["calls"] == []

    # A client that doesn't encode the '+' of an offset sends a space; it still means '+'.
    raw = yarl.URL(f"{url}?before=2026-11-24T16:00:00+00:00", encoded=True)
    async with http.get(raw, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        body = await response.json()
    assert [call["call_sid"] for call in body["calls"]] == NEWEST_FIRST[1:]
    # A time without an offset is the owner's local time.
    _, local = await get_json(http, url, before="2026-11-24T10:00")
    assert [call["call_sid"] for call in local["calls"]] == NEWEST_FIRST[2:]

    for params in ({"limit": "201"}, {"limit": "0"}, {"limit": "many"}, {"before": "yesterday"}):
        status, body = await get_json(http, url, **params)
        assert status == 400, params
        assert set(body) == {"error"}


async def test_an_out_of_range_before_is_a_bad_request(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    url = server.base_url + "/api/calls"
    # Valid ISO dates that leave datetime's range once moved to UTC (the owner's zone is UTC-5).
    for before in ("9999-12-31T23:59", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        status, body = await get_json(http, url, before=before)
        assert status == 400, (before, body)
        assert set(body) == {"error"} and "out of range" in body["error"]
    # The extremes that stay in range are fine.
    for before, expected in (("0001-01-01T00:00Z", []), ("9999-12-31T23:59:59Z", NEWEST_FIRST)):
        status, body = await get_json(http, url, before=before)
        assert status == 200, (before, body)
        assert [call["call_sid"] for call in body["calls"]] == expected


async def test_one_call(server: RunningServer, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, f"{server.base_url}/api/calls/{DETAILED}")
    assert status == 200
    assert body["call_sid"] == DETAILED and body["caller_name"] == "Alex Chen"
    assert body["cost_usd"] == "0.012346"
    assert [entry["role"] for entry in body["transcript"]] == [
        "assistant",
        "caller",
        "assistant",
        "caller",
        "system",
        "assistant",
        "assistant",
    ]
    interrupted = body["transcript"][2]
    assert interrupted["interrupted"] is True and interrupted["heard_ms"] == 1400
    assert set(interrupted) == {"role", "text", "at", "interrupted", "heard_ms", "audio_ms", "latency_ms"}
    assert [tool["name"] for tool in body["tool_calls"]] == [
        "check_availability",
        "create_event",
        "create_event",
    ]
    assert set(body["tool_calls"][0]) == {"name", "arguments", "result", "ok", "at", "duration_ms"}
    assert body["tool_calls"][2]["result"] == {"booked": True, "id": "ev1"}
    assert len(body["usage"]) == 4 and body["usage"][0]["cost_usd"] == "0.001235"
    assert body["messages"][0]["message"] == "Please bring the contract."
    assert body["latency"]["p50_ms"] == 700 and body["latency"]["max_ms"] == 1020

    status, body = await get_json(http, f"{server.base_url}/api/calls/{LIVE}")
    assert status == 200 and body["transcript"] == [] and body["latency"]["average_ms"] is None

    status, body = await get_json(http, f"{server.base_url}/api/calls/CAunknown")
    assert status == 404 and "CAunknown" in body["error"]


async def test_messages_and_contacts(server: RunningServer, http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, server.base_url + "/api/messages", limit="2")
    assert status == 200
    assert [message["message"] for message in body["messages"]] == [
        "Please bring the contract.",
        "Invoice 42 is overdue.",
    ]
    assert body["messages"][0] == {
        "id": body["messages"][0]["id"],
        "call_sid": DETAILED,
        "caller_number": ALEX,
        "caller_name": "Alex Chen",
        "callback_number": "+15551239999",
        "message": "Please bring the contract.",
        "urgency": "high",
        "created_at": "2026-11-24T10:01:00.000-05:00",
    }
    status, body = await get_json(http, server.base_url + "/api/contacts")
    assert status == 200
    assert body == {
        "contacts": [
            {
                "phone": ALEX,
                "name": "Alex Chen",
                "note": "Prefers afternoons",
                "vip": False,
                "blocked": False,
                "created_at": "2026-11-24T10:00:00.000-05:00",
                "updated_at": "2026-11-24T10:00:00.000-05:00",
            }
        ]
    }


async def test_no_secret_is_ever_served(server: RunningServer, http: aiohttp.ClientSession) -> None:
    for route in ROUTES:
        async with http.get(
            server.base_url + route, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            text = await response.text()
        for secret in (ADMIN_TOKEN, AUTH_TOKEN, "sk-test"):
            assert secret not in text


async def test_without_a_token_configured_only_direct_loopback_is_served(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with seeded_api_server(tmp_path / "data") as running:
        status, body = await get_json(http, running.base_url + "/api/calls", token=None)
        assert status == 200 and len(body["calls"]) == len(NEWEST_FIRST)
        # Through a tunnel or proxy the socket is loopback, but the client is not.
        async with http.get(
            running.base_url + "/api/contacts", headers={"X-Forwarded-For": "203.0.113.9"}
        ) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
