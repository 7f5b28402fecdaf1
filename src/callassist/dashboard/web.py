"""What the dashboard's pages share: the templates (Jinja2, autoescaped) and their filters, the
security headers, the owner's session and CSRF check for forms, and reading the store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.call.registry import CallRegistry
from callassist.dashboard.live import mask_number
from callassist.dashboard.session import OwnerSession, Sessions
from callassist.runtime import Runtime
from callassist.store.db import describe_failure

if TYPE_CHECKING:
    from callassist.call.call import Call

log = logging.getLogger(__name__)

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


def sessions(request: Request, runtime: Runtime) -> Sessions:
    """The app's session keeper, made on first use from the settings (kept in `app.state`)."""
    keeper: Sessions | None = getattr(request.app.state, "dashboard_sessions", None)
    if keeper is None:
        keeper = Sessions(runtime.settings)
        request.app.state.dashboard_sessions = keeper
    return keeper


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


def to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303, headers=SECURITY_HEADERS)


def forbidden(message: str) -> Response:
    return Response(message, status_code=403, media_type="text/plain", headers=SECURITY_HEADERS)


def same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin; one from another site is refused before anything
    else (SameSite=Strict already keeps the cookie off it; this covers the loopback owner too)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def form_session(request: Request, runtime: Runtime) -> tuple[OwnerSession | None, dict[str, str]]:
    """The session of a POST whose CSRF token matches it (else None), and the form."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    session = sessions(request, runtime).current(request)
    if session is None or not same_origin(request):
        return None, fields
    if not sessions(request, runtime).csrf_ok(session, fields.get("csrf")):
        return None, fields
    return session, fields


async def read(runtime: Runtime, read: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    async with runtime.database.session(read_only=True) as db:
        return await read(db)


def unavailable(request: Request, runtime: Runtime, session: OwnerSession, exc: Exception) -> HTMLResponse:
    # The driver's first line only: a DBAPIError's own text carries the SQL and its parameters.
    log.error("the dashboard could not use the store: %s", describe_failure(exc))
    return render(request, runtime, "error.html", session, status=503, message="The database is unavailable.")


def live_call(registry: CallRegistry, call_sid: str) -> Call | None:
    """The call in progress with this CallSid on this server, if any."""
    return registry.find(call_sid)
