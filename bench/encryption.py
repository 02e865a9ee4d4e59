"""Cost of encryption at rest: publishes/s with the AEAD layer vs a null cipher, re-encryption.

Run it from the repository root::

    python -m bench.encryption            # 2,000 publishes x 3 runs per configuration
    python -m bench.encryption --quick    # smaller counts (smoke test)

Everything runs in this one process, without HTTP: ``herald.service.messages.publish`` and
``herald.service.keys.reencrypt`` are called directly on a :class:`~herald.service.runtime.
Runtime`, so that the cipher's share is not drowned by TLS, HTTP parsing and request
signatures (``bench.publish_security`` measures those).

1. Creates a temporary data directory, initialises it like ``herald init`` (master key, SQLite
   database, signing keys, demo tenant and app) and opens a ``Runtime`` on it. ``HERALD_*``
   variables of the environment are ignored, so the run always uses the local key provider
   and SQLite in the temporary directory.
2. Two configurations share that runtime, in the same run:

   - ``aead``: the real ``TenantKeyRing`` (AES-256-GCM with the tenant's data key, AAD bound
     to tenant, record and field);
   - ``null``: ``rt.keyring`` swapped for :class:`NullKeyRing`, a BENCHMARK-ONLY key ring that
     does not encrypt. It keeps the blob framing (version byte, key version, 12-byte nonce
     field, 16-byte tag field, all zero), so rows are exactly as large as sealed ones and
     ``reencrypt`` can read their key version; the plaintext is stored as is.

3. Publishes/s of ``messages.publish`` with a 1 KiB body: sequentially (one at a time) and
   with ``--concurrency`` tasks (``asyncio.gather``), ``--publishes`` per configuration and
   run after ``--warmup``. Within a run the two configurations take turns in slices of
   ``--chunk`` publishes (order alternating), so a burst of other work on the machine slows
   both alike. CPU time per publish is taken for the process (every thread, so the aiosqlite
   worker too) and for the event-loop thread alone.
4. Raw costs per op, timeit-style (``--raw-ops`` ops per run): ``Sealer.seal`` / ``open`` on
   the sealed plaintext of one such message, and the key ring's async ``seal`` / ``open``
   (AAD construction and the cached-key lookup included).
5. Re-encryption: ``--reencrypt-rows`` messages of a separate tenant per configuration, then,
   per run, ``rotate_data_key`` (untimed) and a timed ``reencrypt(rt, tenant, batch=...)``.
   The ``null`` tenant's run has no cipher work, so it is the floor set by the store.

Everything is bounded (counts, and ``--timeout`` for the whole run). The runtime is closed and
the temporary directory removed, also on Ctrl-C and SIGTERM. Nothing asserts on timings: it
measures, prints a table and writes the same figures to
``bench/results/encryption-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench._common import (
    fmt,
    machine_busy_seconds,
    machine_facts,
    publish_in_process,
    raise_keyboard_interrupt,
)
from bench._common import (
    write_results as common_write_results,
)
from herald.crypto.aead import FORMAT_V1, HEADER_LEN, NONCE_LEN, OVERHEAD, TAG_LEN

TOPIC = "bench.encryption"
BODY = ("Herald encryption benchmark payload. " * 32)[:1024]  # 1 KiB of ASCII
CONFIGS = ("aead", "null")
SHAPES = ("sequential", "concurrent")
RAW_KINDS = ("raw_seal", "raw_open", "keyring_seal", "keyring_open")
BUSY_OTHERS_WARN = 0.25  # cores used by other processes above which the table warns


# -- the benchmark-only null cipher ------------------------------------------------------


_NULL_NONCE = bytes(NONCE_LEN)  # zero bytes in the nonce field: never used as a nonce
_NULL_TAG = bytes(TAG_LEN)  # zero bytes in the tag field: authenticates nothing


class NullSealer:
    """BENCHMARK ONLY: the :class:`~herald.crypto.aead.Sealer` interface, without encryption.

    ``seal`` frames the plaintext like a version-1 blob (format byte, key version, zero
    "nonce", plaintext, zero "tag") so rows keep their size and the key version can be peeked;
    ``open`` strips the framing. Nothing is encrypted or authenticated.
    """

    __slots__ = ("_prefix", "current_version")

    def __init__(self, current_version: int) -> None:
        self.current_version = current_version
        self._prefix = FORMAT_V1.to_bytes(1, "big") + current_version.to_bytes(4, "big")

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        del aad  # nothing is authenticated
        return self._prefix + _NULL_NONCE + plaintext + _NULL_TAG

    def open(self, blob: bytes, aad: bytes) -> bytes:
        del aad
        if len(blob) < OVERHEAD or blob[0] != FORMAT_V1:
            raise ValueError("not a null-framed blob")
        return blob[HEADER_LEN:-TAG_LEN]


class NullKeyRing:
    """BENCHMARK ONLY — a key ring that does NOT encrypt. It exists only under ``bench/``.

    It answers ``seal`` / ``open`` / ``sealer`` / ``invalidate`` like
    :class:`~herald.crypto.keyring.TenantKeyRing`, as identity on the content (see
    :class:`NullSealer` for the framing). The tenant's newest key version is read from the
    store on first use and cached until :meth:`invalidate` (which ``rotate_data_key`` calls),
    so that ``reencrypt`` moves rows to the rotated version as it does with real keys. No data
    key is unwrapped and no AAD is built: the difference to ``TenantKeyRing`` is the whole
    encryption layer.
    """

    def __init__(self, newest_version: Callable[[str], Awaitable[int]]) -> None:
        self._newest_version = newest_version
        self._sealers: dict[str, NullSealer] = {}

    def invalidate(self, tenant_id: str) -> None:
        self._sealers.pop(tenant_id, None)

    async def sealer(self, tenant_id: str) -> NullSealer:
        sealer = self._sealers.get(tenant_id)
        if sealer is None:
            sealer = NullSealer(await self._newest_version(tenant_id))
            self._sealers[tenant_id] = sealer
        return sealer

    async def seal(
        self,
        tenant_id: str,
        record_id: str,
        field: str,
        plaintext: bytes,
        *,
        purpose: str = "content",
    ) -> bytes:
        del record_id, field, purpose
        return (await self.sealer(tenant_id)).seal(plaintext, b"")

    async def open(
        self, tenant_id: str, record_id: str, field: str, blob: bytes, *, purpose: str = "content"
    ) -> bytes:
        del record_id, field, purpose
        return (await self.sealer(tenant_id)).open(blob, b"")


@contextlib.contextmanager
def keyring_for(rt: Any, config: str, null: NullKeyRing) -> Iterator[None]:
    """Run the block with ``rt.keyring`` of ``config``: the real one, or the null one."""
    real = rt.keyring
    if config == "null":
        rt.keyring = null
    try:
        yield
    finally:
        rt.keyring = real


# -- measurements ------------------------------------------------------------------------


@dataclass
class Bench:
    """The open runtime and what every measurement needs."""

    rt: Any
    null: NullKeyRing
    claims: Any
    request: Any  # PublishRequest with the 1 KiB body
    request_hash: bytes
    plaintext: bytes  # what publish seals for that request


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
class Meter:
    """Wall, CPU and machine busy time, summed over every block measured with it.

    ``cpu`` is the process's CPU time (every thread, the aiosqlite worker included);
    ``loop_cpu`` is the main thread's alone, which runs the event loop.
    """

    wall: float = 0.0
    cpu: float = 0.0
    loop_cpu: float = 0.0
    machine: float | None = 0.0
    slices: list[float] = field(default_factory=list)  # wall seconds of each block

    @contextlib.contextmanager
    def measure(self) -> Iterator[Meter]:
        gc.collect()
        machine0 = machine_busy_seconds()
        cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        yield self
        wall = time.perf_counter() - wall0
        self.wall += wall
        self.slices.append(round(wall, 6))
        self.loop_cpu += time.thread_time() - loop0
        self.cpu += time.process_time() - cpu0
        machine1 = machine_busy_seconds()
        if self.machine is None or machine0 is None or machine1 is None:
            self.machine = None
        else:
            self.machine += machine1 - machine0

    def others(self) -> float | None:
        """Cores other processes kept busy during the blocks."""
        if self.machine is None or self.wall <= 0:
            return None
        return round(max(0.0, self.machine - self.cpu) / self.wall, 3)

    def sample(self, ops: int) -> dict[str, Any]:
        return {
            "per_s": ops / self.wall,
            "cpu_us_per_op": self.cpu / ops * 1e6,
            "loop_cpu_us_per_op": self.loop_cpu / ops * 1e6,
            "wall_s": round(self.wall, 4),
            "others_busy_cores": self.others(),
            "slice_wall_s": self.slices,
        }


async def publish_many(b: Bench, count: int, concurrency: int) -> None:
    """``count`` in-process publishes of ``b.request``, ``concurrency`` at a time."""
    await publish_in_process(
        b.rt, b.claims, b.request, b.request_hash, count=count, concurrency=concurrency
    )


async def measure_publishes(run: Run, b: Bench) -> None:
    """Per run and shape, both configurations publish in alternating ``--chunk`` slices.

    Slicing pairs the configurations in time: a burst of other work on the machine slows
    both instead of whichever happened to run then. The order within a pair alternates too.
    """
    args = run.args
    for round_no in range(args.runs):
        for shape in SHAPES:
            concurrency = 1 if shape == "sequential" else args.concurrency
            order = CONFIGS if round_no % 2 == 0 else CONFIGS[::-1]
            run.status = f"publishing ({shape}, run {round_no + 1}/{args.runs})"
            for config in order:
                check_deadline(run)
                with keyring_for(b.rt, config, b.null):
                    await publish_many(b, args.warmup, concurrency)
            meters = {config: Meter() for config in CONFIGS}
            left = args.publishes
            while left > 0:
                n = min(args.chunk, left)
                for config in order:
                    check_deadline(run)
                    with keyring_for(b.rt, config, b.null), meters[config].measure():
                        await publish_many(b, n, concurrency)
                left -= n
                order = order[::-1]
            sizes = [
                min(args.chunk, args.publishes - i) for i in range(0, args.publishes, args.chunk)
            ]
            for config in CONFIGS:
                sample = meters[config].sample(args.publishes) | {"slice_ops": sizes}
                run.add(f"publish_{shape}", config, sample)


def time_per_op(fn: Callable[[], object], ops: int) -> float:
    """Seconds per call of ``fn`` over ``ops`` calls (timeit: the GC is off meanwhile)."""
    return timeit.Timer(fn).timeit(number=ops) / ops


async def async_time_per_op(fn: Callable[[], Awaitable[object]], ops: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(ops):
            await fn()
        return (time.perf_counter() - start) / ops
    finally:
        gc.enable()


async def measure_raw(run: Run, b: Bench) -> None:
    """Seal/open one message's plaintext: the cipher alone, and through the key ring."""
    from herald.crypto.aead import aad_for

    args, tenant = run.args, b.claims.tenant_id
    record_id = b.rt.ids.new_str()
    aad = aad_for(tenant_id=tenant, record_id=record_id, field="content")
    for round_no in range(args.runs):
        order = CONFIGS if round_no % 2 == 0 else CONFIGS[::-1]
        for config in order:
            run.status = f"timing raw seal/open ({config}, run {round_no + 1}/{args.runs})"
            check_deadline(run)
            with keyring_for(b.rt, config, b.null):
                keyring = b.rt.keyring
                sealer = await keyring.sealer(tenant)
                blob = sealer.seal(b.plaintext, aad)
                if sealer.open(blob, aad) != b.plaintext:
                    raise RuntimeError(f"{config}: open(seal(x)) != x")
                ops = args.raw_ops
                results = {
                    "raw_seal": time_per_op(lambda s=sealer: s.seal(b.plaintext, aad), ops),
                    "raw_open": time_per_op(lambda s=sealer, x=blob: s.open(x, aad), ops),
                    "keyring_seal": await async_time_per_op(
                        lambda k=keyring: k.seal(tenant, record_id, "content", b.plaintext), ops
                    ),
                    "keyring_open": await async_time_per_op(
                        lambda k=keyring, x=blob: k.open(tenant, record_id, "content", x), ops
                    ),
                }
            for kind, seconds in results.items():
                run.add(kind, config, {"us_per_op": seconds * 1e6})


async def fill_tenant(run: Run, b: Bench, config: str, rows: int, name: str = "") -> str:
    """A fresh tenant + app holding ``rows`` messages sealed by ``config``; its id."""
    from herald.core.scopes import ScopeSet
    from herald.crypto.tokens import AccessClaims
    from herald.service import identity, messages

    rt = b.rt
    tenant = await identity.create_tenant(rt, name or f"bench-reencrypt-{config}")
    app = await identity.create_app(rt, tenant.id, "bench", ScopeSet.parse("publish:>"))
    claims = AccessClaims(
        tenant.id, app.app.id, ScopeSet.parse("publish:>"), rt.ids.new_str(), 2**31 - 1
    )
    batch = min(500, run.args.batch_fill)
    with keyring_for(rt, config, b.null):
        done = 0
        while done < rows:
            check_deadline(run)
            n = min(batch, rows - done)
            outcome = await messages.publish(
                rt,
                claims,
                [b.request] * n,
                single=False,
                idempotency_key=None,
                request_hash=b.request_hash,
            )
            if outcome.status != 202 or any("error" in r for r in outcome.body["results"]):
                raise RuntimeError(f"filling the {config} tenant failed: {outcome.body}")
            done += n
    return str(tenant.id)


async def measure_reencrypt(run: Run, b: Bench) -> None:
    from herald.service.keys import reencrypt, rotate_data_key

    args = run.args
    tenants: dict[str, str] = {}
    for config in CONFIGS:
        run.status = f"storing {args.reencrypt_rows:,} messages for re-encryption ({config})"
        start = time.perf_counter()
        tenants[config] = await fill_tenant(run, b, config, args.reencrypt_rows)
        run.figures.setdefault("reencrypt_fill_s", {})[config] = round(
            time.perf_counter() - start, 3
        )
    for round_no in range(args.runs):
        order = CONFIGS if round_no % 2 == 0 else CONFIGS[::-1]
        for config in order:
            run.status = f"re-encrypting ({config}, run {round_no + 1}/{args.runs})"
            check_deadline(run)
            tenant = tenants[config]
            with keyring_for(b.rt, config, b.null):
                version = await rotate_data_key(b.rt, tenant)
                with Meter().measure() as m:
                    result = await reencrypt(b.rt, tenant, batch=args.batch)
            if result.target != version or result.changed != args.reencrypt_rows:
                raise RuntimeError(
                    f"{config}: re-encryption to v{version} changed {result.changed} of "
                    f"{args.reencrypt_rows} rows (target v{result.target})"
                )
            sample = m.sample(result.changed) | {"target_version": version}
            run.add("reencrypt", config, sample | {"scanned": result.scanned})


def check_deadline(run: Run) -> None:
    if time.monotonic() > run.deadline:
        raise TimeoutError(f"--timeout {run.args.timeout:g} s reached")


# -- set-up ------------------------------------------------------------------------------


def isolate_environment(tmp: Path) -> list[str]:
    """Drop ``HERALD_*`` variables in this process and point HERALD_CONFIG at no file."""
    dropped = sorted(k for k in os.environ if k.startswith("HERALD_"))
    for key in dropped:
        del os.environ[key]
    os.environ["HERALD_CONFIG"] = str(tmp / "no-config.toml")
    return dropped


async def open_bench(data_dir: Path, init: dict[str, Any]) -> Bench:
    from herald.config import load_settings
    from herald.core.messages import PublishRequest, content_of, decode_json, validate_publish
    from herald.core.scopes import ScopeSet
    from herald.crypto.keyring import NoDataKey
    from herald.crypto.tokens import AccessClaims
    from herald.service.runtime import Runtime

    rt = await Runtime.open(load_settings(data_dir=data_dir))

    async def newest_version(tenant_id: str) -> int:
        keys = await rt.store.tenant_keys(tenant_id)  # newest first
        if not keys:
            raise NoDataKey(f"tenant {tenant_id!r} has no data key")
        return int(keys[0].version)

    raw = json.dumps({"topic": TOPIC, "body": BODY}).encode()
    request = validate_publish(decode_json(raw, PublishRequest))
    claims = AccessClaims(
        init["tenant"], init["client_id"], ScopeSet.parse("publish:>"), rt.ids.new_str(), 2**31 - 1
    )
    return Bench(
        rt=rt,
        null=NullKeyRing(newest_version),
        claims=claims,
        request=request,
        request_hash=hashlib.sha256(raw).digest(),
        plaintext=msgspec.json.encode(content_of(request)),
    )


async def run_bench(run: Run, data_dir: Path, init: dict[str, Any]) -> None:
    run.status = "opening the runtime"
    b = await open_bench(data_dir, init)
    try:
        run.figures["sealed_plaintext_bytes"] = len(b.plaintext)
        run.figures["blob_overhead_bytes"] = OVERHEAD
        async with asyncio.timeout(max(1.0, run.deadline - time.monotonic())):
            await measure_publishes(run, b)
            await measure_raw(run, b)
            await measure_reencrypt(run, b)
    finally:
        await b.rt.close()


# -- figures and report ------------------------------------------------------------------


def summarise(run: Run) -> None:
    """Median and min–max of every metric and configuration, ratios and deltas."""
    out: dict[str, Any] = {}
    for metric, by_config in run.samples.items():
        entry: dict[str, Any] = {}
        for config, samples in by_config.items():
            stats: dict[str, Any] = {"runs": len(samples)}
            for key in (
                "per_s",
                "us_per_op",
                "cpu_us_per_op",
                "loop_cpu_us_per_op",
                "others_busy_cores",
            ):
                values = [s[key] for s in samples if s.get(key) is not None]
                if values:
                    stats[key] = {
                        "median": round(statistics.median(values), 3),
                        "min": round(min(values), 3),
                        "max": round(max(values), 3),
                    }
            entry[config] = stats
        aead, null = entry.get("aead", {}), entry.get("null", {})
        if "per_s" in aead and "per_s" in null:
            a, n = aead["per_s"]["median"], null["per_s"]["median"]
            entry["ratio_aead_over_null"] = round(a / n, 4)
            entry["overhead_us_per_op"] = round(1e6 / a - 1e6 / n, 2)
        if "us_per_op" in aead and "us_per_op" in null:
            a, n = aead["us_per_op"]["median"], null["us_per_op"]["median"]
            entry["ratio_aead_over_null"] = round(a / n, 2) if n else None
            entry["overhead_us_per_op"] = round(a - n, 3)
        for key in ("cpu_us_per_op", "loop_cpu_us_per_op"):
            if key in aead and key in null:
                entry[key.removesuffix("_us_per_op") + "_overhead_us_per_op"] = round(
                    aead[key]["median"] - null[key]["median"], 2
                )
        paired = paired_slices(by_config)
        if paired:
            entry["paired"] = paired
        out[metric] = entry
    run.figures["results"] = out


def paired_slices(by_config: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """AEAD vs null per pair of adjacent publish slices (same size), median over all pairs.

    Adjacent slices ran within a second or so of each other, so slow drift of the machine
    cancels out of each pair's comparison.
    """
    ratios: list[float] = []
    deltas: list[float] = []
    for aead, null in zip(by_config.get("aead", []), by_config.get("null", []), strict=False):
        a_slices, n_slices = aead.get("slice_wall_s", []), null.get("slice_wall_s", [])
        if len(a_slices) < 2 or len(a_slices) != len(n_slices):
            continue
        sizes = aead["slice_ops"]
        for a, n, ops in zip(a_slices, n_slices, sizes, strict=True):
            if a > 0 and n > 0:
                ratios.append(n / a)  # rate ratio: (ops/a) / (ops/n)
                deltas.append((a - n) / ops * 1e6)
    if not ratios:
        return None
    ratios.sort()
    return {
        "pairs": len(ratios),
        "ratio_aead_over_null": round(statistics.median(ratios), 4),
        "ratio_p25": round(ratios[len(ratios) // 4], 4),
        "ratio_p75": round(ratios[(3 * len(ratios)) // 4], 4),
        "overhead_us_per_op": round(statistics.median(deltas), 2),
    }


def spread(stats: dict[str, Any] | None, key: str, unit: str = "") -> str:
    if not stats or key not in stats:
        return "n/a"
    s = stats[key]
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])}){unit}"


def signed(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:+,.2f}{unit}"


def table(run: Run) -> str:
    args, fig = run.args, run.figures
    res = fig.get("results", {})
    facts = fig.get("machine", {})
    conc = f"{args.concurrency} concurrent"
    rows: list[tuple[str, ...]] = [
        ("", "AEAD (AES-256-GCM)", "null (bench-only)", "AEAD/null", "Δ per op"),
    ]

    def rate_rows(metric: str, label: str) -> None:
        entry = res.get(metric, {})
        rows.append(
            (
                label,
                spread(entry.get("aead"), "per_s"),
                spread(entry.get("null"), "per_s"),
                fmt(entry.get("ratio_aead_over_null")),
                signed(entry.get("overhead_us_per_op"), " µs wall"),
            )
        )
        rows.append(
            (
                "  CPU µs per op (all threads)",
                spread(entry.get("aead"), "cpu_us_per_op"),
                spread(entry.get("null"), "cpu_us_per_op"),
                "",
                signed(entry.get("cpu_overhead_us_per_op"), " µs CPU"),
            )
        )
        rows.append(
            (
                "  of which event-loop thread",
                spread(entry.get("aead"), "loop_cpu_us_per_op"),
                spread(entry.get("null"), "loop_cpu_us_per_op"),
                "",
                signed(entry.get("loop_cpu_overhead_us_per_op"), " µs CPU"),
            )
        )

    def paired_row(metric: str) -> None:
        paired = res.get(metric, {}).get("paired")
        if not paired:
            return
        rows.append(
            (
                f"  paired slices ({paired['pairs']} pairs)",
                f"pair ratios p25–p75: {fmt(paired['ratio_p25'])}–{fmt(paired['ratio_p75'])}",
                "",
                fmt(paired["ratio_aead_over_null"]),
                signed(paired["overhead_us_per_op"], " µs wall"),
            )
        )

    rate_rows("publish_sequential", "publishes/s, sequential")
    paired_row("publish_sequential")
    rate_rows("publish_concurrent", f"publishes/s, {conc}")
    paired_row("publish_concurrent")
    plain = fig.get("sealed_plaintext_bytes")
    raw_labels = {
        "raw_seal": f"Sealer.seal, {fmt(plain)} B [µs]",
        "raw_open": f"Sealer.open, {fmt(plain)} B [µs]",
        "keyring_seal": "keyring.seal (AAD + key lookup) [µs]",
        "keyring_open": "keyring.open (AAD + key lookup) [µs]",
    }
    for kind in RAW_KINDS:
        entry = res.get(kind, {})
        rows.append(
            (
                raw_labels[kind],
                spread(entry.get("aead"), "us_per_op"),
                spread(entry.get("null"), "us_per_op"),
                fmt(entry.get("ratio_aead_over_null")),
                signed(entry.get("overhead_us_per_op"), " µs"),
            )
        )
    rate_rows("reencrypt", f"re-encryption rows/s (batch {args.batch})")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    others = [
        s["others_busy_cores"]
        for metric in ("publish_sequential", "publish_concurrent", "reencrypt")
        for samples in run.samples.get(metric, {}).values()
        for s in samples
        if s.get("others_busy_cores") is not None
    ]
    info: list[tuple[str, str]] = [
        ("status", run.status),
        (
            "setup",
            (
                "in-process: messages.publish / keys.reencrypt called directly, no HTTP, TLS "
                "or request signatures (so the network stack does not drown the cipher's share)"
            ),
        ),
        ("store", f"SQLite {sqlite3.sqlite_version} (aiosqlite) in a temporary data dir"),
        (
            "workload",
            (
                f"{args.publishes:,} publishes per run after {args.warmup:,} warm-up, in "
                f"alternating slices of {args.chunk:,}; 1 KiB body (sealed plaintext "
                f"{fmt(plain)} B, +{fmt(fig.get('blob_overhead_bytes'))} B framing in both "
                f"configurations); raw: {args.raw_ops:,} ops per run; re-encryption: "
                f"{args.reencrypt_rows:,} rows per run"
            ),
        ),
        ("runs", f"{args.runs} per configuration, interleaved; median (min–max)"),
        (
            "null configuration",
            (
                "rt.keyring swapped for bench.encryption.NullKeyRing: BENCHMARK ONLY, "
                "stores the plaintext with the same framing, no AAD, no key unwrap"
            ),
        ),
        (
            "AEAD/null, Δ per op",
            (
                "rates: AEAD rate / null rate of the medians, Δ = 1e6/AEAD − 1e6/null; "
                "paired slices: median over adjacent slice pairs; µs rows: time ratio"
            ),
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
        (
            "cores / platform",
            (
                f"{facts.get('cpu_count')} / {facts.get('platform')} "
                f"(AES-NI: {facts.get('cpu_aes_flag', 'n/a')})"
            ),
        ),
        (
            "python / herald / cryptography / OpenSSL",
            (
                f"{facts.get('python')} / {facts.get('herald')} / "
                f"{facts.get('cryptography')} / {facts.get('openssl')}"
            ),
        ),
    ]
    width = max(len(k) for k, _ in info)
    info_lines = [f"{k.ljust(width)}  {v}" for k, v in info]
    rule = "-" * min(110, max(len(line) for line in lines + info_lines))
    return "\n".join(
        ["encryption at rest: AEAD vs benchmark-only null cipher", rule, *lines, rule, *info_lines]
    )


def crypto_facts() -> dict[str, Any]:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    aes = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                aes = "yes" if "aes" in line.split(":", 1)[1].split() else "no"
                break
    return {
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "cpu_aes_flag": aes,
        "sqlite": sqlite3.sqlite_version,
    }


def write_results(run: Run) -> Path:
    return common_write_results(
        "encryption",
        status=run.status,
        args=run.args,
        notes=run.notes,
        **run.figures,
        samples=run.samples,
    )


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.encryption", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--publishes", type=int, default=2000, help="per run (default: 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="per run (default: 200)")
    parser.add_argument("--concurrency", type=int, default=32, help="tasks (default: 32)")
    parser.add_argument(
        "--chunk", type=int, default=250, help="publishes per alternating slice (default: 250)"
    )
    parser.add_argument("--raw-ops", type=int, default=20_000, help="per run (default: 20000)")
    parser.add_argument(
        "--reencrypt-rows", type=int, default=20_000, help="rows per tenant (default: 20000)"
    )
    parser.add_argument("--batch", type=int, default=500, help="re-encryption batch (500)")
    parser.add_argument("--runs", type=int, default=3, help="per configuration (default: 3)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="for the whole run (s)")
    parser.add_argument(
        "--quick", action="store_true", help="500 publishes, 50 warm-up, 2,000 ops and rows"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.publishes, args.warmup, args.raw_ops, args.reencrypt_rows = 500, 50, 2000, 2000
    args.batch_fill = 500  # messages per publish call while storing the re-encryption rows
    for name in ("publishes", "concurrency", "chunk", "raw_ops", "reencrypt_rows", "batch", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.timeout <= 0:
        parser.error("--warmup must not be negative and --timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = Run(args=args, deadline=time.monotonic() + args.timeout)
    run.figures["machine"] = machine_facts() | crypto_facts()
    run.figures["load_before"] = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-enc-"))
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
        asyncio.run(run_bench(run, data_dir, init))
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
