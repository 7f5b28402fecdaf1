"""FastAPI application factory: mounts the routers over one Runtime (`callassist.runtime`) and runs
its lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callassist.dashboard import api, calendar_feed, pages
from callassist.runtime import build_runtime, describe_startup
from callassist.settings import Settings, load_settings
from callassist.store.db import DatabaseUnavailable, DatabaseUrlError
from callassist.telephony import transfer, voicemail, webhooks
from callassist.telephony.signature import is_direct_loopback

log = logging.getLogger(__name__)


@dataclass
class StartupProblem:
    """A start-up failure that is the configuration's, not a bug (a database that can't be used)."""

    message: str | None = None


class PlainStartupFailure:
    """Hands uvicorn a StartupProblem's one line instead of the traceback Starlette would send with
    `lifespan.startup.failed`; uvicorn logs it and exits, as for any failed start-up."""

    def __init__(self, app: ASGIApp, problem: StartupProblem) -> None:
        self.app = app
        self.problem = problem

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_plain(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.problem.message:
                message = {**message, "message": self.problem.message}
            await send(message)

        await self.app(scope, receive, send_plain)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    runtime = build_runtime(settings)
    problem = StartupProblem()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for line in describe_startup(settings):
            log.info(line)
        try:
            await runtime.start()
        except (DatabaseUnavailable, DatabaseUrlError) as exc:
            problem.message = str(exc)
            with contextlib.suppress(Exception):
                await runtime.stop()
            raise
        runtime.ready = True
        try:
            yield
        finally:
            runtime.ready = False
            # Normally already drained by the server's shutdown hook; this covers embedded use.
            await runtime.registry.drain(settings.shutdown_grace_seconds)
            await runtime.stop()

    app = FastAPI(title="callassist", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime  # what `callassist.runtime.get_runtime` hands the routes
    app.add_middleware(PlainStartupFailure, problem=problem)
    app.include_router(webhooks.router)
    app.include_router(voicemail.router)
    app.include_router(transfer.router)
    app.include_router(calendar_feed.router)
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        ok = runtime.ready and runtime.registry.accepting
        body: dict[str, object] = {"status": "ok" if ok else "unavailable"}
        if is_direct_loopback(request):  # how busy the line is, or its health, is nobody else's business
            # Still 200 when OpenAI is failing: Twilio's calls are answered (with the voicemail).
            body["openai"] = "degraded" if runtime.openai_degraded else "ok"
            body["live_calls"] = len(runtime.registry)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        # Counts only, no caller data; still, only the machine itself may scrape by default.
        if not is_direct_loopback(request):
            return Response("forbidden", status_code=403, media_type="text/plain")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
