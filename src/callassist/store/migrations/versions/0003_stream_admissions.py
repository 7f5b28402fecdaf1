"""Stream admissions: what each call's signed webhooks said, and whether its one stream was opened.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stream_admissions",
        sa.Column("call_sid", sa.String(), nullable=False),
        sa.Column("caller_number", sa.String(), nullable=True),
        sa.Column("called_number", sa.String(), nullable=True),
        sa.Column("stir_verstat", sa.String(length=64), nullable=True),
        sa.Column("dial_status", sa.String(length=32), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_issued", sa.BigInteger(), nullable=True),
        sa.Column("stream_sid", sa.String(), nullable=True),
        sa.Column("stream_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("call_sid", name=op.f("pk_stream_admissions")),
    )


def downgrade() -> None:
    op.drop_table("stream_admissions")
