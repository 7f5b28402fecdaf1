"""Alembic's entry point for callassist's migrations (run by `Database.upgrade`, not imported).

Two ways in. `Database.upgrade` passes a live connection in `config.attributes["connection"]`
(inside the app's event loop, via `run_sync`); a developer generating a revision passes a URL as
`sqlalchemy.url` (see `callassist.store.db.alembic_config`), and we open our own async engine.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from callassist.store.models import Base
from callassist.store.types import UTCDateTime

config = context.config
target_metadata = Base.metadata


def _render_item(kind: str, item: Any, autogen_context: Any) -> str | Literal[False]:
    # Migrations spell plain SQLAlchemy types so they never change when app code does; the
    # UTC conversion is Python-side only, the column is a timestamptz / DATETIME either way.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite can't ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        **options,  # type: ignore[arg-type]
    )


def run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    given = config.attributes.get("connection")
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
    elif given is not None:
        run_migrations(given)
    elif url:
        # Only reached from a developer's shell, where no event loop is running yet.
        asyncio.run(run_with_own_engine(url))
    else:
        raise RuntimeError("no database: use Database.upgrade() or alembic_config(url)")


main()
