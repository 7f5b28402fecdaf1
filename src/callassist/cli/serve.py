"""`callassist serve`: run the server that answers calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from callassist.cli.common import fail, run_on_database, settings_or_exit

if TYPE_CHECKING:
    from callassist.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on [CALLASSIST_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [CALLASSIST_PORT]")] = None,
) -> None:
    """Run the server that answers calls."""
    from callassist import server
    from callassist.observability import setup_logging

    settings = settings_or_exit(host=host, port=port)
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        raise fail("OPENAI_API_KEY is not set: put it in the environment or in .env", 2)
    # Like any other bad setting, a database that can't be used stops the start in one line.
    run_on_database(_prepare_database(settings), "open the database")
    setup_logging(settings.log_level)
    running = server.build_server(settings)
    running.run()
    if not running.started:
        raise fail("the server did not start (see the log above)")


async def _prepare_database(settings: Settings) -> None:
    from callassist.store.db import Database

    database = Database.from_url(settings.database)
    try:
        await database.prepare()
    finally:
        await database.close()
