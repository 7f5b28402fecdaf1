"""What every command shares: the two consoles, one-line failures, the settings, the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from callassist.settings import Settings
    from callassist.store.db import Database

console = Console()
errors = Console(stderr=True)

_T = TypeVar("_T")


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    from callassist.settings import SettingsError, load_settings

    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise fail(str(exc), 2) from None


@asynccontextmanager
async def open_records(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, migrated, for one CLI command."""
    from callassist.store.db import Database

    database = Database.from_url(settings.database)
    try:
        await database.prepare()
        yield database
    finally:
        await database.close()


def run_on_database(work: Coroutine[Any, Any, _T], doing: str = "read the database") -> _T:
    """asyncio.run(work), a database failure turned into one line on stderr (exit status 1)."""
    from sqlalchemy.exc import SQLAlchemyError

    from callassist.store.db import DatabaseUnavailable, DatabaseUrlError, describe_failure

    try:
        return asyncio.run(work)
    except DatabaseUnavailable as exc:  # which database (password masked) and why, in one line
        raise fail(f"could not {doing}: {exc.database}: {exc.reason}") from None
    except DatabaseUrlError as exc:
        raise fail(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        # A DBAPIError's own text appends the SQL and parameters; the driver's message is enough.
        raise fail(f"could not {doing}: {describe_failure(exc)}") from None


def echo_json(body: object) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))  # plain: rich would wrap long lines
