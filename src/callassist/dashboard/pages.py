"""The owner's cockpit at /dashboard: login and logout, the live calls with their server-sent
events at /dashboard/events, hanging up; the record pages (history, a call, inbox, contacts,
numbers) are in `record_pages.py` and mounted with these.

Every page needs the owner's session (`session.py`): without one, a page redirects to the login
form, the event stream answers 401 and a form's POST 403. Every POST also needs the session's CSRF
token. Static files are the only thing served without a session (the login page needs them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse

from callassist.call.deps import EndReason
from callassist.dashboard import record_pages
from callassist.dashboard.auth import check_owner
from callassist.dashboard.web import (
    SECURITY_HEADERS,
    STATIC,
    STATIC_TYPES,
    forbidden,
    form_session,
    live_call,
    render,
    same_origin,
    sessions,
    to_login,
)
from callassist.runtime import RuntimeDep

log = logging.getLogger(__name__)

router = APIRouter()
# How often an event stream checks its session is still valid and the server still running.
STREAM_CHECK_S = 1.0
KEEPALIVE_EVERY = 15  # checks between keep-alive comments


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
    if not same_origin(request):
        return forbidden("cross-site login refused")
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
    session, _ = await form_session(request, runtime)
    if session is None:
        return forbidden("log in first (and send the form's CSRF token)")
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
        return to_login()
    hub = runtime.live
    return render(
        request,
        runtime,
        "live.html",
        session,
        calls=list(hub.calls.values()),
        last_event_id=hub.last_event_id,
        can_take=runtime.owner_line is not None,
    )


@router.get("/dashboard/events", response_model=None)
async def events(request: Request, runtime: RuntimeDep) -> Response:
    keeper = sessions(request, runtime)
    if keeper.current(request) is None:
        return Response("log in first", status_code=401, media_type="text/plain", headers=SECURITY_HEADERS)
    hub = runtime.live
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


@router.post("/dashboard/calls/{call_sid}/hangup", response_model=None)
async def hang_up(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    session, _ = await form_session(request, runtime)
    if session is None:
        return forbidden("log in first (and send the form's CSRF token)")
    call = live_call(runtime.registry, call_sid)
    if call is not None and not call.over:
        log.info("the owner hangs up a call from the dashboard")
        call.end(EndReason.owner_hung_up)
    return RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)


@router.post("/dashboard/calls/{call_sid}/take", response_model=None)
async def take_call(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    """Take the call: the owner's phone rings (warm transfer, with the usual whisper and key)."""
    session, _ = await form_session(request, runtime)
    if session is None:
        return forbidden("log in first (and send the form's CSRF token)")
    call = live_call(runtime.registry, call_sid)
    if call is not None and not call.over:
        why_not = call.owner_takes_call()
        log.info("the owner takes a call from the dashboard%s", "" if why_not is None else ": refused")
    return RedirectResponse("/dashboard", status_code=303, headers=SECURITY_HEADERS)


router.include_router(record_pages.router)
