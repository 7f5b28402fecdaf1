"""The dashboard's pages over a real server and the seeded records, without a browser: login and
logout, what each page shows, the history's search and filters, contact changes, and the gate
(every route refuses without the session cookie, every POST without its CSRF token)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from callassist.call.events import CallStarted, TurnHeard
from callassist.call.transcript import Turn
from callassist.dashboard.session import COOKIE
from callassist.media.recording import RECORDINGS
from callassist.store.contacts import ContactRepository
from callassist.store.db import Database
from callassist.store.models import CallRow, MessageRow, utc_now
from tests.records.seed import ALEX, BOB_CALL, DETAILED, OLDER, seed
from tests.support.dashboard import DashboardClient, csrf_of
from tests.support.postgres import postgres_database_or_skip
from tests.support.records import ADMIN_TOKEN
from tests.support.server import NO_OPENAI, RunningServer, running_server

PAGES = [
    "/dashboard",
    "/dashboard/history",
    f"/dashboard/calls/{DETAILED}",
    f"/dashboard/calls/{DETAILED}/recording",
    "/dashboard/inbox",
    "/dashboard/contacts",
]
POSTS = [
    "/dashboard/logout",
    f"/dashboard/calls/{DETAILED}/hangup",
    f"/dashboard/calls/{DETAILED}/take",
    "/dashboard/contacts",
    "/dashboard/messages/1/done",
]


@pytest.fixture
async def dashboard(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN) as running:
        await seed(running.services.database)
        yield running


@pytest.fixture
async def owner(dashboard: RunningServer) -> AsyncIterator[DashboardClient]:
    async with DashboardClient(dashboard.base_url) as client:
        await client.log_in(ADMIN_TOKEN)
        yield client


async def test_root_leads_to_the_dashboard_and_pages_need_the_session(dashboard: RunningServer) -> None:
    async with DashboardClient(dashboard.base_url) as stranger:
        status, _, response = await stranger.get("/")
        assert status == 307 and response.headers["Location"] == "/dashboard"
        for path in PAGES:
            status, body, response = await stranger.get(path)
            assert status == 303, path
            assert response.headers["Location"] == "/dashboard/login", path
            assert "Alex" not in body
        status, body, _ = await stranger.get("/dashboard/events")
        assert status == 401
        # A forged or tampered cookie is no session either.
        stranger.http.cookie_jar.update_cookies({COOKIE: "9999999999.abc.forged"})
        status, _, _ = await stranger.get("/dashboard/history")
        assert status == 303
        status, _, _ = await stranger.get("/dashboard/events")
        assert status == 401
        for path in POSTS:
            status, _, _ = await stranger.post(path, {"csrf": "x", "phone": ALEX, "action": "block"})
            assert status == 403, path
        status, html, _ = await stranger.get("/dashboard/login")
        assert status == 200 and 'name="token"' in html and 'type="password"' in html


async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(
    dashboard: RunningServer,
) -> None:
    async with DashboardClient(dashboard.base_url) as client:
        status, _, response = await client.post("/dashboard/login", {"token": ADMIN_TOKEN})
        assert status == 303
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
        assert "Path=/dashboard" in cookie
        assert "Secure" not in cookie  # plain http on loopback; see the https test below
        value = response.cookies[COOKIE].value
        status, html, response = await client.get("/dashboard")
        assert status == 200 and "Live calls" in html
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
        csrf = csrf_of(html)
        # Logging out needs the CSRF token too.
        status, _, _ = await client.post("/dashboard/logout", {})
        assert status == 403
        status, _, response = await client.post("/dashboard/logout", {"csrf": csrf})
        assert status == 303 and response.headers["Location"] == "/dashboard/login"
        status, _, _ = await client.get("/dashboard")
        assert status == 303
    # The old cookie, replayed, no longer works on this server.
    async with DashboardClient(dashboard.base_url) as replay:
        replay.http.cookie_jar.update_cookies({COOKIE: value})
        status, _, _ = await replay.get("/dashboard")
        assert status == 303


async def test_the_cookie_is_secure_behind_the_public_https_url(tmp_path: Path) -> None:
    settings = {"admin_token": ADMIN_TOKEN, "public_base_url": "https://owner.example.net"}
    async with (
        running_server(NO_OPENAI, tmp_path / "data", **settings) as running,
        DashboardClient(running.base_url) as client,
    ):
        headers = {"X-Forwarded-For": "198.51.100.7"}  # the tunnel's client
        status, _, response = await client.post("/dashboard/login", {"token": ADMIN_TOKEN}, headers=headers)
        assert status == 303
        assert "Secure" in response.headers["Set-Cookie"]


async def test_wrong_tokens_are_refused_then_rate_limited_but_the_right_one_still_works(
    dashboard: RunningServer,
) -> None:
    async with DashboardClient(dashboard.base_url) as client:
        statuses = []
        for _ in range(6):
            status, html, response = await client.post(
                "/dashboard/login", {"token": "wrong-token-0123456789"}
            )
            statuses.append(status)
            assert "Set-Cookie" not in response.headers
        assert statuses == [401] * 5 + [429]
        assert "Too many wrong tokens" in html and int(response.headers["Retry-After"]) > 0
        await client.log_in(ADMIN_TOKEN)


async def test_a_cross_site_login_or_form_is_refused(owner: DashboardClient) -> None:
    status, _, _ = await owner.post(
        "/dashboard/login", {"token": ADMIN_TOKEN}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    csrf = await owner.csrf()
    form = {"csrf": csrf, "phone": ALEX, "action": "block"}
    status, _, _ = await owner.post("/dashboard/contacts", form, headers={"Origin": "https://evil.example"})
    assert status == 403
    status, _, _ = await owner.post("/dashboard/contacts", {**form, "csrf": csrf[:-2] + "xx"})
    assert status == 403


async def test_history_lists_newest_first_searches_and_filters(owner: DashboardClient) -> None:
    status, html, _ = await owner.get("/dashboard/history")
    assert status == 200
    assert html.index(BOB_CALL) < html.index(OLDER)
    assert "Bob Smith" in html and "Asked to book a meeting" in html
    # Text said in the transcript only.
    _, html, _ = await owner.get("/dashboard/history", params={"q": "make it 2:30"})
    assert DETAILED in html and BOB_CALL not in html
    # A summary word, case-insensitively; and a caller's name.
    _, html, _ = await owner.get("/dashboard/history", params={"q": "INVOICE"})
    assert BOB_CALL in html and DETAILED not in html
    _, html, _ = await owner.get("/dashboard/history", params={"q": "bob"})
    assert BOB_CALL in html and OLDER not in html
    # LIKE wildcards are text, not patterns.
    _, html, _ = await owner.get("/dashboard/history", params={"q": "%"})
    assert "No calls match" in html
    _, html, _ = await owner.get("/dashboard/history", params={"has": "booked"})
    assert DETAILED in html and BOB_CALL not in html
    _, html, _ = await owner.get("/dashboard/history", params={"has": "urgent"})
    assert BOB_CALL in html and DETAILED in html and OLDER not in html  # high urgency; an urgent message
    _, html, _ = await owner.get("/dashboard/history", params={"has": "message"})
    assert BOB_CALL in html and DETAILED in html and OLDER not in html
    # Dates are the owner's days (New York): Nov 20 only.
    _, html, _ = await owner.get("/dashboard/history", params={"since": "2026-11-20", "until": "2026-11-20"})
    assert OLDER in html and BOB_CALL not in html and DETAILED not in html
    # Dates that are no dates, or at the ends of the calendar, are ignored, not a server error.
    for since, until in (("0001-01-01", "9999-12-31"), ("yesterday", "2026-13-45")):
        status, html, _ = await owner.get("/dashboard/history", params={"since": since, "until": until})
        assert status == 200 and OLDER in html


async def test_history_pages(owner: DashboardClient, dashboard: RunningServer) -> None:
    async with dashboard.services.database.session() as session:
        start = utc_now()
        for n in range(30):
            session.add(CallRow(call_sid=f"CA{n:032d}", caller_number=ALEX, started_at=start))
    _, first, _ = await owner.get("/dashboard/history")
    assert first.count('href="/dashboard/calls/') == 25 and "Older" in first and "Newer" not in first
    _, second, _ = await owner.get("/dashboard/history", params={"page": "2"})
    assert second.count('href="/dashboard/calls/') == 10 and "Newer" in second and "Older" not in second
    assert OLDER in second


async def test_a_call_shows_summary_transcript_tools_cost_and_latency(owner: DashboardClient) -> None:
    status, html, _ = await owner.get(f"/dashboard/calls/{DETAILED}")
    assert status == 200
    assert "Asked to book a meeting; booked Wed 25th 2:30 pm" in html
    assert "Let me check Wednesday for" in html and "interrupted after 1400 ms" in html
    assert "create event (start=2026-11-25T14:30" in html
    assert "$0.0123" in html  # the total charged
    assert "transcription" in html and "audio out" in html
    assert "median 700 ms, slowest 1020 ms" in html and "greeting 850 ms" in html
    assert "Please bring the contract." in html
    status, html, _ = await owner.get("/dashboard/calls/CA" + "0" * 32)
    assert status == 404 and "No such call" in html


async def test_inbox_lists_open_messages_urgent_first_and_marks_them_done(
    owner: DashboardClient, dashboard: RunningServer
) -> None:
    status, html, _ = await owner.get("/dashboard/inbox")
    assert status == 200
    # Alex's is high urgency: first; then the newest.
    assert html.index("Please bring the contract.") < html.index("Invoice 42 is overdue.")
    assert html.index("Invoice 42 is overdue.") < html.index("Call me back.")
    assert "+15551239999" in html and "The next two weeks" in html
    async with dashboard.services.database.session(read_only=True) as session:
        bob = await session.scalar(
            select(MessageRow.id).where(MessageRow.message == "Invoice 42 is overdue.")
        )
    assert bob is not None
    csrf = csrf_of(html)
    status, _, _ = await owner.post(f"/dashboard/messages/{bob}/done", {})
    assert status == 403
    status, _, response = await owner.post(f"/dashboard/messages/{bob}/done", {"csrf": csrf})
    assert status == 303 and response.headers["Location"] == "/dashboard/inbox"
    _, html, _ = await owner.get("/dashboard/inbox")
    assert "Invoice 42 is overdue." not in html and "Please bring the contract." in html
    _, html, _ = await owner.get("/dashboard/inbox", params={"show": "done"})
    assert "Invoice 42 is overdue." in html and "Please bring the contract." not in html
    # And back again.
    await owner.post(f"/dashboard/messages/{bob}/done", {"csrf": csrf, "done": "0"})
    _, html, _ = await owner.get("/dashboard/inbox")
    assert "Invoice 42 is overdue." in html


async def test_contacts_are_added_edited_made_vip_and_blocked(
    owner: DashboardClient, dashboard: RunningServer
) -> None:
    csrf = await owner.csrf("/dashboard/contacts")
    number = "+15557770000"
    status, _, _ = await owner.post(
        "/dashboard/contacts", {"csrf": csrf, "phone": "+1 (555) 777-0000", "name": "Eve", "note": "plumber"}
    )
    assert status == 303
    await owner.post("/dashboard/contacts", {"csrf": csrf, "phone": number, "name": "Eve K", "note": "roof"})
    await owner.post("/dashboard/contacts", {"csrf": csrf, "phone": number, "action": "vip"})
    await owner.post("/dashboard/contacts", {"csrf": csrf, "phone": number, "action": "block"})
    status, _, response = await owner.post("/dashboard/contacts", {"csrf": csrf, "phone": "555", "name": "x"})
    assert status == 303 and response.headers["Location"].endswith("error=number")
    async with dashboard.services.database.session(read_only=True) as session:
        contact = await ContactRepository(session).get(number)
    assert contact is not None
    assert (contact.name, contact.note, contact.vip, contact.blocked) == ("Eve K", "roof", True, True)
    _, html, _ = await owner.get("/dashboard/contacts")
    assert "Eve K" in html and "Unblock" in html and "Remove VIP" in html


async def test_caller_text_is_escaped_everywhere(owner: DashboardClient, dashboard: RunningServer) -> None:
    script = "<script>alert(1)</script>"
    async with dashboard.services.database.session() as session:
        session.add(
            CallRow(
                call_sid="CA" + "f" * 32,
                caller_number=ALEX,
                caller_name=script,
                started_at=utc_now(),
                summary=f"said {script}",
            )
        )
    _, html, _ = await owner.get("/dashboard/history")
    assert script not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    _, html, _ = await owner.get("/dashboard/calls/CA" + "f" * 32)
    assert script not in html and "&lt;script&gt;" in html
    # Live: the server-rendered page escapes too (the script adds text with textContent).
    hub = dashboard.services.live
    hub.publish(CallStarted("CA" + "9" * 32, "+15550009999", is_owner=False))
    hub.publish(TurnHeard("CA" + "9" * 32, Turn(role="caller", text=script, spoken_at=utc_now())))
    _, html, _ = await owner.get("/dashboard")
    assert script not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(5):
        while len(events) < count:
            raw = await response.content.readline()
            line = raw.decode().rstrip("\n")
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = value
    return events


async def test_the_event_stream_resumes_after_the_last_event_id(
    owner: DashboardClient, dashboard: RunningServer
) -> None:
    hub = dashboard.services.live
    sid = "CA" + "8" * 32
    hub.publish(CallStarted(sid, "+15550008888", is_owner=False))
    async with owner.http.get(owner.base_url + "/dashboard/events") as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        [snapshot] = await read_events(response, 1)
        assert snapshot["event"] == "snapshot" and sid in snapshot["data"] and "•••8888" in snapshot["data"]
        hub.publish(TurnHeard(sid, Turn(role="assistant", text="Hello there", spoken_at=utc_now())))
        [line] = await read_events(response, 1)
        assert line["event"] == "line" and "Hello there" in line["data"]
        resume_from = line["id"]
    hub.publish(TurnHeard(sid, Turn(role="caller", text="missed while away", spoken_at=utc_now())))
    headers = {"Last-Event-ID": resume_from}
    async with owner.http.get(owner.base_url + "/dashboard/events", headers=headers) as response:
        [missed] = await read_events(response, 1)
        assert missed["event"] == "line" and "missed while away" in missed["data"]
        epoch, _, number = resume_from.partition(".")
        assert missed["id"] == f"{epoch}.{int(number) + 1}"
    # An id of another server (or of this one before a restart): a snapshot, not a guess.
    headers = {"Last-Event-ID": f"other.{number}"}
    async with owner.http.get(owner.base_url + "/dashboard/events", headers=headers) as response:
        [snapshot] = await read_events(response, 1)
        assert snapshot["event"] == "snapshot" and "missed while away" in snapshot["data"]


async def test_the_event_stream_ends_when_its_session_is_logged_out(
    owner: DashboardClient, dashboard: RunningServer
) -> None:
    csrf = await owner.csrf()
    async with owner.http.get(owner.base_url + "/dashboard/events") as response:
        [snapshot] = await read_events(response, 1)
        assert snapshot["event"] == "snapshot"
        status, _, _ = await owner.post("/dashboard/logout", {"csrf": csrf})
        assert status == 303
        # The stream checks its session every second: it ends, carrying nothing more.
        dashboard.services.live.publish(CallStarted("CA" + "7" * 32, "+15550007777", is_owner=False))
        async with asyncio.timeout(5):
            rest = await response.content.read()
        assert b"7777" not in rest


async def test_without_an_admin_token_only_the_machine_itself_gets_the_dashboard(tmp_path: Path) -> None:
    async with (
        running_server(NO_OPENAI, tmp_path / "data") as running,
        DashboardClient(running.base_url) as local,
    ):
        status, html, _ = await local.get("/dashboard")
        assert status == 200 and "Live calls" in html and "Log out" not in html
        csrf = csrf_of(html)
        status, _, _ = await local.post("/dashboard/contacts", {"csrf": csrf, "phone": ALEX, "name": "Alex"})
        assert status == 303
        status, _, _ = await local.post("/dashboard/contacts", {"phone": ALEX, "name": "Alex"})
        assert status == 403  # CSRF still required
        # Through a tunnel on this machine, every client looks local: refused.
        tunnel = {"X-Forwarded-For": "203.0.113.9"}
        status, _, _ = await local.get("/dashboard", headers=tunnel)
        assert status == 303
        status, _, _ = await local.get("/dashboard/events", headers=tunnel)
        assert status == 401
        status, html, _ = await local.post(
            "/dashboard/login", {"token": "anything-at-all-0123456789"}, headers=tunnel
        )
        assert status == 403 and "No admin token is set" in html


async def test_numbers_count_the_owner_days_and_health_is_shown(
    owner: DashboardClient, dashboard: RunningServer
) -> None:
    status, html, _ = await owner.get("/dashboard/numbers", params={"days": "90"})
    assert status == 200
    # The seeded calls are from late November 2026; "today" is the test run's day, so count only
    # when it falls within a year of them.
    assert "Calls per day" in html and "Turn latency per day" in html and "<svg" in html
    assert "Health" in html and "OpenAI" in html and "Notices" in html
    assert "2 given up" in html  # the seed's two failed notices
    status, html, _ = await owner.get("/dashboard/numbers", params={"days": "bogus"})
    assert status == 200 and 'aria-current="page">30 days' in html


async def test_an_open_event_stream_does_not_hold_up_a_shutdown(tmp_path: Path) -> None:
    async with running_server(NO_OPENAI, tmp_path / "data", admin_token=ADMIN_TOKEN) as running:
        client = DashboardClient(running.base_url)
        await client.log_in(ADMIN_TOKEN)
        response = await client.http.get(running.base_url + "/dashboard/events")
        [snapshot] = await read_events(response, 1)
        assert snapshot["event"] == "snapshot"
        running.server.should_exit = True
        # The stream ends within its 1 s check once the server stops taking calls, well before
        # uvicorn would cut it (timeout_graceful_shutdown, 2 s).
        async with asyncio.timeout(1.6):
            await response.content.read()
        response.release()
        await client.http.close()


async def test_a_recorded_call_links_its_recording(owner: DashboardClient, dashboard: RunningServer) -> None:
    _, html, _ = await owner.get(f"/dashboard/calls/{DETAILED}")
    assert "/recording" not in html  # recording was off: no file, no link
    folder = dashboard.settings.data_dir / RECORDINGS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{DETAILED}.wav").write_bytes(b"RIFF-not-really-a-wav")
    _, html, _ = await owner.get(f"/dashboard/calls/{DETAILED}")
    assert f'src="/dashboard/calls/{DETAILED}/recording"' in html
    status, body, response = await owner.get(f"/dashboard/calls/{DETAILED}/recording")
    assert status == 200 and response.content_type == "audio/wav" and body.startswith("RIFF")
    status, _, _ = await owner.get("/dashboard/calls/..%2F..%2Fetc/recording")
    assert status == 404


async def test_the_health_panel_and_the_metrics_tell_the_same_facts(
    owner: DashboardClient, dashboard: RunningServer
) -> None:
    _, html, _ = await owner.get("/dashboard/numbers")
    assert "Notices</strong>: problem" in html and "1 waiting, 2 given up; last error:" in html
    assert "Calendar</strong>: OK" in html and "OpenAI</strong>: OK" in html
    async with owner.http.get(owner.base_url + "/metrics") as response:
        metrics = await response.text()
    for line in (
        "callassist_openai_up 1.0",
        "callassist_twilio_signatures 1.0",
        "callassist_calendar_up 1.0",
        "callassist_notices_failed 2.0",
        "callassist_notices_pending 1.0",
    ):
        assert line in metrics.splitlines(), line
    assert "Twilio</strong>: unknown" in html  # Twilio's API is not reachable from these tests
    dashboard.services.openai_degraded = True
    _, html, _ = await owner.get("/dashboard/numbers")
    assert "OpenAI</strong>: problem" in html
    async with owner.http.get(owner.base_url + "/metrics") as response:
        assert "callassist_openai_up 0.0" in (await response.text()).splitlines()


async def test_a_database_that_fails_gets_a_page_saying_so_and_a_log_line_without_data(
    owner: DashboardClient, dashboard: RunningServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = dashboard.services
    working = services.database
    services.database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'no.db'}")
    try:
        status, html, _ = await owner.get("/dashboard/history", params={"q": "secret search words"})
    finally:
        await services.database.close()
        services.database = working
    assert status == 503 and "The database is unavailable." in html
    logged = [
        record.getMessage() for record in caplog.records if record.name.startswith("callassist.dashboard")
    ]
    assert any("could not use the store" in line for line in logged)
    assert not any("secret search words" in line or "SELECT" in line for line in logged)


async def test_the_record_pages_work_on_postgresql_too(tmp_path: Path) -> None:
    async with postgres_database_or_skip() as url:
        database_url = url.render_as_string(hide_password=False)
        settings = {"admin_token": ADMIN_TOKEN, "database_url": database_url}
        async with running_server(NO_OPENAI, tmp_path / "data", **settings) as running:
            await seed(running.services.database)
            async with DashboardClient(running.base_url) as owner:
                await owner.log_in(ADMIN_TOKEN)
                _, html, _ = await owner.get("/dashboard/history", params={"q": "make IT 2:30"})
                assert DETAILED in html and BOB_CALL not in html
                _, html, _ = await owner.get("/dashboard/history", params={"has": ["urgent", "booked"]})
                assert DETAILED in html and BOB_CALL not in html
                _, html, _ = await owner.get("/dashboard/history", params={"q": "50%"})
                assert "No calls match" in html
                _, html, _ = await owner.get(f"/dashboard/calls/{DETAILED}")
                assert "median 700 ms" in html and "$0.0123" in html
                status, html, _ = await owner.get("/dashboard/numbers", params={"days": "90"})
                assert status == 200 and "Calls per day" in html
                csrf = csrf_of(html)
                async with running.services.database.session(read_only=True) as session:
                    first = await session.scalar(select(func.min(MessageRow.id)))
                status, _, _ = await owner.post(f"/dashboard/messages/{first}/done", {"csrf": csrf})
                assert status == 303
                _, html, _ = await owner.get("/dashboard/inbox", params={"show": "done"})
                assert html.count('class="card message') == 1
