"""Request-signing keys of apps (RFC 9421): Ed25519 public keys and sealed HMAC secrets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_keys",
        sa.Column("keyid", sa.Text(), nullable=False),
        sa.Column("app_id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("algorithm", sa.Text(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("keyid", name="pk_app_keys"),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name="fk_app_keys_app_id_apps"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_app_keys_tenant_id_tenants"
        ),
    )
    op.create_index("ix_app_keys_app_id", "app_keys", ["app_id"])


def downgrade() -> None:
    op.drop_index("ix_app_keys_app_id", table_name="app_keys")
    op.drop_table("app_keys")
