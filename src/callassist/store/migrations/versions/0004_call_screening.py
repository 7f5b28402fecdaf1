"""Call screening: contacts marked VIP or blocked, and the key the owner pressed on the whisper.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("vip", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("blocked", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("stream_admissions") as batch:
        batch.add_column(sa.Column("owner_choice", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stream_admissions") as batch:
        batch.drop_column("owner_choice")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("blocked")
        batch.drop_column("vip")
