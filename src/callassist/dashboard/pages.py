"""The owner's cockpit at /dashboard: server-rendered pages (Jinja2, autoescaped), a small script for
the live page, and its server-sent events at /dashboard/events.

Every page needs the owner's session (`session.py`): without one, a page redirects to the login
form, the event stream answers 401 and a form's POST 403. Every POST also needs the session's CSRF
token. Static files are the only thing served without a session (the login page needs them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.call.deps import EndReason
from callassist.call.registry import CallRegistry
from callassist.dashboard.auth import check_owner
from callassist.dashboard.health import facts, outbox_state, upcoming
from callassist.dashboard.live import LiveCalls, mask_number, tool_label
from callassist.dashboard.numbers import PERIODS, charts, numbers
from callassist.dashboard.queries import FILTERS, HistoryQuery, cost_parts, history, inbox, mark_done
from callassist.dashboard.session import OwnerSession, Sessions
from callassist.media.recording import RECORDINGS, recording_path
from callassist.runtime import Runtime, RuntimeDep
from callassist.store.contacts import ContactRepository, normalize_phone
from callassist.store.records import get_call

if TYPE_CHECKING:
    from callassist.call.call import Call

log = logging.getLogger(__name__)

router = APIRouter()

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
# No inline script or style anywhere: whatever a caller said can't become code on the page.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
# How often an event stream checks its session is still valid and the server still running.
STREAM_CHECK_S = 1.0
KEEPALIVE_EVERY = 15  # checks between keep-alive comments


def sessions(request: Request, runtime: Runtime) -> Sessions:
    """The app's session keeper, made on first use from the settings (kept in `app.state`)."""
    keeper: Sessions | None = getattr(request.app.state, "dashboard_sessions", None)
    if keeper is None:
        keeper = Sessions(runtime.settings)
        request.app.state.dashboard_sessions = keeper
    return keeper


def live_calls(runtime: Runtime) -> LiveCalls:
    """The runtime's live calls (fed by its call event stream)."""
    return runtime.live


# Rendering ----------------------------------------------------------------------------------------


def _local(moment: datetime | None, runtime: Runtime, fmt: str = "%a %d %b %H:%M") -> str:
    if moment is None:
        return ""
    return moment.astimezone(runtime.settings.zone).strftime(fmt)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "in progress"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def _usd(amount: Any) -> str:
    return f"${amount:.4f}"


_templates.filters["duration"] = _duration
_templates.filters["usd"] = _usd
_templates.filters["masked"] = mask_number


def render(
    request: Request,
    runtime: Runtime,
    template: str,
    session: OwnerSession | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    def local(moment: datetime | None, fmt: str = "%a %d %b %H:%M") -> str:
        return _local(moment, runtime, fmt)

    html = _templates.get_template(template).render(
        session=session,
        owner_name=runtime.settings.owner_name,
        local=local,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def _to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303, headers=SECURITY_HEADERS)


def _forbidden(message: str) -> Response:
    return Response(message, status_code=403, media_type="text/plain", headers=SECURITY_HEADERS)


def _same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin; one from another site is refused before anything
    else (SameSite=Strict already keeps the cookie off it; this covers the loopback owner too)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def _form_session(request: Request, runtime: Runtime) -> tuple[OwnerSession | None, dict[str, str]]:
    """The session of a POST whose CSRF token matches it (else None), and the form."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    session = sessions(request, runtime).current(request)
    if session is None or not _same_origin(request):
        return None, fields
    if not sessions(request, runtime).csrf_ok(session, fields.get("csrf")):
        return None, fields
    return session, fields


async def _read(runtime: Runtime, read: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    async with runtime.database.session(read_only=True) as db:
        return await read(db)


def _unavailable(request: Request, runtime: Runtime, session: OwnerSession) -> HTMLResponse:
    log.exception("the dashboard could not read the store")
    return render(request, runtime, "error.html", session, status=503, message="The database is unavailable.")


# Entry, login, logout ------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard/login", response_class=HTMLResponse)
async def login_form(request: Request, runtime: RuntimeDep) -> Response:
    keeper = sessions(request, runtime)
    if keeper.current(request) is not None:
        return RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    return render(request, runtime, "login.html", None, token_required=keeper.token_required)


@router.post("/dashboard/login", response_model=None)
async def login(request: Request, runtime: RuntimeDep) -> Response:
    keeper = sessions(request, runtime)
    if not _same_origin(request):
        return _forbidden("cross-site login refused")
    form = await request.form()
    token = form.get("token")
    presented = token if isinstance(token, str) and token else None
    if not keeper.token_required:
        if keeper.current(request) is not None:
            return RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
        return render(request, runtime, "login.html", None, status=403, token_required=False)
    check = check_owner(request, runtime.settings, presented, runtime.owner_failures)
    if check.retry_after is not None:
        return render(
            request,
            runtime,
            "login.html",
            None,
            status=429,
            headers={"Retry-After": str(check.retry_after)},
            token_required=True,
            error=f"Too many wrong tokens: try again in {check.retry_after} s.",
        )
    if not check.allowed:
        return render(
            request, runtime, "login.html", None, status=401, token_required=True, error="Wrong token."
        )
    value, _ = keeper.issue()
    response = RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)
    keeper.set_cookie(response, request, value)
    return response


@router.post("/dashboard/logout", response_model=None)
async def logout(request: Request, runtime: RuntimeDep) -> Response:
    session, _ = await _form_session(request, runtime)
    if session is None:
        return _forbidden("log in first (and send the form's CSRF token)")
    keeper = sessions(request, runtime)
    keeper.revoke(session)
    response = RedirectResponse("/dashboard/login", status_code=303, headers=SECURITY_HEADERS)
    keeper.clear_cookie(response, request)
    return response


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    path = STATIC / name
    media_type = STATIC_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        path,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# Live calls ---------------------------------------------------------------------------------------


@router.get("/dashboard", response_class=HTMLResponse)
async def live_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return _to_login()
    hub = live_calls(runtime)
    return render(
        request,
        runtime,
        "live.html",
        session,
        calls=list(hub.calls.values()),
        last_event_id=hub.last_event_id,
    )


@router.get("/dashboard/events", response_model=None)
async def events(request: Request, runtime: RuntimeDep) -> Response:
    keeper = sessions(request, runtime)
    if keeper.current(request) is None:
        return Response("log in first", status_code=401, media_type="text/plain", headers=SECURITY_HEADERS)
    hub = live_calls(runtime)
    last_id = hub.event_id(request.headers.get("last-event-id") or request.query_params.get("after"))

    async def body() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        quiet = 0
        async for event in hub.stream(last_id, heartbeat_s=STREAM_CHECK_S):
            # Checked before each event and each quiet second: a logged-out or expired session, or
            # a stopping server, ends the stream.
            if keeper.current(request) is None or not runtime.registry.accepting:
                return
            if event is not None:
                yield event.sse(hub.epoch)
                continue
            quiet += 1
            if quiet % KEEPALIVE_EVERY == 0:
                yield ": keep-alive\n\n"

    headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _live_call(registry: CallRegistry, call_sid: str) -> Call | None:
    # CallRegistry has no public lookup by CallSid yet: its set of live calls is read here.
    for call in list(registry._calls):
        if call.call_sid == call_sid:
            return call
    return None


@router.post("/dashboard/calls/{call_sid}/hangup", response_model=None)
async def hang_up(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    session, _ = await _form_session(request, runtime)
    if session is None:
        return _forbidden("log in first (and send the form's CSRF token)")
    call = _live_call(runtime.registry, call_sid)
    if call is not None and not call.over:
        log.info("the owner hangs up a call from the dashboard")
        call.end(EndReason.assistant_hung_up)
    return RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)


# History and one call ------------------------------------------------------------------------------


def _date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


@router.get("/dashboard/history", response_class=HTMLResponse)
async def history_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return _to_login()
    params = request.query_params
    page_text = params.get("page", "1")
    query = HistoryQuery(
        text=params.get("q", "")[:200],
        since=_date(params.get("since")),
        until=_date(params.get("until")),
        filters=frozenset(name for name in params.getlist("has") if name in FILTERS),
        page=int(page_text) if page_text.isdigit() and 0 < len(page_text) < 7 else 1,
    )
    try:
        found = await _read(runtime, lambda db: history(db, query, runtime.settings.zone))
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)

    def page_link(page: int) -> str:
        pairs: list[tuple[str, str]] = [(k, v) for k, v in params.multi_items() if k != "page"]
        return "?" + urlencode([*pairs, ("page", str(page))])

    return render(
        request,
        runtime,
        "history.html",
        session,
        query=query,
        found=found,
        filters=FILTERS,
        newer=page_link(found.page - 1) if found.page > 1 else None,
        older=page_link(found.page + 1) if found.more else None,
    )


@router.get("/dashboard/calls/{call_sid}", response_class=HTMLResponse)
async def call_page(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return _to_login()
    try:
        detail = await _read(runtime, lambda db: get_call(db, call_sid))
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)
    if detail is None:
        return render(request, runtime, "error.html", session, status=404, message="No such call.")
    recording = recording_path(runtime.settings.data_dir / RECORDINGS, call_sid)
    return render(
        request,
        runtime,
        "call.html",
        session,
        detail=detail,
        costs=cost_parts(detail.usage, runtime.prices),
        tools=[
            (tool, tool_label(tool.name, tool.ok, _json_text(tool.arguments))) for tool in detail.tool_calls
        ],
        recording=recording is not None and recording.is_file(),
        live=_live_call(runtime.registry, call_sid) is not None,
    )


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@router.get("/dashboard/calls/{call_sid}/recording", response_model=None)
async def call_recording(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    if sessions(request, runtime).current(request) is None:
        return _to_login()
    path = recording_path(runtime.settings.data_dir / RECORDINGS, call_sid)
    if path is None or not path.is_file():
        return Response("no recording", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})


CONTACT_ERRORS = {
    "number": "That is not a phone number: write it with + and the country code, e.g. +15551234567.",
    "name": "That name can't be used (at most 80 characters, on one line).",
}


# Inbox and contacts --------------------------------------------------------------------------------


@router.get("/dashboard/inbox", response_class=HTMLResponse)
async def inbox_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return _to_login()
    show_done = request.query_params.get("show") == "done"
    try:
        messages = await _read(runtime, lambda db: inbox(db, done=show_done))
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)
    events = None if show_done else await upcoming(runtime)
    return render(
        request, runtime, "inbox.html", session, messages=messages, events=events, show_done=show_done
    )


@router.post("/dashboard/messages/{message_id}/done", response_model=None)
async def message_done(request: Request, message_id: int, runtime: RuntimeDep) -> Response:
    """`done=1` (the default) marks the message done; `done=0` puts it back in the inbox."""
    session, form = await _form_session(request, runtime)
    if session is None:
        return _forbidden("log in first (and send the form's CSRF token)")
    try:
        async with runtime.database.session() as db:
            await mark_done(db, message_id, done=form.get("done", "1") != "0")
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)
    back = "/dashboard/inbox?show=done" if form.get("done") == "0" else "/dashboard/inbox"
    return RedirectResponse(back, status_code=303, headers=SECURITY_HEADERS)


@router.get("/dashboard/numbers", response_class=HTMLResponse)
async def numbers_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return _to_login()
    days_text = request.query_params.get("days", "30")
    days = int(days_text) if days_text.isdigit() and int(days_text) in PERIODS else 30
    zone = runtime.settings.zone
    try:
        figures = await _read(runtime, lambda db: numbers(db, zone, days))
        outbox = await _read(runtime, outbox_state)
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)
    calendar_ok = await upcoming(runtime, days=1) is not None
    return render(
        request,
        runtime,
        "numbers.html",
        session,
        days=days,
        periods=PERIODS,
        figures=figures,
        charts=charts(figures),
        health=await facts(runtime, outbox, calendar_ok),
    )


@router.get("/dashboard/contacts", response_class=HTMLResponse)
async def contacts_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return _to_login()
    try:
        contacts = await _read(runtime, lambda db: ContactRepository(db).list())
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)
    error = request.query_params.get("error")
    return render(
        request,
        runtime,
        "contacts.html",
        session,
        contacts=contacts,
        error=CONTACT_ERRORS.get(error or ""),
    )


@router.post("/dashboard/contacts", response_model=None)
async def contact_save(request: Request, runtime: RuntimeDep) -> Response:
    """Add a contact, or change one: name and note (`save`), VIP or blocked (`vip`, `block`: on/off)."""
    session, form = await _form_session(request, runtime)
    if session is None:
        return _forbidden("log in first (and send the form's CSRF token)")
    try:
        phone = normalize_phone(form.get("phone", ""))
    except ValueError:
        return RedirectResponse("/dashboard/contacts?error=number", status_code=303, headers=SECURITY_HEADERS)
    action = form.get("action", "save")
    try:
        async with runtime.database.session() as db:
            contacts = ContactRepository(db)
            if action == "save":
                existing = await contacts.get(phone)
                name = form.get("name", "").strip() or (existing.name if existing else phone)
                await contacts.upsert(phone, name, form.get("note", "").strip()[:2000] or None)
            elif action in ("vip", "unvip"):
                await contacts.mark(phone, vip=action == "vip")
            elif action in ("block", "unblock"):
                await contacts.mark(phone, blocked=action == "block")
    except ValueError:
        return RedirectResponse("/dashboard/contacts?error=name", status_code=303, headers=SECURITY_HEADERS)
    except (SQLAlchemyError, OSError):
        return _unavailable(request, runtime, session)
    return RedirectResponse("/dashboard/contacts", status_code=303, headers=SECURITY_HEADERS)
