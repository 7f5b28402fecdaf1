"""The owner's JSON API over the call records: calls, one call in full, messages, notices, contacts.

Every route needs the owner: `Authorization: Bearer <CALLASSIST_ADMIN_TOKEN>`, or, while no token
is configured, a direct loopback client. The admin token is never taken from the URL. Anyone else
gets 401 and learns nothing else; a client that sent 5 wrong tokens within a minute gets 429
(Retry-After) for its wrong tokens until that minute has passed (the right token is still accepted).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from callassist.calendar.timeutil import TimeError, parse_local_datetime
from callassist.dashboard import serialize
from callassist.dashboard.auth import bearer_token, check_owner
from callassist.media.recording import RECORDINGS, recording_path
from callassist.runtime import Runtime, RuntimeDep
from callassist.settings import Settings
from callassist.store.contacts import ContactRepository, phone_for_lookup
from callassist.store.db import Database
from callassist.store.records import NOTICE_STATUSES, get_call, list_calls, list_messages, list_notices

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Caller data: never cached by a browser or a proxy on the way.
_PRIVATE = {"Cache-Control": "no-store"}


class _BadRequest(Exception):
    """A query parameter the API can't use; its message is sent back as the error."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={**_PRIVATE, **(headers or {})})


def _refusal(request: Request, runtime: Runtime) -> JSONResponse | None:
    check = check_owner(request, runtime.settings, bearer_token(request), runtime.owner_failures)
    if check.allowed:
        return None
    if check.retry_after is not None:
        return _error(
            429, "too many refused requests: try again later", {"Retry-After": str(check.retry_after)}
        )
    return _error(
        401,
        "owner only: send Authorization: Bearer <CALLASSIST_ADMIN_TOKEN>",
        {"WWW-Authenticate": 'Bearer realm="callassist"'},
    )


async def _answer(
    request: Request,
    runtime: Runtime,
    read: Callable[[AsyncSession, Settings], Awaitable[Any]],
    not_found: str = "not found",
) -> JSONResponse:
    """Check the owner, run `read` in a read-only session, and turn its result or failure into JSON.

    `read` returns None for "no such thing" (404 with `not_found`).
    """
    settings: Settings = runtime.settings
    if (refused := _refusal(request, runtime)) is not None:
        return refused
    database: Database = runtime.database
    try:
        async with database.session(read_only=True) as session:
            body = await read(session, settings)
    except _BadRequest as exc:
        return _error(400, str(exc))
    except (SQLAlchemyError, OSError):
        # The exception text can quote SQL and data; the log keeps it, the client gets a line.
        log.exception("reading call records failed")
        return _error(503, "the database is unavailable")
    if body is None:
        return _error(404, not_found)
    return JSONResponse(body, headers=_PRIVATE)


def _limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise _BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _before(request: Request, settings: Settings) -> datetime | None:
    text = request.query_params.get("before")
    if not text:
        return None
    # An unencoded '+' of an offset arrives as a space ("10:00 01:00").
    text = text.strip().replace(" ", "+") if "T" in text else text
    try:
        return parse_local_datetime(text, settings.zone)
    except TimeError as exc:
        raise _BadRequest(f"before: {exc}") from None
    except OverflowError:
        # A valid date whose zone moves it outside the years 1 to 9999 ("9999-12-31T23:00-05:00").
        raise _BadRequest(f"before: {text!r} is out of range (years 1 to 9999 only)") from None


def _caller(request: Request) -> str | None:
    text = request.query_params.get("caller")
    return phone_for_lookup(text) if text and text.strip() else None


@router.get("/calls")
async def calls(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """`?limit=1..200&before=<ISO instant>&caller=<number>`: newest first."""

    async def read(session: AsyncSession, settings: Settings) -> serialize.JSONObject:
        limit = _limit(request)
        found = await list_calls(
            session,
            limit=limit,
            before=_before(request, settings),
            caller=_caller(request),
        )
        return serialize.calls_json(found, settings.zone, limit=limit)

    return await _answer(request, runtime, read)


@router.get("/calls/{call_sid}")
async def call(request: Request, call_sid: str, runtime: RuntimeDep) -> JSONResponse:
    async def read(session: AsyncSession, settings: Settings) -> serialize.JSONObject | None:
        detail = await get_call(session, call_sid)
        return serialize.call_detail_json(detail, settings.zone) if detail is not None else None

    return await _answer(request, runtime, read, not_found=f"no call {call_sid!r}")


@router.get("/calls/{call_sid}/audio", response_model=None)
async def call_audio(request: Request, call_sid: str, runtime: RuntimeDep) -> Response:
    """The call's recording (CALLASSIST_RECORD): a stereo μ-law WAV, caller left, assistant right."""
    refusal = _refusal(request, runtime)
    if refusal is not None:
        return refusal
    path = recording_path(runtime.settings.data_dir / RECORDINGS, call_sid)
    if path is None or not path.is_file():
        return _error(404, f"no recording of call {call_sid!r}")
    return FileResponse(path, media_type="audio/wav", filename=path.name, headers=_PRIVATE)


@router.get("/messages")
async def messages(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """`?limit=1..200`: newest first."""

    async def read(session: AsyncSession, settings: Settings) -> serialize.JSONObject:
        found = await list_messages(session, limit=_limit(request))
        return serialize.messages_json(found, settings.zone)

    return await _answer(request, runtime, read)


def _notice_status(request: Request) -> str | None:
    text = request.query_params.get("status")
    if not text:
        return None
    if text not in NOTICE_STATUSES:
        raise _BadRequest(f"status must be one of: {', '.join(NOTICE_STATUSES)}")
    return text


@router.get("/notices")
async def notices(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """`?status=pending|sent|failed&limit=1..200`: the owner's notices, newest first; a failed one
    carries the reason it was given up in `last_error`."""

    async def read(session: AsyncSession, settings: Settings) -> serialize.JSONObject:
        found = await list_notices(session, status=_notice_status(request), limit=_limit(request))
        return serialize.notices_json(found, settings.zone)

    return await _answer(request, runtime, read)


@router.get("/contacts")
async def contacts(request: Request, runtime: RuntimeDep) -> JSONResponse:
    async def read(session: AsyncSession, settings: Settings) -> serialize.JSONObject:
        return serialize.contacts_json(await ContactRepository(session).list(), settings.zone)

    return await _answer(request, runtime, read)
