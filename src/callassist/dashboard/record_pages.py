"""The dashboard's pages over the records: the history (search, filters, pages), one call in
full, its recording, the inbox (mark done, the next two weeks), contacts, numbers and health."""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from callassist.dashboard.health import HealthMonitor, upcoming
from callassist.dashboard.live import tool_label
from callassist.dashboard.numbers import PERIODS, charts, numbers
from callassist.dashboard.queries import FILTERS, HistoryQuery, cost_parts, history, inbox, mark_done
from callassist.dashboard.web import (
    SECURITY_HEADERS,
    forbidden,
    form_session,
    live_call,
    read,
    render,
    sessions,
    to_login,
    unavailable,
)
from callassist.media.recording import RECORDINGS, recording_path
from callassist.runtime import RuntimeDep
from callassist.store.contacts import ContactRepository, normalize_phone
from callassist.store.records import get_call

router = APIRouter()


# History and one call ------------------------------------------------------------------------------


def _date(text: str | None) -> date | None:
    """A date from the form, or None (none, not a date, or so far off that no call can be there and
    moving it to UTC could leave the years 1 to 9999)."""
    try:
        day = date.fromisoformat(text) if text else None
    except ValueError:
        return None
    return day if day is not None and 1900 <= day.year <= 9000 else None


@router.get("/dashboard/history", response_class=HTMLResponse)
async def history_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return to_login()
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
        found = await read(runtime, lambda db: history(db, query, runtime.settings.zone))
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)

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
        return to_login()
    try:
        detail = await read(runtime, lambda db: get_call(db, call_sid))
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)
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
        live=live_call(runtime.registry, call_sid) is not None,
    )


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@router.get("/dashboard/calls/{call_sid}/recording", response_model=None)
async def call_recording(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    if sessions(request, runtime).current(request) is None:
        return to_login()
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
        return to_login()
    show_done = request.query_params.get("show") == "done"
    try:
        messages = await read(runtime, lambda db: inbox(db, done=show_done))
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)
    events = None if show_done else await upcoming(runtime)
    return render(
        request, runtime, "inbox.html", session, messages=messages, events=events, show_done=show_done
    )


@router.post("/dashboard/messages/{message_id}/done", response_model=None)
async def message_done(request: Request, message_id: int, runtime: RuntimeDep) -> Response:
    """`done=1` (the default) marks the message done; `done=0` puts it back in the inbox."""
    session, form = await form_session(request, runtime)
    if session is None:
        return forbidden("log in first (and send the form's CSRF token)")
    try:
        async with runtime.database.session() as db:
            await mark_done(db, message_id, done=form.get("done", "1") != "0")
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)
    back = "/dashboard/inbox?show=done" if form.get("done") == "0" else "/dashboard/inbox"
    return RedirectResponse(back, status_code=303, headers=SECURITY_HEADERS)


@router.get("/dashboard/numbers", response_class=HTMLResponse)
async def numbers_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return to_login()
    days_text = request.query_params.get("days", "30")
    days = int(days_text) if days_text.isdigit() and int(days_text) in PERIODS else 30
    zone = runtime.settings.zone
    try:
        figures = await read(runtime, lambda db: numbers(db, zone, days))
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)
    monitor = runtime.health or HealthMonitor(runtime)
    return render(
        request,
        runtime,
        "numbers.html",
        session,
        days=days,
        periods=PERIODS,
        figures=figures,
        charts=charts(figures),
        health=await monitor.check(),
    )


@router.get("/dashboard/contacts", response_class=HTMLResponse)
async def contacts_page(request: Request, runtime: RuntimeDep) -> Response:
    session = sessions(request, runtime).current(request)
    if session is None:
        return to_login()
    try:
        contacts = await read(runtime, lambda db: ContactRepository(db).list())
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)
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
    session, form = await form_session(request, runtime)
    if session is None:
        return forbidden("log in first (and send the form's CSRF token)")
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
    except (SQLAlchemyError, OSError) as exc:
        return unavailable(request, runtime, session, exc)
    return RedirectResponse("/dashboard/contacts", status_code=303, headers=SECURITY_HEADERS)
