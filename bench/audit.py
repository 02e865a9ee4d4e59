"""Cost of the audit log: appends, publishes with and without it, proofs at 10^6, verification.

Run it from the repository root::

    python -m bench.audit            # 10^6-entry log, 3 runs of everything
    python -m bench.audit --quick    # 10^5-entry log, smaller counts (smoke test)

Everything runs in this one process (plus the ``herald audit verify`` subprocess), without
HTTP, on SQLite in a temporary directory initialised like ``herald init``:

1. Audit appends/s: ``store.append_audit`` with batches of 1 and of 100 events (the canonical
   JSON of a ``message.published`` event as ``messages.publish`` builds it, ~350 bytes),
   ``--events`` per batch size and run on the runtime's small log; raw per-entry costs
   (``AuditEvent(index)``, ``merkle.new_node_hashes``).
2. Publishes/s with and without the audit append, in the same run: ``messages.publish`` on the
   real store, against
   :class:`MinimalAuditStore` (BENCHMARK ONLY, defined here) whose audit append does only what
   the schema needs: the next gap-free index (``messages.seq``) and one ``audit_entries`` row
   holding a constant entry; no entry JSON, no leaf hash, no Merkle nodes. It writes to its
   own copy of the database. ``--concurrency`` tasks, 1 KiB bodies, the configurations taking
   turns in slices of ``--chunk`` publishes.
3. A log of ``--entries`` (10^6) entries in a separate database, built directly:
   ``audit_entries`` and ``audit_nodes`` inserted with large ``executemany`` batches, node
   hashes from ``merkle.new_node_hashes`` (not through 10^6 publishes); its stored-node count
   and root are checked. ``AuditLog.checkpoint`` signs its head. SQLite's plan for the
   stored-node query (:func:`nodes_query`, built like ``SqlStore._nodes``) is reported, so a
   regression to a table scan shows.
4. Verification of that log: ``herald audit verify --database-url sqlite:///… --key …
   --witness … --json`` as a subprocess (when the CLI has these options), and in-process
   passes over the same rows that split where the time goes: ``herald.audit.verify.verify_log``
   (the command's core), a minimal loop (leaf hash recomputation + incremental root), and
   reading the rows alone.
5. Proofs at 10^6: ``AuditLog.inclusion(i, n)`` for ``--proofs`` random indices and
   ``AuditLog.consistency(m, k)`` for as many random size pairs, end to end, and the first
   ``--parts`` again in parts (size check, node fetch, Merkle work).
6. Appends on the 10^6-entry log (``--large-events``).

Everything is bounded (counts, and ``--timeout`` for the whole run). The runtime and stores
are closed and the temporary directory removed, also on Ctrl-C and SIGTERM. Nothing asserts
on timings: it measures, prints a table and writes the same figures to
``bench/results/audit-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bench._common import (
    HERALD,
    fmt,
    machine_facts,
    percentile,
    publish_in_process,
    raise_keyboard_interrupt,
)
from bench._common import (
    write_results as common_write_results,
)
from bench.encryption import Meter, isolate_environment, signed, spread
from herald.audit import merkle
from herald.storage import schema
from herald.storage.base import AuditSink
from herald.storage.sql import SqlStore, nodes_query

TOPIC = "bench.audit"
BODY = ("Herald audit benchmark payload. " * 40)[:1024]  # 1 KiB of ASCII
CONFIGS = ("audit", "minimal")
BATCHES = (1, 100)
LOGS = ("small", "large")
BUSY_OTHERS_WARN = 0.25  # cores used by other processes above which the table warns
READ_PAGE = 10_000  # rows per fetchmany in the in-process verification passes

#: What :class:`MinimalAuditStore` stores for every entry instead of the real one.
MINIMAL_ENTRY = b"{}"
MINIMAL_LEAF = merkle.leaf_hash(MINIMAL_ENTRY)


# -- the benchmark-only minimal audit append ---------------------------------------------


class MinimalAuditStore(SqlStore):
    """BENCHMARK ONLY — a store whose audit append does the minimum the schema needs.

    ``publish`` is :class:`~herald.storage.sql.SqlStore`'s, unchanged (one transaction under
    the write lock: idempotency row, messages, deliveries). Only ``_append`` differs:

    * kept: the next gap-free index (``max(audit_entries.idx) + 1``, which becomes
      ``messages.seq``, the resume cursor) and one ``audit_entries`` row per message (one
      executemany INSERT), because that is where the next index comes from;
    * skipped: calling the audit sink, i.e. building the canonical JSON entry (RFC 8785) and
      its SHA-256 leaf hash; every row holds the constant entry ``b"{}"`` and its leaf hash,
      which ``messages.leaf_hash`` gets too;
    * skipped: ``_grow_tree``, i.e. the SELECT of the left siblings, the node hashes and the
      ``audit_nodes`` INSERT (about two rows per entry).

    ``messages.publish`` still builds the ``AuditEvent`` object (including the SHA-256 of the
    sealed content), so the difference to the real store is the audit append's own work.
    The log it leaves is not a valid Merkle log: it only ever writes to its own copy of the
    database.
    """

    async def _append(
        self, conn: AsyncConnection, audit: Sequence[AuditSink], now: datetime
    ) -> tuple[list[int], list[bytes]]:
        start = await self._next_audit_index(conn)
        indices = list(range(start, start + len(audit)))
        rows = [
            {"idx": i, "entry": MINIMAL_ENTRY, "leaf_hash": MINIMAL_LEAF, "created_at": now}
            for i in indices
        ]
        await conn.execute(insert(schema.audit_entries), rows)
        return indices, [MINIMAL_LEAF] * len(indices)


@contextlib.contextmanager
def store_for(b: Bench, config: str) -> Iterator[None]:
    """Run the block with ``rt.store`` of ``config``: the real one or the minimal one."""
    real = b.rt.store
    b.rt.store = {"audit": real, "minimal": b.minimal}[config]
    try:
        yield
    finally:
        b.rt.store = real


# -- state -------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    deadline: float
    status: str = "starting"
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, metric: str, config: str, sample: dict[str, Any]) -> None:
        self.samples.setdefault(metric, {}).setdefault(config, []).append(sample)


@dataclass
class Bench:
    """The open runtime, the stores and what the measurements share."""

    rt: Any
    tmp: Path
    minimal: SqlStore
    minimal_db: Path
    claims: Any
    request: Any  # PublishRequest with the 1 KiB body
    request_hash: bytes
    event: Any  # AuditEvent of a published message, as messages.publish builds it


@dataclass
class Verification:
    """What the (synchronous) verification passes need."""

    db: Path
    key: str
    origin: str
    witness: Path
    size: int
    root: bytes
    data_dir: Path
    tmp: Path


def check_deadline(run: Run) -> None:
    if time.monotonic() > run.deadline:
        raise TimeoutError(f"--timeout {run.args.timeout:g} s reached")


def remaining(run: Run) -> float:
    return max(1.0, run.deadline - time.monotonic())


# -- 1. appends --------------------------------------------------------------------------


async def append_events(store: SqlStore, event: Any, total: int, batch: int) -> None:
    done = 0
    while done < total:
        n = min(batch, total - done)
        await store.append_audit([event] * n)
        done += n


async def measure_appends(run: Run, stores: dict[str, SqlStore], event: Any, events: int) -> None:
    """``events`` appends per store, batch size and run; the orders alternate by run."""
    for round_no in range(run.args.runs):
        flip = round_no % 2 == 1
        for log in list(stores)[::-1] if flip else list(stores):
            store = stores[log]
            for batch in BATCHES[::-1] if flip else BATCHES:
                run.status = f"appending (batch {batch}, {log} log, run {round_no + 1})"
                check_deadline(run)
                await append_events(store, event, min(events, 2 * batch), batch)  # warm-up
                with Meter().measure() as m:
                    await append_events(store, event, events, batch)
                sample = m.sample(events)
                sample["us_per_op"] = m.wall / events * 1e6
                sample["log_size_after"] = await store.audit_size()
                run.add(f"append_b{batch}", log, sample)


def measure_raw(run: Run, event: Any) -> None:
    """Per entry: building it (canonical JSON + leaf hash), and the node hashes of a leaf."""
    ops = run.args.raw_ops
    leaf = merkle.leaf_hash(b"bench")

    def grow() -> None:
        lookup: dict[merkle.Node, bytes] = {}
        for index in range(ops):
            lookup.update(merkle.new_node_hashes(index, leaf, lookup))

    for round_no in range(run.args.runs):
        run.status = f"timing raw entry costs (run {round_no + 1})"
        check_deadline(run)
        per_event = timeit.Timer(lambda: event(123_456)).timeit(number=ops) / ops
        per_leaf = timeit.Timer(grow).timeit(number=1) / ops
        run.add("raw_event", "-", {"us_per_op": per_event * 1e6})
        run.add("raw_nodes", "-", {"us_per_op": per_leaf * 1e6})


# -- 2. publishes with and without the audit append --------------------------------------


async def publish_many(b: Bench, count: int, concurrency: int) -> None:
    """``count`` in-process publishes of ``b.request``, ``concurrency`` at a time."""
    await publish_in_process(
        b.rt, b.claims, b.request, b.request_hash, count=count, concurrency=concurrency
    )


def count_nodes(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_nodes").fetchone()[0])


async def measure_publishes(run: Run, b: Bench) -> None:
    """Per run both configurations publish in alternating ``--chunk`` slices."""
    args = run.args
    for round_no in range(args.runs):
        order = CONFIGS if round_no % 2 == 0 else CONFIGS[::-1]
        run.status = f"publishing (run {round_no + 1}/{args.runs})"
        nodes_before = count_nodes(b.minimal_db)
        for config in order:
            check_deadline(run)
            with store_for(b, config):
                await publish_many(b, args.warmup, args.concurrency)
        meters = {config: Meter() for config in CONFIGS}
        left = args.publishes
        while left > 0:
            n = min(args.chunk, left)
            for config in order:
                check_deadline(run)
                with store_for(b, config), meters[config].measure():
                    await publish_many(b, n, args.concurrency)
            left -= n
            order = order[::-1]
        if count_nodes(b.minimal_db) != nodes_before:
            # SqlStore changed under us and the override no longer replaces the append.
            raise RuntimeError("MinimalAuditStore wrote audit_nodes: its _append was bypassed")
        sizes = [min(args.chunk, args.publishes - i) for i in range(0, args.publishes, args.chunk)]
        for config in CONFIGS:
            run.add("publish", config, meters[config].sample(args.publishes) | {"slice_ops": sizes})


# -- 3. the large log and its proofs -----------------------------------------------------


def entry_template(event: Any) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` with ``prefix + str(i) + suffix == event(i)[0]``."""
    marker = b'"index":0,'
    entry, _ = event(0)
    if entry.count(marker) != 1:
        raise RuntimeError("cannot find the index in the canonical entry")
    before, after = entry.split(marker)
    return before + b'"index":', b"," + after


def build_log(run: Run, db: Path, n: int, event: Any) -> dict[str, Any]:
    """Insert ``n`` entries and their nodes directly, ``--build-batch`` per transaction.

    The entries are byte-identical to ``event(i)`` (checked on samples); node hashes come
    from ``merkle.new_node_hashes`` with only the tree's right edge kept in memory.
    """
    prefix, suffix = entry_template(event)
    for i in {0, 1, 12_345 % n, n - 1}:
        if prefix + str(i).encode() + suffix != event(i)[0]:
            raise RuntimeError(f"entry template differs from AuditEvent at index {i}")
    created = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    frontier: dict[merkle.Node, bytes] = {}
    leaf_hash, new_node_hashes = merkle.leaf_hash, merkle.new_node_hashes
    nodes_written = 0
    start = time.perf_counter()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous=OFF")  # throw-away build; the store's WAL mode stays
        for lo in range(0, n, run.args.build_batch):
            check_deadline(run)
            hi = min(n, lo + run.args.build_batch)
            run.status = f"building the {n:,}-entry log ({lo:,} done)"
            entries: list[tuple[int, bytes, bytes, str]] = []
            nodes: list[tuple[int, int, bytes]] = []
            for i in range(lo, hi):
                entry = prefix + str(i).encode() + suffix
                leaf = leaf_hash(entry)
                entries.append((i, entry, leaf, created))
                made = new_node_hashes(i, leaf, frontier)
                frontier.update(made)
                nodes.extend((level, idx, h) for (level, idx), h in made.items())
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO audit_entries (idx, entry, leaf_hash, created_at) VALUES (?, ?, ?, ?)",
                entries,
            )
            conn.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
            conn.execute("COMMIT")
            nodes_written += len(nodes)
            frontier = {node: frontier[node] for node in merkle.root_nodes(hi)}
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        "entries": n,
        "nodes_written": nodes_written,
        "build_s": round(time.perf_counter() - start, 3),
        "entry_bytes": len(event(n - 1)[0]),
        "root": merkle.root_from(n, frontier).hex(),
    }


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


async def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = await fn(*args)
    return value, time.perf_counter() - start


async def measure_proofs(run: Run, variants: dict[str, tuple[Any, SqlStore]], n: int) -> None:
    """Per run and variant: ``--proofs`` proofs of each kind end to end, then ``--parts`` in parts.

    Every variant gets the same random cases. The first ten proofs of every run are verified
    (not timed) against roots and leaves read through the ``store`` variant.
    """
    from herald.audit.merkle import (
        consistency_proof,
        consistency_requires,
        inclusion_proof,
        inclusion_requires,
        verify_consistency,
        verify_inclusion,
    )

    checker_log, checker = variants["store"]
    roots: dict[int, bytes] = {n: await checker_log.root(n)}
    for round_no in range(run.args.runs):
        rng = random.Random(run.args.seed + round_no)
        cases = {
            "inclusion": [(rng.randrange(n), n) for _ in range(run.args.proofs)],
            "consistency": [
                tuple(sorted((rng.randint(1, n), rng.randint(1, n))))
                for _ in range(run.args.proofs)
            ],
        }
        for kind in ("inclusion", "consistency"):
            requires, compute = (
                (inclusion_requires, inclusion_proof)
                if kind == "inclusion"
                else (consistency_requires, consistency_proof)
            )
            order = list(variants) if round_no % 2 == 0 else list(variants)[::-1]
            for config in order:
                log, store = variants[config]
                prove = log.inclusion if kind == "inclusion" else log.consistency
                run.status = f"{kind} proofs at {n:,}, {config} (run {round_no + 1})"
                check_deadline(run)
                times: list[float] = []
                lengths: list[int] = []
                kept: list[list[bytes]] = []
                with Meter().measure() as m:
                    for a, c in cases[kind]:
                        proof, seconds = await timed(prove, a, c)
                        times.append(seconds)
                        lengths.append(len(proof))
                        if len(kept) < 10:
                            kept.append(proof)
                nodes = sorted(len(requires(a, c)) for a, c in cases[kind])
                # The first --parts proofs again, in parts: size check, node fetch, Merkle work.
                size_t: list[float] = []
                fetch_t: list[float] = []
                merkle_t: list[float] = []
                for a, c in cases[kind][: run.args.parts]:
                    _, seconds = await timed(store.audit_size)
                    size_t.append(seconds)
                    t0 = time.perf_counter()
                    needed = set(requires(a, c))
                    t1 = time.perf_counter()
                    found, seconds = await timed(store.audit_nodes, needed)
                    fetch_t.append(seconds)
                    t2 = time.perf_counter()
                    compute(a, c, found)
                    merkle_t.append(t1 - t0 + time.perf_counter() - t2)
                for (a, c), proof in zip(cases[kind], kept, strict=False):
                    if kind == "inclusion":
                        leaf = (await checker.audit_entries(a, a + 1))[0].leaf_hash
                        verify_inclusion(leaf, a, c, proof, roots[n])
                    else:
                        for size in (a, c):
                            if size not in roots:
                                roots[size] = await checker_log.root(size)
                        verify_consistency(a, c, roots[a], roots[c], proof)
                times.sort()
                lengths.sort()
                run.add(
                    kind,
                    config,
                    {
                        "p50_ms": percentile(times, 50) * 1e3,
                        "p99_ms": percentile(times, 99) * 1e3,
                        "max_ms": times[-1] * 1e3,
                        "per_s": len(times) / m.wall,
                        "nodes_p50": percentile(nodes, 50),
                        "nodes_max": nodes[-1],
                        "elements_p50": percentile(lengths, 50),
                        "elements_max": lengths[-1],
                        "size_us_p50": percentile(sorted(size_t), 50) * 1e6,
                        "fetch_us_p50": percentile(sorted(fetch_t), 50) * 1e6,
                        "merkle_us_p50": percentile(sorted(merkle_t), 50) * 1e6,
                        "others_busy_cores": m.others(),
                    },
                )


def node_query_plan(db: Path, n: int) -> str:
    """SQLite's plan for the store's own ``nodes_query`` of the nodes an inclusion and a consistency
    proof at ``n`` read (several levels, several indices on some): the steps that touch
    ``audit_nodes``, once each. A ``SCAN audit_nodes`` here is a regression."""
    from sqlalchemy.dialects import sqlite

    needed = merkle.inclusion_requires(12_345 % n, n) | merkle.consistency_requires(n // 3, n)
    query = nodes_query(sorted(needed))
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
    steps = dict.fromkeys(str(row[-1]) for row in rows if "audit_nodes" in str(row[-1]))
    return f"{', '.join(steps) or 'n/a'} ({len(needed)} nodes)"


# -- set-up and the asynchronous part ----------------------------------------------------


def copy_database(src: Path, dst: Path) -> None:
    """A consistent copy of a (WAL-mode) SQLite database via the backup API."""
    with (
        contextlib.closing(sqlite3.connect(src)) as source,
        contextlib.closing(sqlite3.connect(dst)) as target,
    ):
        source.backup(target)
    dst.chmod(0o600)


async def open_bench(tmp: Path, data_dir: Path, init: dict[str, Any]) -> Bench:
    from herald.audit.entry import AuditEvent
    from herald.config import load_settings
    from herald.core.messages import PublishRequest, decode_json, validate_publish
    from herald.core.scopes import ScopeSet
    from herald.crypto.tokens import AccessClaims
    from herald.service.runtime import Runtime, utcnow

    db = data_dir / "herald.db"
    minimal_db = tmp / "minimal.db"
    copy_database(db, minimal_db)  # before the runtime opens: same tenants, apps and keys
    rt = await Runtime.open(load_settings(data_dir=data_dir))
    try:
        minimal = await MinimalAuditStore.open(
            f"sqlite+aiosqlite:///{minimal_db}", new_id=rt.ids.new_str, clock=utcnow, migrate=False
        )
    except BaseException:
        await rt.close()
        raise
    raw = json.dumps({"topic": TOPIC, "body": BODY}).encode()
    request = validate_publish(decode_json(raw, PublishRequest))
    claims = AccessClaims(
        init["tenant"], init["client_id"], ScopeSet.parse("publish:>"), rt.ids.new_str(), 2**31 - 1
    )
    # What messages.publish appends for one message (its content hash is of a sealed blob).
    event = AuditEvent(
        time=utcnow(),
        tenant=init["tenant"],
        actor=f"app:{init['client_id']}",
        action="message.published",
        object=f"message:{rt.ids.new_str()}",
        details={
            "topic": TOPIC,
            "content_sha256": hashlib.sha256(os.urandom(1100)).hexdigest(),
            "recipients": 0,
        },
    )
    return Bench(
        rt=rt,
        tmp=tmp,
        minimal=minimal,
        minimal_db=minimal_db,
        claims=claims,
        request=request,
        request_hash=hashlib.sha256(raw).digest(),
        event=event,
    )


async def run_async(run: Run, tmp: Path, data_dir: Path, init: dict[str, Any]) -> None:
    from herald.audit.log import AuditLog, DirectoryWitness
    from herald.service.runtime import utcnow

    args = run.args
    run.status = "opening the runtime"
    b = await open_bench(tmp, data_dir, init)
    stores: list[SqlStore] = []
    try:
        if b.rt.audit is None:
            raise RuntimeError("the runtime has no audit log (no audit-signing key)")
        run.figures["entry_bytes"] = len(b.event(123_456)[0])
        async with asyncio.timeout(remaining(run)):
            await measure_appends(run, {"small": b.rt.store}, b.event, args.events)
            measure_raw(run, b.event)
            await measure_publishes(run, b)

            big_db = tmp / "large.db"
            url = f"sqlite+aiosqlite:///{big_db}"
            run.status = "creating the large log's database"
            big = await SqlStore.open(url, new_id=b.rt.ids.new_str, clock=utcnow)
            stores.append(big)
            n = args.entries
            build = build_log(run, big_db, n, b.event)
            nodes = count_nodes(big_db)
            build |= {
                "stored_nodes": nodes,
                "expected_nodes": 2 * n - n.bit_count(),
                "db_bytes": db_bytes(big_db),
            }
            run.figures["large_log"] = build
            run.figures["node_query_plan"] = node_query_plan(big_db, n)
            if nodes != build["expected_nodes"] or await big.audit_size() != n:
                raise RuntimeError(f"the built log is wrong: {nodes:,} nodes for {n:,} entries")
            witness = tmp / "large-witness"
            logs = {
                "store": AuditLog(
                    store=big,
                    signer=b.rt.audit.signer,
                    origin=b.rt.audit.origin,
                    witness=DirectoryWitness(witness),
                )
            }
            if (await logs["store"].root(n)).hex() != build["root"]:
                raise RuntimeError("the stored nodes do not give the root computed while building")

            run.status = "signing a checkpoint of the large log"
            record, seconds = await timed(logs["store"].checkpoint, utcnow())
            if record is None or record.size != n:
                raise RuntimeError("no checkpoint of the whole log was signed")
            run.figures["checkpoint"] = {"size": record.size, "ms": round(seconds * 1e3, 3)}
            # Synchronous (the event loop has nothing else to do): the CLI subprocess and
            # the in-process passes read the database while our stores sit idle.
            measure_verification(
                run,
                Verification(
                    db=big_db,
                    key=logs["store"].verifier_key(),
                    origin=logs["store"].origin,
                    witness=witness,
                    size=record.size,
                    root=record.root,
                    data_dir=data_dir,
                    tmp=tmp,
                ),
            )
            await measure_proofs(run, {"store": (logs["store"], big)}, n)
            await measure_appends(run, {"large": big}, b.event, args.large_events)
    finally:
        for store in stores:
            await store.close()
        await b.minimal.close()
        await b.rt.close()


# -- 4. verification ---------------------------------------------------------------------


def cli_env(v: Verification) -> dict[str, str]:
    env = {k: val for k, val in os.environ.items() if not k.startswith("HERALD_")}
    env["HERALD_CONFIG"] = str(v.tmp / "no-config.toml")
    env["HERALD_DATA_DIR"] = str(v.data_dir)
    return env


def cli_available(run: Run, v: Verification) -> bool:
    """Whether ``herald audit verify`` exists with ``--database-url`` and ``--key``."""
    if run.args.no_cli:
        run.notes.append("--no-cli: `herald audit verify` was not run")
        return False
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*HERALD, "audit", "verify", "--help"],
            env=cli_env(v),
            cwd=v.tmp,
            capture_output=True,
            text=True,
            timeout=min(120.0, remaining(run)),
            check=False,
        )
    except subprocess.TimeoutExpired:
        run.notes.append("`herald audit verify --help` timed out: the CLI was not measured")
        return False
    run.figures["cli_help_s"] = round(time.perf_counter() - start, 3)
    wanted = ("--database-url", "--key", "--witness", "--json")
    if done.returncode != 0 or not all(option in done.stdout for option in wanted):
        run.notes.append(
            "`herald audit verify` (with --database-url, --key, --witness, --json) is not in "
            "this checkout: verification was measured in-process only (verify_log and a "
            "minimal leaf-hash + incremental-root loop)"
        )
        return False
    return True


def run_cli(run: Run, v: Verification) -> dict[str, Any]:
    command = [
        *HERALD,
        "audit",
        "verify",
        "--database-url",
        f"sqlite:///{v.db}",
        "--key",
        v.key,
        "--witness",
        str(v.witness),
        "--json",
    ]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command,
        env=cli_env(v),
        cwd=v.tmp,
        capture_output=True,
        text=True,
        timeout=remaining(run),
        check=False,
    )
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = None
    entries = report.get("entries") if isinstance(report, dict) else None
    ok = report.get("ok") if isinstance(report, dict) else None
    if done.returncode != 0 or ok is False:
        raise RuntimeError(
            f"herald audit verify exited {done.returncode}: "
            f"{(done.stdout + done.stderr).strip()[-800:]}"
        )
    entries = entries if isinstance(entries, int) else v.size
    return {
        "per_s": entries / wall,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "entries": entries,
        "report": report if isinstance(report, dict) else done.stdout[-800:],
    }


def stream_rows(run: Run, db: Path) -> Iterator[tuple[int, bytes, bytes]]:
    """``(idx, entry, leaf_hash)`` in index order, ``READ_PAGE`` rows per fetch."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        cursor = conn.execute("SELECT idx, entry, leaf_hash FROM audit_entries ORDER BY idx")
        while rows := cursor.fetchmany(READ_PAGE):
            check_deadline(run)
            yield from rows


def pass_read(run: Run, v: Verification) -> int:
    """Only read the rows (the floor every verification pays)."""
    rows = size = 0
    for _, entry, _ in stream_rows(run, v.db):
        rows += 1
        size += len(entry)
    run.figures["verified_entry_bytes"] = size
    return rows


def pass_own(run: Run, v: Verification) -> int:
    """Leaf hash recomputation + incremental RFC 9162 root, compared with the checkpoint."""
    leaf_hash, node_hash = merkle.leaf_hash, merkle.node_hash
    stack: list[bytes] = []
    size = 0
    for idx, entry, stored in stream_rows(run, v.db):
        digest = leaf_hash(entry)
        if digest != stored or idx != size:
            raise RuntimeError(f"entry {size} does not verify")
        m = size
        while m & 1:
            digest = node_hash(stack.pop(), digest)
            m >>= 1
        stack.append(digest)
        size += 1
        if size == v.size:
            break
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = node_hash(left, root)
    if size != v.size or root != v.root:
        raise RuntimeError("the recomputed root differs from the checkpoint's")
    return size


def pass_verify_log(run: Run, v: Verification) -> int:
    from herald.audit.log import DirectoryWitness
    from herald.audit.note import NoteVerifier
    from herald.audit.verify import verify_log

    with contextlib.closing(sqlite3.connect(f"file:{v.db}?mode=ro", uri=True)) as conn:
        notes = conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size").fetchall()
    report = verify_log(
        stream_rows(run, v.db),
        [(int(size), str(note)) for size, note in notes],
        NoteVerifier.from_key(v.key),
        origin=v.origin,
        witness=DirectoryWitness(v.witness).notes(),
    )
    if not report.ok or report.root != v.root:
        raise RuntimeError(f"verify_log failed: {report.failure}")
    return report.entries


def measure_verification(run: Run, v: Verification) -> None:
    passes: list[tuple[str, Any]] = [
        ("verify_log", pass_verify_log),
        ("verify_own", pass_own),
        ("verify_read", pass_read),
    ]
    if cli_available(run, v):
        passes.insert(0, ("verify_cli", None))
    for round_no in range(run.args.runs):
        shift = round_no % len(passes)
        for name, fn in passes[shift:] + passes[:shift]:
            run.status = f"verifying ({name}, run {round_no + 1})"
            check_deadline(run)
            if fn is None:
                run.add(name, "-", run_cli(run, v))
                continue
            with Meter().measure() as m:
                result = fn(run, v)
            sample = m.sample(result) | {"entries": result}
            sample["wall_s"] = round(m.wall, 3)
            sample["cpu_s"] = round(m.cpu, 3)
            run.add(name, "-", sample)


# -- figures and report ------------------------------------------------------------------


def stats_of(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarise(run: Run) -> None:
    """Median and min–max of every numeric figure per metric and configuration."""
    out: dict[str, Any] = {}
    for metric, by_config in run.samples.items():
        entry: dict[str, Any] = {}
        for config, samples in by_config.items():
            stats: dict[str, Any] = {"runs": len(samples)}
            keys = [
                k
                for k, value in samples[0].items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            ]
            for key in keys:
                values = [s[key] for s in samples if isinstance(s.get(key), int | float)]
                if values:
                    stats[key] = stats_of(values)
            entry[config] = stats
        out[metric] = entry
    publish = out.get("publish", {})
    minimal = publish.get("minimal", {})
    for variant in ("audit",):
        real = publish.get(variant, {})
        if "per_s" not in real or "per_s" not in minimal:
            continue
        a, m = real["per_s"]["median"], minimal["per_s"]["median"]
        versus: dict[str, Any] = {
            "ratio": round(a / m, 4),
            "overhead_us_per_op": round(1e6 / a - 1e6 / m, 2),
        }
        for key in ("cpu_us_per_op", "loop_cpu_us_per_op"):
            versus[key.removesuffix("_us_per_op") + "_overhead_us_per_op"] = round(
                real[key]["median"] - minimal[key]["median"], 2
            )
        paired = paired_slices(run.samples["publish"], variant)
        if paired:
            versus["paired"] = paired
        publish[f"{variant}_vs_minimal"] = versus
    run.figures["results"] = out


def paired_slices(
    by_config: dict[str, list[dict[str, Any]]], variant: str
) -> dict[str, Any] | None:
    """``variant`` vs minimal audit per pair of adjacent slices, median over all pairs."""
    ratios: list[float] = []
    deltas: list[float] = []
    for real, minimal in zip(
        by_config.get(variant, []), by_config.get("minimal", []), strict=False
    ):
        r_slices, m_slices = real.get("slice_wall_s", []), minimal.get("slice_wall_s", [])
        if len(r_slices) < 2 or len(r_slices) != len(m_slices):
            continue
        for r, m, ops in zip(r_slices, m_slices, real["slice_ops"], strict=True):
            if r > 0 and m > 0:
                ratios.append(m / r)  # rate ratio: (ops/r) / (ops/m)
                deltas.append((r - m) / ops * 1e6)
    if not ratios:
        return None
    ratios.sort()
    return {
        "pairs": len(ratios),
        "ratio": round(statistics.median(ratios), 4),
        "ratio_p25": round(ratios[len(ratios) // 4], 4),
        "ratio_p75": round(ratios[(3 * len(ratios)) // 4], 4),
        "overhead_us_per_op": round(statistics.median(deltas), 2),
    }


def render(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def median_of(stats: dict[str, Any] | None, key: str) -> Any:
    return None if not stats or key not in stats else stats[key]["median"]


def appends_block(run: Run) -> list[str]:
    res = run.figures.get("results", {})
    small_sizes = [
        s["log_size_after"]
        for batch in BATCHES
        for s in run.samples.get(f"append_b{batch}", {}).get("small", [])
    ]
    small = f"small log (≤ {max(small_sizes):,} entries)" if small_sizes else "small log"
    rows: list[tuple[str, ...]] = [
        (
            "audit appends: store.append_audit",
            small,
            f"log of {run.args.entries:,} entries",
        )
    ]
    for batch in BATCHES:
        entry = res.get(f"append_b{batch}", {})
        for key, label in (
            ("per_s", f"batch {batch}: events/s"),
            ("us_per_op", "  µs per event (wall)"),
            ("cpu_us_per_op", "  CPU µs per event (all threads)"),
            ("loop_cpu_us_per_op", "  of which event-loop thread"),
        ):
            rows.append((label, *(spread(entry.get(log), key) for log in LOGS)))
    return render(rows)


def publish_block(run: Run) -> list[str]:
    res = run.figures.get("results", {})
    entry = res.get("publish", {})
    rows: list[tuple[str, ...]] = [
        (
            f"publishes, {run.args.concurrency} concurrent, 1 KiB",
            "publishes/s",
            "CPU µs/publish",
            "of which loop",
            "vs minimal",
            "Δ µs wall",
            "Δ µs CPU (loop)",
        )
    ]
    labels = {
        "audit": "with audit append (SqlStore)",
        "minimal": "minimal append (bench-only)",
    }
    for config in CONFIGS:
        stats = entry.get(config)
        versus = entry.get(f"{config}_vs_minimal", {})
        rows.append(
            (
                labels[config],
                spread(stats, "per_s"),
                spread(stats, "cpu_us_per_op"),
                spread(stats, "loop_cpu_us_per_op"),
                fmt(versus.get("ratio")) if versus else "",
                signed(versus.get("overhead_us_per_op"), "") if versus else "",
                (
                    f"{signed(versus.get('cpu_overhead_us_per_op'), '')} "
                    f"({signed(versus.get('loop_cpu_overhead_us_per_op'), '')})"
                )
                if versus
                else "",
            )
        )
    for config in ("audit",):
        paired = entry.get(f"{config}_vs_minimal", {}).get("paired")
        if paired:
            rows.append(
                (
                    f"  paired slices, {config} vs minimal ({paired['pairs']})",
                    f"p25–p75 {fmt(paired['ratio_p25'])}–{fmt(paired['ratio_p75'])}",
                    "",
                    "",
                    fmt(paired["ratio"]),
                    signed(paired["overhead_us_per_op"], ""),
                    "",
                )
            )
    for metric, label, what in (
        ("raw_event", f"AuditEvent(index), {fmt(run.figures.get('entry_bytes'))} B", "JSON+hash"),
        ("raw_nodes", "new_node_hashes per leaf (amortised)", "in memory"),
    ):
        stats = res.get(metric, {}).get("-")
        rows.append((f"{label} [µs]", spread(stats, "us_per_op"), what, "", "", "", ""))
    return render(rows)


def proofs_block(run: Run) -> list[str]:
    res = run.figures.get("results", {})
    n = run.args.entries
    rows: list[tuple[str, ...]] = [
        (
            f"proofs at n = {n:,} ({run.args.proofs:,} per run)",
            "p50 ms",
            "p99 ms",
            "proofs/s",
            "nodes read p50/max",
            "elements p50/max",
            f"p50 µs of {run.args.parts}: size / fetch / merkle",
        )
    ]
    for kind, label in (
        ("inclusion", "AuditLog.inclusion(i, n)"),
        ("consistency", "AuditLog.consistency(m, k)"),
    ):
        s = res.get(kind, {}).get("store")
        if not s:
            rows.append((label, "n/a", "", "", "", "", ""))
            continue
        parts = " / ".join(
            fmt(median_of(s, key)) for key in ("size_us_p50", "fetch_us_p50", "merkle_us_p50")
        )
        rows.append(
            (
                label,
                spread(s, "p50_ms"),
                spread(s, "p99_ms"),
                spread(s, "per_s"),
                f"{fmt(median_of(s, 'nodes_p50'))} / {fmt(s['nodes_max']['max'])}",
                f"{fmt(median_of(s, 'elements_p50'))} / {fmt(s['elements_max']['max'])}",
                parts,
            )
        )
    return render(rows)


def verify_block(run: Run) -> list[str]:
    res = run.figures.get("results", {})
    size = run.figures.get("checkpoint", {}).get("size")
    rows: list[tuple[str, ...]] = [
        (
            f"verification of {fmt(size)} entries (checkpoint at the end)",
            "entries/s",
            "wall s",
            "CPU s",
        )
    ]
    labels = {
        "verify_cli": "herald audit verify --database-url --key --witness --json",
        "verify_log": "in-process herald.audit.verify.verify_log (the command's core)",
        "verify_own": "in-process own loop: leaf hash + incremental root only",
        "verify_read": "in-process: read the rows only (sqlite3, 10,000 per fetch)",
    }
    for name, label in labels.items():
        s = res.get(name, {}).get("-")
        if not s:
            if name == "verify_cli":
                rows.append((label, "not run (see note)", "", ""))
            continue
        rows.append((label, spread(s, "per_s"), spread(s, "wall_s"), spread(s, "cpu_s")))
    return render(rows)


def info_block(run: Run) -> list[str]:
    args, fig = run.args, run.figures
    facts = fig.get("machine", {})
    others = [
        s["others_busy_cores"]
        for by_config in run.samples.values()
        for samples in by_config.values()
        for s in samples
        if s.get("others_busy_cores") is not None
    ]
    large = fig.get("large_log", {})
    n = args.entries
    nodes_line = "n/a"
    if large:
        nodes = large["stored_nodes"]
        nodes_line = (
            f"{nodes:,} = 2n − popcount(n) (2n = {2 * n:,}; {nodes / n:.4f} per entry); "
            f"database {large['db_bytes'] / 2**20:,.1f} MiB ({large['db_bytes'] / n:,.0f} B "
            f"per entry of {large['entry_bytes']} B); built directly in {large['build_s']:,.1f} s"
        )
    checkpoint = fig.get("checkpoint")
    info: list[tuple[str, str]] = [
        ("status", run.status),
        (
            "setup",
            (
                "in-process, no HTTP: store.append_audit, messages.publish, AuditLog.inclusion/"
                "consistency/checkpoint called directly; herald audit verify as a subprocess"
            ),
        ),
        ("store", f"SQLite {sqlite3.sqlite_version} (aiosqlite, WAL, synchronous=FULL), temp dir"),
        (
            "workload",
            (
                f"appends: {args.events:,} events per batch size and run on the small log, "
                f"{args.large_events:,} on the large one; publishes: {args.publishes:,} per run "
                f"after {args.warmup:,} warm-up, slices of {args.chunk:,}; proofs: {args.proofs:,} "
                f"of each kind per run, {args.parts:,} of them in parts (seed "
                f"{args.seed}); raw: {args.raw_ops:,} ops"
            ),
        ),
        ("runs", f"{args.runs} of everything; median (min–max) over the runs"),
        (
            "minimal append",
            (
                "bench.audit.MinimalAuditStore, BENCHMARK ONLY, on its own copy of the database: "
                "keeps the index (max+1) and one audit_entries row with the constant entry b'{}'; "
                "skips the entry JSON, the leaf hash and every audit_nodes read, hash and write"
            ),
        ),
        ("Δ µs wall", "1e6/rate − 1e6/minimal rate (µs of wall time per publish)"),
        ("stored nodes (large log)", nodes_line),
        (
            "audit_nodes plan (SqlStore._nodes)",
            fig.get("node_query_plan", "n/a"),
        ),
        (
            "checkpoint of the large log",
            f"{checkpoint['ms']:,.1f} ms (root from stored nodes, sign, witness, store)"
            if checkpoint
            else "n/a",
        ),
        (
            "CLI start-up (audit verify --help)",
            f"{fig['cli_help_s']:,.2f} s" if "cli_help_s" in fig else "n/a",
        ),
        (
            "other processes (busy cores)",
            (
                f"median {fmt(statistics.median(others))}, max {fmt(max(others))}"
                + (
                    "  (other work shared the CPUs: figures are noisy)"
                    if max(others) > BUSY_OTHERS_WARN
                    else ""
                )
            )
            if others
            else "n/a",
        ),
        (
            "load average (1 min) before → after",
            f"{fmt(fig.get('load_before'))} → {fmt(fig.get('load_after'))}",
        ),
        ("cores / platform", f"{facts.get('cpu_count')} / {facts.get('platform')}"),
        ("python / herald", f"{facts.get('python')} / {facts.get('herald')}"),
    ]
    width = max(len(k) for k, _ in info)
    return [f"{k.ljust(width)}  {v}" for k, v in info]


def table(run: Run) -> str:
    blocks = [
        appends_block(run),
        publish_block(run),
        proofs_block(run),
        verify_block(run),
        info_block(run),
    ]
    rule = "-" * min(120, max(len(line) for block in blocks for line in block))
    lines = [f"audit log: appends, publish cost, proofs and verification at {run.args.entries:,}"]
    for block in blocks:
        lines += [rule, *block]
    return "\n".join(lines)


def write_results(run: Run) -> Path:
    return common_write_results(
        "audit",
        status=run.status,
        args=run.args,
        notes=run.notes,
        **run.figures,
        samples=run.samples,
    )


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit", description=__doc__.split("\n\n", 1)[0]
    )
    add = parser.add_argument
    add("--entries", type=int, default=1_000_000, help="size of the large log (1,000,000)")
    add("--events", type=int, default=5000, help="appends per batch size and run (5000)")
    add("--large-events", type=int, default=500, help="the same on the large log (500)")
    add("--publishes", type=int, default=2000, help="per configuration and run (2000)")
    add("--warmup", type=int, default=200, help="publishes per configuration and run (200)")
    add("--concurrency", type=int, default=32, help="publishing tasks (32)")
    add("--chunk", type=int, default=250, help="publishes per alternating slice (250)")
    add("--proofs", type=int, default=1000, help="proofs of each kind per run (1000)")
    add("--parts", type=int, default=100, help="of those, timed again in parts (100)")
    add("--raw-ops", type=int, default=20_000, help="ops per raw timing (20000)")
    add("--build-batch", type=int, default=100_000, help="entries per build transaction")
    add("--runs", type=int, default=3, help="runs of every measurement (3)")
    add("--seed", type=int, default=1, help="random seed of the proof positions (1)")
    add("--no-cli", action="store_true", help="do not run `herald audit verify`")
    add("--timeout", type=float, default=3600.0, help="for the whole run, seconds (3600)")
    add(
        "--quick",
        action="store_true",
        help="10^5-entry log, 1,000 events (200 on it), 500 publishes, 300 proofs, 2,000 ops",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.events, args.large_events = 100_000, 1000, 200
        args.publishes, args.warmup, args.proofs, args.raw_ops = 500, 50, 300, 2000
    for name in (
        "events",
        "large_events",
        "publishes",
        "concurrency",
        "chunk",
        "proofs",
        "parts",
        "raw_ops",
        "build_batch",
        "runs",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.entries < 2 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--entries must be at least 2, --warmup not negative, --timeout positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = Run(args=args, deadline=time.monotonic() + args.timeout)
    run.figures["machine"] = machine_facts() | {"sqlite": sqlite3.sqlite_version}
    run.figures["load_before"] = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-audit-"))
    data_dir = tmp / "data"
    failed = False
    try:
        dropped = isolate_environment(tmp)
        if dropped:
            run.notes.append(f"ignored environment variables: {', '.join(dropped)}")
        from herald.cli.admin import init_data_dir
        from herald.config import load_settings

        run.status = "initialising the data directory"
        init = init_data_dir(load_settings(data_dir=data_dir))
        asyncio.run(run_async(run, tmp, data_dir, init))
        run.status = "finished"
    except KeyboardInterrupt:
        run.status = f"interrupted while {run.status}"
        failed = True
    except Exception as exc:
        run.status = f"failed while {run.status}: {type(exc).__name__}: {exc}"
        run.notes.append(traceback.format_exc())
        failed = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run.figures["load_after"] = round(os.getloadavg()[0], 2)
    summarise(run)
    print(table(run))
    for note in run.notes:
        print("note:", note)
    print(f"results: {write_results(run)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
