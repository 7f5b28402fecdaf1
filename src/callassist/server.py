"""Run the app under uvicorn, with a shutdown that lets live calls end cleanly.

On SIGTERM/SIGINT: stop accepting connections, let every live call say a short goodbye and end
(within CALLASSIST_SHUTDOWN_GRACE_SECONDS), then let uvicorn finish. The whole exit stays under 10 s.
"""

from __future__ import annotations

import gc
import socket

import uvicorn

from callassist.app import Services, create_app
from callassist.settings import Settings

GC_THRESHOLDS = (20_000, 20, 20)


class CallAwareServer(uvicorn.Server):
    """uvicorn's Server, draining live calls before it closes their sockets."""

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self.services = services

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built so far lives as long as the server: keep the cyclic GC from rescanning it
        # on every collection, and collect less often (each call allocates many short-lived dicts).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Still listening while calls wind down: a new call hears "restarting" instead of an error.
        await self.services.registry.drain(self.services.settings.shutdown_grace_seconds)
        await super().shutdown(sockets)
        # uvicorn re-raises the signal it caught once serving ends, so the process dies of SIGTERM;
        # after a complete drain we'd rather exit with status 0 (a clean stop for any supervisor).
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def build_server(settings: Settings) -> CallAwareServer:
    """The app under uvicorn, tuned for many long-lived audio WebSockets."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our logging set-up stays in charge
        access_log=False,
        # We judge "loopback" ourselves (signature.is_direct_loopback); keep the socket's address.
        proxy_headers=False,
        server_header=False,
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # compressing base64 audio costs CPU on every frame
        ws_max_size=1024 * 1024,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    return CallAwareServer(config, app.state.services)


def run(settings: Settings) -> None:
    build_server(settings).run()
