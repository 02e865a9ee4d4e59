"""Fixtures shared by the whole suite: external services and how their absence is handled.

Tests that need a service skip when it is unreachable, unless ``HERALD_REQUIRE_SERVICES=1``
(CI), where an unreachable service fails the run instead of silently skipping it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")

PG_ADMIN_DSN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"

_fresh_counter = itertools.count()


def require_services() -> bool:
    """True when unreachable services must fail the run (``HERALD_REQUIRE_SERVICES=1``)."""
    return os.environ.get("HERALD_REQUIRE_SERVICES") == "1"


def service_unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it when services are required."""
    if require_services():
        pytest.fail(message + " (HERALD_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, on a private event loop.

    The loop lives in a helper thread, so that neither pytest-asyncio's function-scoped
    loops nor the main thread's current-loop setting are touched.
    """
    result: list[T] = []
    error: list[BaseException] = []

    async def main() -> None:
        result.append(await factory())

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="herald-test-setup")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def pg_admin_dsn() -> str:
    """DSN of the PostgreSQL server's maintenance database used to create test databases."""
    return os.environ.get("HERALD_TEST_PG_DSN", PG_ADMIN_DSN_DEFAULT)


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    return f"{host}:{parts.port or 5432}"


async def create_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` (a trusted identifier) on the server of ``admin_dsn``."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name``, disconnecting any session still attached."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL database of this test session: ``postgresql://…/herald_test_<pid>_<hex>``.

    Dropped (WITH (FORCE)) at the end of the session. Skips when the server is unreachable,
    fails instead when ``HERALD_REQUIRE_SERVICES=1``.
    """
    admin = pg_admin_dsn()
    name = f"herald_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        run_async(lambda: create_database(admin, name))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        service_unavailable(f"PostgreSQL not reachable at {_redacted(admin)}: {exc}")
    try:
        yield dsn_with_database(admin, name)
    finally:
        run_async(lambda: drop_database(admin, name))


@pytest.fixture
def pg_fresh_dsn(pg_dsn: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (created on the session's server).

    ``CREATE DATABASE`` costs ~25 ms here; in exchange nothing leaks between tests, not
    even advisory locks or sequences. Dropped (WITH (FORCE)) after the test.
    """
    session_db = urlsplit(pg_dsn).path.lstrip("/")
    name = f"{session_db}_{next(_fresh_counter)}"
    run_async(lambda: create_database(pg_dsn, name))
    try:
        yield dsn_with_database(pg_dsn, name)
    finally:
        run_async(lambda: drop_database(pg_dsn, name))


# -- the one Redis key that outlives the tests that made it -------------------------------------
#: The nonce store's epoch (herald.state.nonces.EPOCH_KEY under its prefix). Every test node on
#: the shared Redis uses it, so no single test may delete it while others run; the run deletes
#: it once every worker is done, unless it existed before the run began.
_EPOCH_KEY = "herald:nonce-epoch"
_TEST_REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _epoch_key(delete: bool = False) -> bool | None:
    """Whether the epoch key exists (None: Redis unreachable); delete it when asked."""
    import redis

    try:
        with redis.Redis.from_url(
            _TEST_REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0
        ) as client:
            if delete:
                client.delete(_EPOCH_KEY)
                return False
            return bool(client.exists(_EPOCH_KEY))
    except (redis.RedisError, OSError):
        return None


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a serial run)
        session.config.stash[_EPOCH_EXISTED] = _epoch_key() is not False


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput") and not session.config.stash.get(
        _EPOCH_EXISTED, True
    ):
        _epoch_key(delete=True)


_EPOCH_EXISTED = pytest.StashKey[bool]()
