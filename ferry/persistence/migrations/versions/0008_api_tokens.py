"""the bearer tokens of ``ferry serve``

Revision ID: 0008_api_tokens
Revises: 0007_host_down_reason
Create Date: 2026-12-07 18:00:00.000000

``ferry_api_tokens``: one row per token (public id, unique name, role, salt, salted SHA-256 of the
secret, created/revoked times). The secret itself is never stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_api_tokens"
down_revision = "0007_host_down_reason"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ferry_api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("ferry_api_tokens")
