"""Schema migrations: Alembic ``upgrade head`` and status, on an async engine, without an ini.

The Alembic :class:`~alembic.config.Config` is built in code with ``script_location``
pointing at the ``migrations`` package next to this module, so an installed wheel migrates
itself from any working directory. Alembic's logging configuration is never loaded: the
application's logging stays as the application configured it.

Several nodes may start at once against one PostgreSQL database; the upgrade therefore runs
in one transaction under an advisory lock, and the nodes that wait find the schema at head.
On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (see :data:`WRITE_TRANSACTION`),
which takes SQLite's write lock up front and serialises migrating processes the same way.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_KEY",
    "WRITE_TRANSACTION",
    "alembic_config",
    "head_revision",
    "status",
    "upgrade",
]

#: The Alembic script directory (``env.py``, ``versions/``) inside the installed package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: ``pg_advisory_xact_lock`` key held while migrating ("HRLDMIGR" as a big-endian int64).
MIGRATION_LOCK_KEY = int.from_bytes(b"HRLDMIGR", "big", signed=True)

#: Execution option asking the SQLite engine of :class:`herald.storage.sql.SqlStore` for a
#: ``BEGIN IMMEDIATE`` (write) transaction instead of a deferred one. Other engines ignore it.
WRITE_TRANSACTION = "herald_write_transaction"


def alembic_config(connection: Connection | None = None) -> Config:
    """Build the Alembic configuration in code (no ``alembic.ini``).

    Args:
        connection: a sync connection (inside ``AsyncConnection.run_sync``) handed to
            ``env.py`` through ``config.attributes["connection"]``.

    Returns:
        The configuration for Alembic's ``command`` functions.
    """
    config = Config()
    # ConfigParser interpolates "%": escape it so any install path works.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest revision shipped with this version of Herald."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migration revisions found in " + str(MIGRATIONS_DIR))
    return head


#: Alembic keeps the running migration in module globals (``alembic.context``, ``alembic.op``),
#: so at most one upgrade may run per process at a time: one lock per event loop.
_process_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _process_locks.get(loop)
    if lock is None:
        lock = _process_locks[loop] = asyncio.Lock()
    return lock


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision (Alembic ``upgrade head``).

    Runs in one transaction (both SQLite and PostgreSQL have transactional DDL). On
    PostgreSQL a transaction-level advisory lock (``pg_advisory_xact_lock``) serialises
    nodes starting together; it is released by the commit or rollback itself, so a failed
    migration can never leave the lock held on a pooled connection. Within one process,
    upgrades run one at a time (Alembic's per-run state is global).

    Args:
        engine: the async engine of the database to migrate.
    """
    write_engine = engine.execution_options(**{WRITE_TRANSACTION: True})
    async with _process_lock(), write_engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await conn.run_sync(_upgrade_sync)


async def status(engine: AsyncEngine) -> tuple[str | None, str]:
    """Return ``(current_revision, head_revision)``; current is None for an empty database.

    Args:
        engine: the async engine of the database to inspect.
    """
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_sync)
    return current, head_revision()
