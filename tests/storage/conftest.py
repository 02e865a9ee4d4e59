"""Storage fixtures: one fresh, empty database per test, on every backend.

``store_url`` is parametrized over SQLite (a file under ``tmp_path``) and PostgreSQL (a new
database per test, see ``pg_fresh_dsn`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald.storage.sql import SqlStore

OpenStore = Callable[..., Awaitable[SqlStore]]


def new_id() -> str:
    """A fresh random id for rows the store creates itself."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    """The store's clock in tests: the real time, aware."""
    return datetime.now(UTC)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An SQLAlchemy async URL of a fresh, empty database of the parametrized backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'herald.db'}"
    dsn: str = request.getfixturevalue("pg_fresh_dsn")
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    """``await open_store(url, migrate=True)``: an opened store, closed after the test."""
    opened: list[SqlStore] = []

    async def factory(url: str, *, migrate: bool = True) -> SqlStore:
        result = await SqlStore.open(url, new_id=new_id, clock=utc_now, migrate=migrate)
        opened.append(result)
        return result

    try:
        yield factory
    finally:
        for item in opened:
            await item.close()


@pytest.fixture
async def store(store_url: str, open_store: OpenStore) -> SqlStore:
    """A migrated :class:`SqlStore` on a fresh database, closed after the test."""
    return await open_store(store_url)
