"""``herald audit verify`` against the databases of real servers, tampered directly (DESIGN §6).

For each backend (SQLite, PostgreSQL) one server records an audit log: ``herald init`` and
``herald serve`` with checkpoints every second, signed messages published in batches with a
checkpoint after each, a stop and a copy of the database (the *earlier copy*), a restart,
more messages and checkpoints, a stop. The witness directory then holds checkpoints the
earlier copy never saw.

Every tamper is applied to a fresh copy of the recorded database with plain SQL (sqlite3 or
asyncpg), then ``herald audit verify --database-url … --key … --witness … --json`` must exit
1 naming the right index and reason. The untampered copy and an exported bundle verify; a
tampered bundle does not.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import tests.api.conftest as _api
import tests.conftest as _root

from herald.audit.entry import canonical_json
from herald.audit.merkle import leaf_hash

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App

WAIT = 15.0  # seconds: the bound of every single wait in this module


run_cli = _api.run_cli
start_server = _api.start_server
stop_server = _api.stop_server
base_env = _api.base_env
free_port = _api.free_port
run_async = _root.run_async


# -- a server of our own ------------------------------------------------------------------------
@dataclass
class Node:
    """An initialised data dir and (while started) its ``herald serve`` process."""

    env: dict[str, str]
    url: str
    ca: Path
    demo: App
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def init(cls, data_dir: Path, witness: Path, **extra: str) -> Node:
        env = base_env(
            data_dir,
            free_port(),
            HERALD_AUDIT_CHECKPOINT_SECONDS="1",
            HERALD_AUDIT_WITNESS_DIR=str(witness),
            **extra,
        )
        init = json.loads(run_cli(env, "init", "--json").stdout)
        return cls(env, init["url"], Path(init["ca_cert"]), _api.App.from_cli(init))

    def start(self) -> None:
        self.process = start_server(self.env, self.url, self.ca)

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)
            self.process = None

    def _sign(self, request: httpx.Request) -> None:
        if request.method in {"GET", "HEAD"} or "signature" in request.headers:
            return
        if _api._client_id_of(request) == self.demo.client_id:
            self.demo.signer.sign(request)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            timeout=WAIT,
            event_hooks={"request": [self._sign]},
        )

    def token(self, client: httpx.Client) -> str:
        response = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(self.demo.client_id, self.demo.client_secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def publish_and_checkpoint(self, count: int) -> int:
        """Publish ``count`` signed messages, wait for a checkpoint covering them; its size."""
        with self.client() as client:
            headers = {"Authorization": f"Bearer {self.token(client)}"}
            last = -1
            for n in range(count):
                body = {"topic": "audit.tamper", "title": f"message {n}", "body": "hello"}
                response = client.post("/v1/messages", json=body, headers=headers)
                assert response.status_code == 202, response.text
                last = response.json()["audit"]["index"]
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                response = client.get("/v1/audit/checkpoint", headers=headers)
                if response.status_code == 200 and response.json()["size"] > last:
                    return int(response.json()["size"])
                assert response.status_code in {200, 404}, response.text
                time.sleep(0.2)
        raise AssertionError(f"no checkpoint covered index {last} within {WAIT} s")

    def verifier_key(self) -> str:
        with self.client() as client:
            response = client.get("/.well-known/herald-audit-key")
        assert response.status_code == 200, response.text
        return response.text.strip()


# -- databases --------------------------------------------------------------------------------
class Db(Protocol):
    """The few SQL operations the tampers need; ``?`` placeholders on both backends."""

    async def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]: ...

    async def run(self, sql: str, *args: object) -> None: ...


class SqliteDb:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, args).fetchall()]

    async def run(self, sql: str, *args: object) -> None:
        self.conn.execute(sql, args)


class PgDb:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @staticmethod
    def _numbered(sql: str) -> str:
        parts = sql.split("?")
        return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))

    async def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.fetch(self._numbered(sql), *args)]

    async def run(self, sql: str, *args: object) -> None:
        await self.conn.execute(self._numbered(sql), *args)


Edit = Callable[[Db], Awaitable[None]]


class Backend(Protocol):
    def copy(self, source: str) -> str:
        """A new database holding what ``source`` holds; its URL."""
        ...

    def edit(self, url: str, edit: Edit) -> None:
        """Apply ``edit`` to the database at ``url`` in one transaction."""
        ...


@dataclass
class SqliteBackend:
    directory: Path

    def copy(self, source: str) -> str:
        target = self.directory / f"copy-{secrets.token_hex(4)}.db"
        with (
            closing(sqlite3.connect(source.removeprefix("sqlite:///"))) as src,
            closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
        return f"sqlite:///{target}"

    def edit(self, url: str, edit: Edit) -> None:
        async def work() -> None:
            with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
                await edit(SqliteDb(conn))
                conn.commit()

        run_async(work)


@dataclass
class PgBackend:
    admin: str  # a DSN on the same server, to create and drop databases from
    created: list[str] = field(default_factory=list)

    def copy(self, source: str) -> str:
        name = f"{urlsplit(self.admin).path.lstrip('/')}_c{len(self.created)}"
        template = urlsplit(source).path.lstrip("/")

        async def work() -> None:
            conn = await asyncpg.connect(self.admin, timeout=10)
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            finally:
                await conn.close()

        run_async(work)
        self.created.append(name)
        return _root.dsn_with_database(self.admin, name)

    def edit(self, url: str, edit: Edit) -> None:
        async def work() -> None:
            conn = await asyncpg.connect(url, timeout=10)
            try:
                async with conn.transaction():
                    await edit(PgDb(conn))
            finally:
                await conn.close()

        run_async(work)

    def drop_all(self) -> None:
        for name in self.created:
            run_async(lambda name=name: _root.drop_database(self.admin, name))


# -- the recorded log ---------------------------------------------------------------------------
@dataclass
class Recorded:
    """A stopped server's audit log, the earlier copy, and what the verifier needs."""

    backend: Backend
    node: Node
    url: str  # the database the server used (never tampered)
    earlier: str  # the copy taken before the last batch (the roll-back target)
    witness: Path
    key: str
    size: int = 0
    checkpoints: list[int] = field(default_factory=list)
    earlier_size: int = 0

    def signed_before(self, index: int) -> int:
        """The largest size at or below ``index`` with a stored or witnessed checkpoint."""
        witnessed = [int(p.name.removesuffix(".checkpoint")) for p in self.witness.iterdir()]
        return max((s for s in [*self.checkpoints, *witnessed] if s <= index), default=0)

    def read(self, url: str, sql: str) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []

        async def edit(db: Db) -> None:
            found.extend(await db.rows(sql))

        self.backend.edit(url, edit)
        return found

    def verify(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        result = run_cli(env or self.node.env, "audit", "verify", *args, "--json", check=False)
        assert result.returncode in {0, 1}, result.stderr
        return result.returncode, json.loads(result.stdout)

    def verify_db(self, url: str) -> tuple[int, dict[str, Any]]:
        return self.verify("--database-url", url, "--key", self.key, "--witness", str(self.witness))


def record(backend: Backend, node: Node, url: str, witness: Path) -> Recorded:
    node.start()
    try:
        node.publish_and_checkpoint(25)
        node.publish_and_checkpoint(25)
    finally:
        node.stop()
    earlier = backend.copy(url)
    node.start()
    try:
        node.publish_and_checkpoint(10)
        key = node.verifier_key()
    finally:
        node.stop()
    rec = Recorded(backend, node, url, earlier, witness, key)
    rec.size = int(rec.read(url, "SELECT count(*) FROM audit_entries")[0][0])
    rec.checkpoints = [
        int(r[0]) for r in rec.read(url, "SELECT size FROM audit_checkpoints ORDER BY size")
    ]
    rec.earlier_size = int(rec.read(earlier, "SELECT count(*) FROM audit_entries")[0][0])
    assert len(rec.checkpoints) >= 3, rec.checkpoints
    assert rec.earlier_size < rec.checkpoints[-1]
    return rec


@pytest.fixture(scope="module")
def sqlite_log(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    base = tmp_path_factory.mktemp("audit-sqlite")
    node = Node.init(base / "data", base / "witness")
    return record(
        SqliteBackend(base), node, f"sqlite:///{base / 'data' / 'herald.db'}", base / "witness"
    )


@pytest.fixture(scope="module")
def pg_log(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[Recorded]:
    base = tmp_path_factory.mktemp("audit-pg")
    backend = PgBackend(pg_dsn)
    name = f"{urlsplit(pg_dsn).path.lstrip('/')}_audit"
    run_async(lambda: _root.create_database(pg_dsn, name))
    backend.created.append(name)
    url = _root.dsn_with_database(pg_dsn, name)
    try:
        node = Node.init(base / "data", base / "witness", HERALD_DATABASE_URL=url)
        yield record(backend, node, url, base / "witness")
    finally:
        backend.drop_all()


# -- tampers ----------------------------------------------------------------------------------
async def entry_at(db: Db, index: int) -> bytes:
    ((entry,),) = await db.rows("SELECT entry FROM audit_entries WHERE idx = ?", index)
    return bytes(entry)


async def shift_up(db: Db, start: int) -> None:
    """Move every entry from ``start`` on one index up (two steps: idx is the primary key)."""
    await db.run("UPDATE audit_entries SET idx = -idx - 1 WHERE idx >= ?", start)
    await db.run("UPDATE audit_entries SET idx = -idx WHERE idx < 0")


def change_byte(rec: Recorded) -> tuple[Edit, int, str]:
    index = 20

    async def edit(db: Db) -> None:
        raw = bytearray(await entry_at(db, index))
        raw[len(raw) // 2] ^= 0x01
        await db.run("UPDATE audit_entries SET entry = ? WHERE idx = ?", bytes(raw), index)

    return edit, index, "modified"


def change_entry_and_leaf_hash(rec: Recorded) -> tuple[Edit, int, str]:
    index = rec.checkpoints[1] + 1  # after the second checkpoint

    async def edit(db: Db) -> None:
        value = json.loads(await entry_at(db, index))
        value["actor"] = "someone-else"
        entry = canonical_json(value)
        await db.run(
            "UPDATE audit_entries SET entry = ?, leaf_hash = ? WHERE idx = ?",
            entry,
            leaf_hash(entry),
            index,
        )

    # Only the next signed head can tell: the range starts at the last size that verified.
    return edit, rec.signed_before(index), "modified"


def delete_one(rec: Recorded) -> tuple[Edit, int, str]:
    index = 25

    async def edit(db: Db) -> None:
        await db.run("DELETE FROM audit_entries WHERE idx = ?", index)

    return edit, index, "missing"


def insert_one(rec: Recorded) -> tuple[Edit, int, str]:
    index = 30

    async def edit(db: Db) -> None:
        value = json.loads(await entry_at(db, index))
        value["actor"] = "intruder"  # a plausible entry claiming the index it is put at
        entry = canonical_json(value)
        await shift_up(db, index)
        await db.run(
            "INSERT INTO audit_entries (idx, entry, leaf_hash, created_at) "
            "SELECT ?, ?, ?, created_at FROM audit_entries WHERE idx = ?",
            index,
            entry,
            leaf_hash(entry),
            index + 1,
        )

    return edit, index, "inserted"


def swap_two(rec: Recorded) -> tuple[Edit, int, str]:
    a, b = 12, 40

    async def edit(db: Db) -> None:
        await db.run("UPDATE audit_entries SET idx = -1 WHERE idx = ?", a)
        await db.run("UPDATE audit_entries SET idx = ? WHERE idx = ?", a, b)
        await db.run("UPDATE audit_entries SET idx = ? WHERE idx = -1", b)

    return edit, a, "reordered"


def truncate_tail(rec: Recorded) -> tuple[Edit, int, str]:
    size = rec.checkpoints[-1] - 5

    async def edit(db: Db) -> None:
        await db.run("DELETE FROM audit_entries WHERE idx >= ?", size)

    return edit, size, "truncated"


def replace_signature(rec: Recorded) -> tuple[Edit, int, str]:
    size = rec.checkpoints[1]

    async def edit(db: Db) -> None:
        ((note,),) = await db.rows("SELECT note FROM audit_checkpoints WHERE size = ?", size)
        body, _, last = str(note).rstrip("\n").rpartition("\n")
        prefix, _, sig64 = last.rpartition(" ")
        raw = bytearray(base64.b64decode(sig64))
        raw[-1] ^= 0x01  # a byte of the Ed25519 signature; the key id stays
        forged = f"{body}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
        await db.run("UPDATE audit_checkpoints SET note = ? WHERE size = ?", forged, size)

    return edit, size, "bad-signature"


TAMPERS = [
    change_byte,
    change_entry_and_leaf_hash,
    delete_one,
    insert_one,
    swap_two,
    truncate_tail,
    replace_signature,
]


def check_tamper(rec: Recorded, tamper: Callable[[Recorded], tuple[Edit, int, str]]) -> None:
    edit, index, reason = tamper(rec)
    copy = rec.backend.copy(rec.url)
    rec.backend.edit(copy, edit)
    code, report = rec.verify_db(copy)
    assert (code, report["ok"], report["index"], report["reason"]) == (1, False, index, reason), (
        report
    )


def check_intact(rec: Recorded) -> None:
    code, report = rec.verify_db(rec.backend.copy(rec.url))
    assert code == 0, report
    assert report["ok"] is True
    assert report["entries"] == rec.size
    assert report["checkpoints"] == len(rec.checkpoints)
    assert report["witnessed"] == len(rec.checkpoints)  # every stored one has its witness copy
    assert report["size"] == rec.checkpoints[-1]


def check_rollback(rec: Recorded) -> None:
    code, report = rec.verify_db(rec.backend.copy(rec.earlier))
    assert (code, report["index"], report["reason"]) == (1, rec.earlier_size, "truncated"), report
    assert "witness" in report["detail"]
    # Without the witness the earlier copy is a consistent log: that is what it is for.
    empty = rec.witness.with_name(f"empty-{secrets.token_hex(4)}")
    empty.mkdir()
    code, report = rec.verify(
        "--database-url", rec.earlier, "--key", rec.key, "--witness", str(empty)
    )
    assert code == 0, report


def check_bundle(rec: Recorded, directory: Path) -> None:
    bundle = directory / f"audit-{secrets.token_hex(4)}.jsonl"
    exported = json.loads(
        run_cli(rec.node.env, "audit", "export", "--output", str(bundle), "--json").stdout
    )
    assert exported["entries"] == rec.size
    assert exported["checkpoints"] == len(rec.checkpoints)
    assert exported["verifier_key"] == rec.key
    args = ("--key", rec.key, "--witness", str(rec.witness))
    code, report = rec.verify("--bundle", str(bundle), *args)
    assert code == 0, report
    assert (report["entries"], report["size"]) == (rec.size, rec.checkpoints[-1])

    lines = bundle.read_text(encoding="utf-8").splitlines(keepends=True)
    line = json.loads(lines[1 + 33])
    raw = bytearray(base64.b64decode(line["e"]))
    raw[len(raw) // 2] ^= 0x01
    line["e"] = base64.b64encode(bytes(raw)).decode()
    lines[1 + 33] = json.dumps(line) + "\n"
    tampered = directory / f"tampered-{secrets.token_hex(4)}.jsonl"
    tampered.write_text("".join(lines), encoding="utf-8")
    code, report = rec.verify("--bundle", str(tampered), *args)
    assert (code, report["index"], report["reason"]) == (1, 33, "modified"), report


def check_operator_defaults(rec: Recorded) -> None:
    # No flags: the configured database, witness dir and (via the master key) audit key.
    result = run_cli(rec.node.env, "audit", "verify")
    assert result.stdout.startswith(f"audit log intact: {rec.size} entries, "), result.stdout
    assert f"at size {rec.checkpoints[-1]}" in result.stdout


# -- SQLite -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_sqlite_tamper_is_detected(sqlite_log: Recorded, tamper: Any) -> None:
    check_tamper(sqlite_log, tamper)


def test_sqlite_untampered_log_verifies(sqlite_log: Recorded) -> None:
    check_intact(sqlite_log)


def test_sqlite_rolled_back_database_is_truncated(sqlite_log: Recorded) -> None:
    check_rollback(sqlite_log)


def test_sqlite_export_and_bundle_verify(sqlite_log: Recorded, tmp_path: Path) -> None:
    check_bundle(sqlite_log, tmp_path)


def test_sqlite_operator_defaults(sqlite_log: Recorded) -> None:
    check_operator_defaults(sqlite_log)


def test_verify_cannot_run_without_a_database(sqlite_log: Recorded, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    result = run_cli(
        sqlite_log.node.env,
        "audit",
        "verify",
        "--database-url",
        f"sqlite:///{missing}",
        "--key",
        sqlite_log.key,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot verify" in result.stderr
    assert not missing.exists()  # verification never creates a database


# -- PostgreSQL -------------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_postgres_tamper_is_detected(pg_log: Recorded, tamper: Any) -> None:
    check_tamper(pg_log, tamper)


@pytest.mark.postgres
def test_postgres_untampered_log_verifies(pg_log: Recorded) -> None:
    check_intact(pg_log)


@pytest.mark.postgres
def test_postgres_rolled_back_database_is_truncated(pg_log: Recorded) -> None:
    check_rollback(pg_log)


@pytest.mark.postgres
def test_postgres_export_and_bundle_verify(pg_log: Recorded, tmp_path: Path) -> None:
    check_bundle(pg_log, tmp_path)


@pytest.mark.postgres
def test_postgres_operator_defaults(pg_log: Recorded) -> None:
    check_operator_defaults(pg_log)
