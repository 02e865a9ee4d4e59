"""Templates, scheduled messages, fallback steps, categories and the notification log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("category", sa.Text(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("step", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("fallback_after", sa.Integer(), nullable=True))
    op.create_table(
        "templates",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", "version", name="pk_templates"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_templates_tenant_id_tenants"
        ),
    )
    op.create_table(
        "scheduled",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("app_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("deliver_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scheduled"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_scheduled_tenant_id_tenants"
        ),
    )
    op.create_index("ix_scheduled_state_deliver_at", "scheduled", ["state", "deliver_at"])
    op.create_table(
        "notify_log",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("digest", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "recipient", name="pk_notify_log"),
    )
    op.create_index(
        "ix_notify_log_tenant_id_recipient_created_at",
        "notify_log",
        ["tenant_id", "recipient", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_notify_log_tenant_id_recipient_created_at", table_name="notify_log")
    op.drop_table("notify_log")
    op.drop_index("ix_scheduled_state_deliver_at", table_name="scheduled")
    op.drop_table("scheduled")
    op.drop_table("templates")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("fallback_after")
        batch.drop_column("step")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("category")
