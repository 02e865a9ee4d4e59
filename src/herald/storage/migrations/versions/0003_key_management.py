"""Key management: shredded tenants, e2e devices, resumable re-encryption jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:00:00
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
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "devices",
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name="pk_devices"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_devices_tenant_id_tenants"),
    )
    op.create_index("ix_devices_tenant_id_recipient", "devices", ["tenant_id", "recipient"])
    op.create_table(
        "jobs",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", "tenant_id", name="pk_jobs"),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_index("ix_devices_tenant_id_recipient", table_name="devices")
    op.drop_table("devices")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("shredded_at")
