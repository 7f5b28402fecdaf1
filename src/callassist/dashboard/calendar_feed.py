"""A read-only iCalendar feed of the owner's calendar, to subscribe to from a phone or desktop app.

`GET /calendar.ics?token=<CALLASSIST_ADMIN_TOKEN>`: calendar apps can't send headers, so the token
travels in the URL; keep that URL private.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response

from callassist.calendar.base import Calendar, CalendarError
from callassist.calendar.ical import calendar_document
from callassist.dashboard.auth import check_owner

router = APIRouter()

PAST = timedelta(days=60)
FUTURE = timedelta(days=400)


async def export_document(
    calendar: Calendar, *, name: str, start: datetime, end: datetime, zone: object
) -> bytes:
    events = await calendar.events_between(start, end)
    return calendar_document(events, name=name, zone=zone)  # type: ignore[arg-type]


@router.get("/calendar.ics")
async def calendar_feed(request: Request, token: str | None = None) -> Response:
    services = request.app.state.services
    settings = services.settings
    check = check_owner(request, settings, token, services.owner_failures)
    if check.retry_after is not None:
        return Response(
            "too many refused requests: try again later",
            status_code=429,
            media_type="text/plain",
            headers={"Retry-After": str(check.retry_after)},
        )
    if not check.allowed:
        return Response("forbidden", status_code=403, media_type="text/plain")
    if services.calendar is None:
        return Response("starting", status_code=503, media_type="text/plain")
    now = datetime.now(UTC)
    try:
        body = await export_document(
            services.calendar,
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
