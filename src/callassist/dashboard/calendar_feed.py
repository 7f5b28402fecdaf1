"""A read-only iCalendar feed of the owner's calendar, to subscribe to from a phone or desktop app.

`GET /calendar.ics?token=<feed token>`: calendar apps can't send headers, so a token travels in the
URL, where tunnel inspectors and proxy logs may see it. It is therefore not the admin token but the
feed's own read-only token (see `callassist.dashboard.auth.feed_token`; `callassist calendar
feed-url` prints the whole URL): it opens this feed and nothing else, and changes when the admin
token does. The admin token is refused here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from callassist.calendar.base import CalendarError
from callassist.calendar.export import FUTURE, PAST, export_document
from callassist.dashboard.auth import check_owner, feed_allowed
from callassist.runtime import RuntimeDep

router = APIRouter()


@router.get("/calendar.ics")
async def calendar_feed(request: Request, runtime: RuntimeDep, token: str | None = None) -> Response:
    settings = runtime.settings
    check = check_owner(request, settings, token, runtime.owner_failures, allowed=feed_allowed)
    if check.retry_after is not None:
        return Response(
            "too many refused requests: try again later",
            status_code=429,
            media_type="text/plain",
            headers={"Retry-After": str(check.retry_after)},
        )
    if not check.allowed:
        return Response(
            "unauthorized: subscribe to the URL `callassist calendar feed-url` prints",
            status_code=401,
            media_type="text/plain",
            headers={"Cache-Control": "no-store"},
        )
    if runtime.calendar is None:
        return Response("starting", status_code=503, media_type="text/plain")
    now = datetime.now(UTC)
    try:
        body = await export_document(
            runtime.calendar,
            name=f"{settings.owner_name} (callassist)",
            start=now - PAST,
            end=now + FUTURE,
            zone=settings.zone,
        )
    except CalendarError as exc:
        return Response(f"calendar unavailable: {exc}", status_code=502, media_type="text/plain")
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Cache-Control": "private, max-age=300",
            "Content-Disposition": 'inline; filename="calendar.ics"',
        },
    )
