"""The local calendar: calendar_events.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendar_events",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("all_day", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("caller_number", sa.String(), nullable=True),
        sa.Column("caller_name", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="confirmed", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sequence", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("status IN ('confirmed', 'cancelled')", name=op.f("ck_calendar_events_status")),
        sa.CheckConstraint('"end" > start', name=op.f("ck_calendar_events_end_after_start")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_events")),
    )
    op.create_index(op.f("ix_calendar_events_start"), "calendar_events", ["start"])
    op.create_index(op.f("ix_calendar_events_end"), "calendar_events", ["end"])
    op.create_index(op.f("ix_calendar_events_caller_number"), "calendar_events", ["caller_number"])


def downgrade() -> None:
    op.drop_index(op.f("ix_calendar_events_caller_number"), table_name="calendar_events")
    op.drop_index(op.f("ix_calendar_events_end"), table_name="calendar_events")
    op.drop_index(op.f("ix_calendar_events_start"), table_name="calendar_events")
    op.drop_table("calendar_events")
