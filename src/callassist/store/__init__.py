"""The persistent store: SQLAlchemy models, repositories and Alembic migrations (SQLite/PostgreSQL)."""

from callassist.store.db import Database, DatabaseUrlError

__all__ = ["Database", "DatabaseUrlError"]
