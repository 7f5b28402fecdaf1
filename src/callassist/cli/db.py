"""`callassist db`: the database's schema."""

from __future__ import annotations

import typer

from callassist.cli.common import console, run_on_database, settings_or_exit

app = typer.Typer(help="The database: schema upgrades.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database schema to the latest version (`serve` also does this on start)."""
    from callassist.store.db import Database

    settings = settings_or_exit()

    async def upgrade() -> None:
        database = Database.from_url(settings.database)
        try:
            revision = await database.prepare()
            console.print(f"{database.url_for_display}: at revision {revision}", highlight=False)
        finally:
            await database.close()

    run_on_database(upgrade(), "upgrade the database")
