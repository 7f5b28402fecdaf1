"""Voicemails: what a caller left on Twilio's <Record> when the assistant couldn't answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "voicemails",
        sa.Column("call_sid", sa.String(), nullable=False),
        sa.Column("caller_number", sa.String(), nullable=True),
        sa.Column("called_number", sa.String(), nullable=True),
        sa.Column("recording_sid", sa.String(length=64), nullable=True),
        sa.Column("recording_url", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("finished_on_key", sa.String(length=8), nullable=True),
        sa.Column("recording_status", sa.String(length=16), nullable=True),
        sa.Column("transcription_status", sa.String(length=16), nullable=True),
        sa.Column("transcription", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_sid", name=op.f("pk_voicemails")),
    )
    op.create_index(op.f("ix_voicemails_created_at"), "voicemails", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_voicemails_created_at"), table_name="voicemails")
    op.drop_table("voicemails")
