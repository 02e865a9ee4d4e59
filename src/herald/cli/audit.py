"""``herald audit``: verify the audit log offline, export it as a portable bundle.

``herald audit verify`` trusts nothing the server derived: it reads the entries and the
signed checkpoints straight from the database (or a bundle), recomputes every leaf and head
(never reading the stored ``audit_nodes``), checks every signature, and compares with the
witness copies. Exit status: 0 intact, 1 the log failed verification (the first failing
index and why), 2 verification could not run (unreadable source, bad key).

An auditor passes the key with ``--key`` (from ``/.well-known/herald-audit-key``, kept out of
band). Without ``--key`` the key comes from the bundle's header, or, for a database, from
the audit-signing key the configured master key unwraps: convenient for an operator, but
then the database vouches for itself as far as the key goes.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import URL, func, make_url, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from herald.audit.bundle import BundleInvalid, BundleReader, export_bundle
from herald.audit.log import DirectoryWitness
from herald.audit.note import NoteInvalid, NoteVerifier
from herald.audit.verify import EntryRow, VerifyReport, verify_log
from herald.cli.admin import JsonOpt
from herald.cli.output import console, emit, fail, stderr
from herald.config import Settings, load_settings
from herald.errors import HeraldError
from herald.service.runtime import Runtime
from herald.storage import schema

__all__ = ["LARGE_LOG", "audit_cli"]

audit_cli = typer.Typer(
    help="Verify and export the tamper-evident audit log.", no_args_is_help=True
)

#: Logs with more entries than this get a progress bar (unless --json).
LARGE_LOG = 10_000
#: Entries per query when reading a database.
_PAGE = 5000
_NOT_RUN = 2  # exit status when verification could not run

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def _cannot(message: str) -> NoReturn:
    fail(f"cannot verify: {message}", code=_NOT_RUN)


# -- reading a database ---------------------------------------------------------------------
def _read_only_url(url: str) -> URL:
    """An async SQLAlchemy URL for ``url``; SQLite files are opened read-only."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        _cannot("the database URL cannot be parsed")
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        _cannot(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")
    if parsed.get_backend_name() != "sqlite":
        return parsed.set(drivername=driver)
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        _cannot("give the SQLite database as sqlite:///path/to/herald.db")
    path = Path(database).resolve()
    if not path.is_file():
        _cannot(f"no database file at {path}")
    return URL.create(
        driver, database="file:" + quote(str(path)), query={"mode": "ro", "uri": "true"}
    )


class _Database:
    """The audit tables of one database, read in one read-only snapshot.

    Synchronous on the outside (the verifier pulls entries from an iterator), asynchronous
    inside: one private event loop runs every query on one connection and transaction.
    """

    def __init__(self, url: str) -> None:
        self._url = _read_only_url(url)
        self._runner = asyncio.Runner()
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None

    def __enter__(self) -> _Database:
        try:
            self._conn = self._runner.run(self._open())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _open(self) -> AsyncConnection:
        if self._url.get_backend_name() == "sqlite":
            self._engine = create_async_engine(self._url, hide_parameters=True)
            conn = await self._engine.connect()
        else:
            self._engine = create_async_engine(
                self._url, hide_parameters=True, connect_args={"timeout": 10}
            )
            conn = await self._engine.connect()
            # One consistent snapshot for the checkpoints and every page of entries.
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        await conn.begin()
        return conn

    def close(self) -> None:
        """Release the connection, the engine and the loop (idempotent)."""

        async def shutdown() -> None:
            if self._conn is not None:
                await self._conn.close()
            if self._engine is not None:
                await self._engine.dispose()

        try:
            self._runner.run(shutdown())
        finally:
            self._conn = self._engine = None
            self._runner.close()

    def _run(self, query: Any) -> list[Any]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the database is not open")

        async def fetch() -> list[Any]:
            return list((await conn.execute(query)).all())

        return self._runner.run(fetch())

    def count(self) -> int:
        """Number of stored entries."""
        ((count,),) = self._run(select(func.count()).select_from(schema.audit_entries))
        return int(count)

    def checkpoints(self) -> list[tuple[int, str]]:
        """``(size column, note)`` of every stored checkpoint, smallest first."""
        t = schema.audit_checkpoints
        return [
            (int(size), str(note))
            for size, note in self._run(select(t.c.size, t.c.note).order_by(t.c.size))
        ]

    def entries(self) -> Iterator[EntryRow]:
        """Every stored entry in index order, in pages (keyset pagination on ``idx``)."""
        t = schema.audit_entries
        after: int | None = None
        while True:
            query = select(t.c.idx, t.c.entry, t.c.leaf_hash).order_by(t.c.idx).limit(_PAGE)
            if after is not None:
                query = query.where(t.c.idx > after)
            rows = self._run(query)
            for idx, entry, leaf in rows:
                yield int(idx), bytes(entry), bytes(leaf)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])


# -- keys and witness -------------------------------------------------------------------------
def _verifier(key: str) -> NoteVerifier:
    """``--key``: a verifier key, or a file holding one."""
    text = key
    candidate = Path(key)
    if "+" not in key or candidate.is_file():
        try:
            text = candidate.read_text(encoding="utf-8").strip()
        except OSError as exc:
            _cannot(f"--key is neither a verifier key nor a readable file: {exc.strerror}")
    try:
        return NoteVerifier.from_key(text)
    except NoteInvalid as exc:
        _cannot(f"bad verifier key: {exc}")


def _key_from_master(settings: Settings) -> str:
    """The configured database's audit verifier key, unwrapped with the master key."""

    async def main() -> str:
        rt = await Runtime.open(settings, migrate=False)
        try:
            return rt.audit_log().verifier_key()
        finally:
            await rt.close()

    try:
        return asyncio.run(main())
    except HeraldError as exc:
        _cannot(f"no --key given and the audit key cannot be loaded ({_first_line(exc)})")


def _witness_notes(witness: Path | None, settings: Callable[[], Settings]) -> dict[int, str]:
    if witness is not None:
        if not witness.is_dir():
            _cannot(f"no witness directory at {witness}")
        path = witness
    else:
        path = settings().witness_dir
        if not path.is_dir():
            return {}
    try:
        return DirectoryWitness(path).notes()
    except (OSError, UnicodeDecodeError) as exc:
        _cannot(f"cannot read the witness directory {path}: {exc}")


# -- output -----------------------------------------------------------------------------------
def _print_report(report: VerifyReport, *, as_json: bool) -> None:
    failure = report.failure
    if failure is None:
        root = base64.b64encode(report.root).decode("ascii")
        emit(
            {
                "ok": True,
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "witnessed": report.witnessed,
                "witness": report.witness,
                "size": report.size,
                "root": root,
            },
            as_json=as_json,
            human=(
                f"audit log intact: {report.entries} entries, {report.checkpoints} checkpoints "
                f"({report.witnessed} witnessed), root {root} at size {report.size}"
            ),
        )
        return
    where = f" at index {failure.index}" if failure.index is not None else ""
    emit(
        {
            "ok": False,
            "index": failure.index,
            "reason": failure.reason,
            "detail": failure.detail,
            "entries": report.entries,
            "checkpoints": report.checkpoints,
            "witness": report.witness,
        },
        as_json=as_json,
        human=f"audit log FAILED{where}: {failure.reason} — {failure.detail}",
    )
    raise typer.Exit(1)


def _verify_with_progress(
    total: int, as_json: bool, run: Callable[[Callable[[int], None] | None], VerifyReport]
) -> VerifyReport:
    if as_json or total <= LARGE_LOG:
        return run(None)
    with Progress(
        TextColumn("verifying audit log"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=total)
        return run(lambda done: bar.update(task, completed=done))


# -- commands ---------------------------------------------------------------------------------
@audit_cli.command("verify")
def verify(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Database to verify (default: HERALD_DATABASE_URL or the data dir's SQLite).",
        ),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="A bundle from `herald audit export`.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="The audit verifier key, or a file holding it "
            "(from /.well-known/herald-audit-key; an auditor always passes it).",
        ),
    ] = None,
    witness: Annotated[
        Path | None,
        typer.Option("--witness", help="Witness directory (default: the configured one)."),
    ] = None,
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="Expected log origin (default: the key's name)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute and check the whole audit log; exit 0 intact, 1 tampered, 2 not run."""
    if database_url is not None and bundle is not None:
        _cannot("pass --database-url or --bundle, not both")
    loaded: list[Settings] = []

    def settings() -> Settings:
        if not loaded:
            loaded.append(load_settings())
        return loaded[0]

    try:
        # The witness is read first: its copies then never name entries the snapshot lacks.
        notes = _witness_notes(witness, settings)
        if bundle is not None:
            report = _verify_bundle(bundle, key, origin, notes, as_json=as_json)
        else:
            report = _verify_database(
                database_url or settings().sqlalchemy_url,
                key,
                origin,
                notes,
                settings,
                as_json=as_json,
            )
    except sa_exc.DBAPIError as exc:
        _cannot(f"database error: {_first_line(exc.orig or exc)}")
    except (HeraldError, sa_exc.SQLAlchemyError, OSError) as exc:
        _cannot(_first_line(exc))
    _print_report(report, as_json=as_json)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _verify_bundle(
    path: Path, key: str | None, origin: str | None, notes: dict[int, str], *, as_json: bool
) -> VerifyReport:
    try:
        reader = BundleReader(path)
    except BundleInvalid as exc:
        _cannot(str(exc))
    verifier = _verifier(key or reader.header.verifier_key)
    checkpoints = reader.checkpoints()
    return _verify_with_progress(
        reader.header.size,
        as_json,
        lambda progress: verify_log(
            reader.entries(),
            checkpoints,
            verifier,
            origin=origin or verifier.name,
            witness=notes,
            expected_size=reader.header.size,
            progress=progress,
        ),
    )


def _verify_database(
    url: str,
    key: str | None,
    origin: str | None,
    notes: dict[int, str],
    settings: Callable[[], Settings],
    *,
    as_json: bool,
) -> VerifyReport:
    _read_only_url(url)  # refuses a missing SQLite file before anything else opens it
    if key is None:
        key = _key_from_master(settings().model_copy(update={"database_url": url}))
    verifier = _verifier(key)
    with _Database(url) as db:
        checkpoints = db.checkpoints()
        total = db.count()
        return _verify_with_progress(
            total,
            as_json,
            lambda progress: verify_log(
                db.entries(),
                checkpoints,
                verifier,
                origin=origin or verifier.name,
                witness=notes,
                progress=progress,
            ),
        )


@audit_cli.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", help="The bundle file to write.")],
    as_json: JsonOpt = False,
) -> None:
    """Write the configured database's audit log as a bundle `herald audit verify` accepts."""
    settings = load_settings()
    partial = output.with_name(output.name + ".partial")

    async def main() -> dict[str, Any]:
        rt = await Runtime.open(settings, migrate=False)
        try:
            audit = rt.audit_log()
            with partial.open("w", encoding="utf-8", newline="\n") as out:
                summary = await export_bundle(
                    rt.store, out, origin=audit.origin, verifier_key=audit.verifier_key()
                )
                out.flush()
                os.fsync(out.fileno())
            return {
                "output": str(output),
                "entries": summary.entries,
                "checkpoints": summary.checkpoints,
                "verifier_key": audit.verifier_key(),
            }
        finally:
            await rt.close()

    try:
        result = asyncio.run(main())
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc.strerror}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if as_json:
        emit(result, as_json=True)
        return
    console.print(
        f"wrote {result['entries']} entries and {result['checkpoints']} checkpoints to {output}"
    )
