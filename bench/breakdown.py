"""Pipeline breakdown: where the server's CPU goes per signed publish (issue 10, scenario 5).

Run it from the repository root::

    python -m bench.breakdown            # 1 unprofiled + 3 profiled runs of 3,000 publishes
    python -m bench.breakdown --quick    # 1 profiled run of 1,000 publishes (smoke test)

The load is scenario 1's (``bench.publish_security``, configuration ``ed25519``): 1 KiB
publishes from 64 keep-alive TLS connections, bearer token + RFC 9421 Ed25519 signature +
nonce, encryption, durable commit and audit, against a throw-away ``herald serve``. The load
generator, the server set-up and the CPU accounting are publish_security's own functions.

While a measured run sends, ``py-spy record --format raw`` samples the server. Every sampled
stack is put in ONE stage by :data:`RULES` (see :func:`classify`), and the server's CPU time
per publish (``/proc``, per thread) is shared out over the stages in proportion to their
samples, separately for the event-loop thread, the SQLite worker threads and the other
threads. Nothing asserts on timings: it prints a table and writes the same figures to
``bench/results/breakdown-<UTC time>.json``. The server is always stopped and its directory
removed, also on Ctrl-C, SIGTERM and ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import publish_security as ps
from bench._common import (
    LOG_TAIL_LINES,
    SATURATED,
    fmt,
    log_summary,
    machine_facts,
    proc_cpu_seconds,
    raise_keyboard_interrupt,
    raise_nofile,
    stop_server,
)
from bench._common import write_results as common_write_results

# -- the classification rules --------------------------------------------------------------

#: The stages, in table order, with what they hold. ``other`` is what no rule matched.
STAGES: dict[str, str] = {
    "loop": "event loop + socket I/O (uvloop C code: self time of Runner.run)",
    "tls": "TLS records (ssl.py SSLObject read/write/handshake)",
    "http": "HTTP parse, ASGI, middleware (uvicorn, starlette, herald middleware)",
    "jwt": "bearer JWT check (jwt, herald/crypto/tokens.py, revocation, app liveness)",
    "signature": "RFC 9421 request signature (Ed25519 verify, digest, http_sf)",
    "nonce": "nonce claim (herald/state/nonces.py)",
    "encrypt": "content encryption (key ring, AES-GCM)",
    "commit": "durable commit (SQLAlchemy, aiosqlite, sqlite3: SQL no other stage ran)",
    "audit": "audit append (entries, leaf and tree hashes, their rows)",
    "idempotency": "idempotency key (record, lookup)",
    "ratelimit": "rate limit and lockout",
    "routing": "routing (recipients, preferences, topics, scopes, policy)",
    "handler": "publish handler (herald/server/api.py, service/messages.py, records, JSON)",
    "fanout": "fan-out (herald/streams, herald/bus, live hub)",
    "delivery": "channel delivery (dispatcher, channels)",
    "observability": "metrics and logging",
    "other": "matched by no rule (see 'top frames of other')",
}


@dataclass(frozen=True)
class Rule:
    """One classification rule: a frame whose file and function match belongs to ``stage``.

    ``file`` is a regular expression searched in the frame's file name as py-spy shortens it
    (``herald/crypto/aead.py``, ``sqlalchemy/engine/base.py``, ``ssl.py``); ``func`` (if set)
    must match the whole (qualified) function name. ``leaf_only`` rules only match the
    innermost frame (self time). ``absorbs``: stages this rule takes over when a frame
    *inside* it matched one of them first (an audit append's SQL is the audit's cost).
    """

    stage: str
    file: str
    func: str | None = None
    leaf_only: bool = False
    absorbs: tuple[str, ...] = ()

    def matches(self, frame: Frame) -> bool:
        if re.search(self.file, frame.file) is None:
            return False
        return self.func is None or re.fullmatch(self.func, frame.func) is not None


def _path(*names: str) -> str:
    """A regex matching any of ``names`` (files or directories) as whole path components."""
    return r"(?:^|/)(?:" + "|".join(re.escape(n) for n in names) + r")(?:$|/)"


#: Checked for every frame from the innermost outwards; the first frame any rule matches
#: decides the stage (within a frame, the first matching rule wins), except that an outer
#: frame whose rule ``absorbs`` that stage takes it over: SQL run by the audit append, the
#: token's liveness check or the signature's key lookup is that stage's cost, and
#: ``commit`` keeps the publish's own transaction and the SQLite threads. Frames no rule
#: matches (json, hashlib, asyncio.locks, uuid) pass on to their callers. Outer frames
#: every stack shares (uvicorn's ``Server.run``, ``herald.cli``) must match nothing.
RULES: tuple[Rule, ...] = (
    # The event loop: uvloop is Cython, so its C work (epoll, recv/send, callbacks, task
    # switches) shows as self time of the Python frame that entered it.
    Rule("loop", _path("asyncio/runners.py", "asyncio/base_events.py"), leaf_only=True),
    Rule("loop", _path("asyncio/events.py", "uvloop"), leaf_only=True),
    Rule("tls", _path("ssl.py", "asyncio/sslproto.py", "herald/server/tls_extension.py")),
    Rule("audit", _path("herald/audit", "herald/service/audit.py"), absorbs=("commit",)),
    Rule(
        "audit",
        _path("herald/storage/sql.py"),
        r"(?:\w+\.)?(?:_append|_grow_tree|_nodes|_next_audit_index|append_audit)",
        absorbs=("commit",),
    ),
    Rule(
        "idempotency",
        _path("herald/storage/sql.py", "herald/service/messages.py", "herald/server/api.py"),
        r"(?:\w+\.)?(?:\w*idempotency\w*|_answered|_replay)",
        absorbs=("commit",),
    ),
    Rule("commit", _path("sqlalchemy", "aiosqlite", "sqlite3", "herald/storage")),
    Rule(
        "jwt",
        _path(
            "jwt",
            "herald/crypto/tokens.py",
            "herald/service/revocation.py",
            "herald/state/live.py",
        ),
        absorbs=("commit",),
    ),
    Rule(
        "jwt",
        _path("herald/service/runtime.py"),
        r"(?:\w+\.)?verify_(?:access|subscriber)",
        absorbs=("commit",),
    ),
    Rule(
        "signature",
        _path("herald/service/signatures.py", "herald/core/signatures.py", "http_sf"),
        absorbs=("commit",),
    ),
    Rule("nonce", _path("herald/state/nonces.py"), absorbs=("commit",)),
    Rule("encrypt", _path("herald/crypto/keyring.py", "herald/crypto/aead.py")),
    Rule(
        "ratelimit",
        _path("herald/state/ratelimit.py", "herald/state/lockout.py", "herald/service/throttle.py"),
        absorbs=("commit",),
    ),
    Rule(
        "routing",
        _path(
            "herald/service/routing.py",
            "herald/core/topics.py",
            "herald/core/policy.py",
            "herald/core/preferences.py",
            "herald/core/scopes.py",
        ),
        absorbs=("commit",),
    ),
    Rule(
        "fanout",
        _path(
            "herald/streams",
            "herald/bus",
            "herald/service/streams.py",
            "herald/server/streams.py",
        ),
        absorbs=("commit",),
    ),
    Rule("delivery", _path("herald/channels", "herald/service/delivery.py"), absorbs=("commit",)),
    Rule(
        "observability",
        _path("herald/observability", "prometheus_client", "logging", "structlog"),
    ),
    Rule("http", _path("herald/server/middleware.py", "herald/server/app.py")),
    Rule("http", _path("uvicorn/protocols", "uvicorn/middleware", "starlette", "h11")),
    Rule("http", _path("httptools", "multipart", "anyio")),
    Rule(
        "handler",
        _path(
            "herald/server/api.py",
            "herald/server/requests.py",
            "herald/server/responses.py",
            "herald/service/messages.py",
            "herald/core/messages.py",
            "herald/core/ids.py",
            "pydantic",
            "pydantic_core",
        ),
    ),
)

#: Thread groups: the CPU of each (from /proc) is shared out over its own samples. The
#: main thread runs the event loop; the others are aiosqlite's (one per open connection,
#: started and stopped with the pool's connections) and the odd helper thread.
LOOP, WORKERS = "event-loop thread", "other threads"
_SQLITE_THREAD = re.compile(_path("aiosqlite"))

# -- py-spy raw stacks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    def __str__(self) -> str:
        return f"{self.func} ({self.file})"


@dataclass(frozen=True)
class Stack:
    """One line of ``py-spy record --format raw --threads``: a stack and its sample count."""

    tid: str | None
    thread: str | None  # the Python thread's name, when py-spy reports it
    frames: tuple[Frame, ...]  # outermost first
    count: int


_THREAD = re.compile(r"thread \((?P<tid>0x[0-9a-fA-F]+|\d+)\)(?::\s*(?P<name>.*))?")
_FRAME = re.compile(r"(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)")


def parse_frame(text: str) -> Frame:
    """``func (file:line)`` or ``func (file)`` → :class:`Frame` (anything else: file ``?``)."""
    found = _FRAME.fullmatch(text.strip())
    if found is None:
        return Frame(text.strip(), "?")
    return Frame(found["func"], found["file"])


def parse_raw_line(line: str) -> Stack | None:
    """One raw line (``frame;frame;… count``); ``None`` for blank or malformed lines."""
    text, _, count = line.rstrip("\n").rpartition(" ")
    if not text or not count.isdigit():
        return None
    parts = text.split(";")
    tid = name = None
    if parts and (head := _THREAD.fullmatch(parts[0])) is not None:
        tid, name = head["tid"], head["name"]
        parts = parts[1:]
        if name is None and parts and " (" not in parts[0]:
            name, parts = parts[0], parts[1:]  # older py-spy: the name as its own frame
    if parts and parts[0].startswith("process "):
        parts = parts[1:]
    return Stack(tid, name, tuple(parse_frame(p) for p in parts if p), int(count))


def classify(frames: Sequence[Frame], rules: Sequence[Rule] = RULES) -> str:
    """The stage of one stack (frames outermost first): the innermost matching rule wins.

    Walking outwards from the innermost frame, the first frame some rule matches decides
    the stage; a frame further out can still take it over when its rule ``absorbs`` it.
    No match at all: ``"other"``.
    """
    stage: str | None = None
    for depth, frame in enumerate(reversed(frames)):
        for rule in rules:
            if rule.leaf_only and depth != 0:
                continue
            if rule.matches(frame):
                if stage is None or stage in rule.absorbs:
                    stage = rule.stage
                break
    return stage or "other"


def thread_group(stack: Stack) -> str:
    """The thread group of a stack: the main thread (the event loop) or the others."""
    if stack.thread == "MainThread" or (
        stack.thread is None
        and any(f.func == "Runner.run" and f.file.endswith("runners.py") for f in stack.frames)
    ):
        return LOOP
    return WORKERS


def thread_kind(stack: Stack) -> str:
    """What a thread does, for the report: ``event loop``, ``sqlite`` or ``other``."""
    if thread_group(stack) == LOOP:
        return "event loop"
    return "sqlite" if any(_SQLITE_THREAD.search(f.file) for f in stack.frames) else "other"


# -- aggregation ---------------------------------------------------------------------------


@dataclass
class Profile:
    """Sample counts of one or more py-spy recordings, by thread, group, stage and frame."""

    samples: int = 0
    tids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # kind → tids
    by_kind: Counter[str] = field(default_factory=Counter)
    by_group_stage: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_group_self: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    other_leaf: Counter[str] = field(default_factory=Counter)
    other_tail: Counter[str] = field(default_factory=Counter)
    malformed: int = 0

    def add(self, stack: Stack) -> None:
        group, kind = thread_group(stack), thread_kind(stack)
        self.samples += stack.count
        self.tids[kind].add(stack.tid or "?")
        self.by_kind[kind] += stack.count
        stage = classify(stack.frames)
        self.by_group_stage[group][stage] += stack.count
        leaf = str(stack.frames[-1]) if stack.frames else "(no Python frame)"
        self.by_group_self[group][f"{leaf}\t{stage}"] += stack.count
        if stage == "other":
            self.other_leaf[leaf] += stack.count
            tail = " ← ".join(str(f) for f in reversed(stack.frames[-4:]))
            self.other_tail[tail] += stack.count

    def add_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            if not line.strip():
                continue
            stack = parse_raw_line(line)
            if stack is None:
                self.malformed += 1
            else:
                self.add(stack)

    def group_samples(self) -> Counter[str]:
        return Counter({g: sum(c.values()) for g, c in self.by_group_stage.items()})


# -- py-spy --------------------------------------------------------------------------------


def find_pyspy() -> str | None:
    """The py-spy next to this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("py-spy")


@dataclass
class Sampler:
    """``py-spy record --format raw`` attached to the server for one measured window."""

    binary: str
    pid: int
    rate: int
    output: Path
    limit_s: float
    process: subprocess.Popen[bytes] | None = None
    stderr: Path | None = None

    def start(self) -> None:
        # No --gil: the SQLite worker threads run sqlite3's C code without the GIL, and
        # OpenSSL and socket calls release it too; we want every thread's on-CPU samples
        # (py-spy skips idle threads: epoll_wait, futex, queue waits) to set against /proc
        # CPU per thread. No --idle for the same reason. --nolineno merges a function's lines.
        self.stderr = self.output.with_suffix(".log")
        command = [
            self.binary,
            "record",
            "--pid",
            str(self.pid),
            "--format",
            "raw",
            "--output",
            str(self.output),
            "--rate",
            str(self.rate),
            "--duration",
            str(max(1, int(self.limit_s))),
            "--threads",
            "--nolineno",
        ]
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )
        time.sleep(0.5)  # attach; the server is idle now, so nothing is sampled yet
        if self.process.poll() is not None:
            raise RuntimeError(f"py-spy exited at once: {self.log_tail()}")

    def stop(self) -> None:
        """SIGINT makes py-spy write its output; kill it if it does not within 15 s."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else proc_cpu_seconds(self.process.pid)

    def log_tail(self) -> str:
        if self.stderr is None:
            return ""
        with contextlib.suppress(OSError):
            return " | ".join(self.stderr.read_text(errors="replace").strip().splitlines()[-3:])
        return ""


def run_delay_seconds(pid: int) -> float | None:
    """Seconds the main thread of ``pid`` has waited for a CPU while runnable (schedstat)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except OSError:
        return None
    return int(fields[1]) / 1e9


# -- the runs ------------------------------------------------------------------------------


@dataclass
class Breakdown(ps.Bench):
    profile: Profile = field(default_factory=Profile)
    server_cpu_s: float = 0.0  # profiled runs, all threads (those that exited included)
    loop_cpu_s: float = 0.0  # profiled runs, the main thread
    loop_wait_s: float = 0.0  # profiled runs, the main thread runnable but not running
    accepted: int = 0  # profiled runs
    pyspy_cpu_s: float = 0.0
    sampled_wall_s: float = 0.0
    pyspy: str = ""


class SampledWindow:
    """py-spy (when profiling) and the loop thread's run delay over a run's measured window."""

    def __init__(self, bench: Breakdown, pid: int, output: Path, *, profiled: bool) -> None:
        self.bench, self.pid, self.output, self.profiled = bench, pid, output, profiled
        self.sampler: Sampler | None = None
        self.wait: list[float | None] = []
        self.spy: list[float | None] = []

    def __enter__(self) -> SampledWindow:
        if self.profiled:
            bench = self.bench
            self.sampler = Sampler(
                bench.pyspy, self.pid, bench.args.rate, self.output, bench.remaining() + 5
            )
            self.sampler.start()
        self._mark()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._mark()
        finally:
            if self.sampler is not None:
                self.sampler.stop()

    def _mark(self) -> None:
        self.wait.append(run_delay_seconds(self.pid))
        self.spy.append(self.sampler.cpu_seconds() if self.sampler else None)


def measured_run(bench: Breakdown, server: ps.Server, run_no: int, *, profiled: bool) -> None:
    """One run of publish_security's load, sampled by py-spy over its measured window."""
    assert server.process is not None
    output = Path(bench.args.tmp) / f"run{run_no}.raw"
    window = SampledWindow(bench, server.process.pid, output, profiled=profiled)
    run, (snap0, snap1) = ps.measured_run(bench, server, run_no, window=lambda: window)
    run["profiled"] = profiled
    sampler = window.sampler
    if sampler is not None and len(window.wait) == len(window.spy) == 2:
        args = bench.args
        (wait0, wait1), (spy0, spy1) = window.wait, window.spy
        before = bench.profile.samples
        with contextlib.suppress(OSError), output.open() as raw:
            bench.profile.add_lines(raw)
        run["samples"] = bench.profile.samples - before
        if args.raw_dir is not None and output.exists():
            args.raw_dir.mkdir(parents=True, exist_ok=True)
            run["raw"] = str(shutil.copy(output, args.raw_dir / output.name))
        run["pyspy_log"] = sampler.log_tail()
        if spy0 is not None and spy1 is not None:
            run["pyspy_cpu_per_wall"] = round((spy1 - spy0) / (snap1.wall - snap0.wall), 3)
            bench.pyspy_cpu_s += spy1 - spy0
        bench.sampled_wall_s += snap1.wall - snap0.wall
        if None not in (snap0.server, snap1.server, snap0.server_main, snap1.server_main):
            bench.server_cpu_s += snap1.server - snap0.server  # type: ignore[operator]
            bench.loop_cpu_s += snap1.server_main - snap0.server_main  # type: ignore[operator]
        if wait0 is not None and wait1 is not None:
            bench.loop_wait_s += wait1 - wait0
            run["loop_waiting_for_cpu_per_wall"] = round(
                (wait1 - wait0) / (snap1.wall - snap0.wall), 3
            )
        bench.accepted += run["accepted"]
    server.runs.append(run)


# -- figures -------------------------------------------------------------------------------


def figures(bench: Breakdown) -> dict[str, Any]:
    """Stage shares and µs per publish from the merged profile and the runs' /proc CPU.

    Each thread group's CPU (the main thread's, and the rest of the process's, exited
    threads included) is shared out over that group's samples, so a sample of a busy
    group weighs what it stood for, whatever py-spy's idle detection let through.
    """
    prof, accepted = bench.profile, bench.accepted
    if not accepted or not prof.samples:
        return {}
    per_publish = 1e6 / accepted
    total_us = bench.server_cpu_s * per_publish
    groups = prof.group_samples()
    group_cpu = {LOOP: bench.loop_cpu_s, WORKERS: max(0.0, bench.server_cpu_s - bench.loop_cpu_s)}
    # µs of CPU per publish that one sample of each group stands for.
    weight = {g: group_cpu[g] * per_publish / n for g, n in groups.items() if n}
    unsampled_us = sum(group_cpu[g] for g in group_cpu if not groups[g]) * per_publish
    stages: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        by_group = {g: prof.by_group_stage[g][stage] * weight[g] for g in weight}
        us = sum(by_group.values())
        stages[stage] = {
            "samples": sum(prof.by_group_stage[g][stage] for g in groups),
            "cpu_share": round(us / total_us, 4) if total_us else None,
            "us_per_publish": round(us, 1),
            "by_group_us": {g: round(v, 1) for g, v in by_group.items()},
        }
    selfs: Counter[str] = Counter()
    self_us: defaultdict[str, float] = defaultdict(float)
    for g, w in weight.items():
        for leaf, n in prof.by_group_self[g].items():
            selfs[leaf] += n
            self_us[leaf] += n * w
    top_self = [
        {
            "function": key.partition("\t")[0],
            "stage": key.partition("\t")[2],  # of the whole stacks (not of the frame alone)
            "samples": selfs[key],
            "cpu_share": round(us / total_us, 4) if total_us else None,
            "us_per_publish": round(us, 1),
        }
        for key, us in sorted(self_us.items(), key=lambda kv: -kv[1])[: bench.args.top]
    ]
    wall = max(bench.sampled_wall_s, 1e-9)
    rate = bench.args.rate * wall
    # py-spy samples a runnable thread that waits for a core as if it ran; after an epoll
    # wake-up that lands on Runner.run. At most this much of "loop" is such waiting.
    wait_samples = min(bench.loop_wait_s * bench.args.rate, prof.by_group_stage[LOOP]["loop"])
    return {
        "accepted_publishes": accepted,
        "samples": prof.samples,
        "malformed_lines": prof.malformed,
        "sampled_wall_s": round(wall, 3),
        "server_cpu_us_per_publish": round(total_us, 1),
        "groups": {
            g: {
                "samples": groups[g],
                "cpu_us_per_publish": round(group_cpu[g] * per_publish, 1),
                "cpu_per_wall": round(group_cpu[g] / wall, 3),
                # Samples per wall second over the rate: CPU/wall (+ time spent runnable
                # but waiting for a core) when py-spy's idle detection were exact.
                "sampled_per_wall": round(groups[g] / rate, 3),
            }
            for g in (LOOP, WORKERS)
        },
        "loop_waiting_for_cpu_per_wall": round(bench.loop_wait_s / wall, 3),
        "loop_stage_wait_bound_us": round(wait_samples * weight.get(LOOP, 0.0), 1),
        "unsampled_us_per_publish": round(unsampled_us, 1),
        "threads_seen": {kind: len(tids) for kind, tids in prof.tids.items()},
        "samples_by_thread_kind": dict(prof.by_kind),
        "stages": stages,
        "top_self": top_self,
        "other_top_leaf": prof.other_leaf.most_common(10),
        "other_top_tails": prof.other_tail.most_common(5),
        "pyspy_cpu_per_wall": round(bench.pyspy_cpu_s / wall, 3),
    }


def render(rows: list[list[str]]) -> list[str]:
    return ps.render(rows)


def pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}"


def report_lines(bench: Breakdown) -> list[str]:
    args, fig = bench.args, bench.figures.get("breakdown", {})
    server = bench.servers[0] if bench.servers else None
    runs = server.runs if server else []
    lines = [
        (
            "pipeline breakdown — POST /v1/messages, bearer + Ed25519 RFC 9421 + nonce + "
            "encryption + commit + audit (publish_security 'ed25519')"
        ),
        (
            f"{ps.BODY_BYTES} B bodies, {args.concurrency} keep-alive TLS connections, "
            f"{args.messages:,} publishes per run; py-spy {args.rate} Hz, raw, no --gil"
        ),
        f"status: {bench.status}" + ("  (TIMED OUT)" if bench.timed_out else ""),
        "",
    ]
    rows = [
        [
            "run",
            "profiled",
            "publishes/s",
            "p50 ms",
            "p99 ms",
            "srv CPU µs/publish",
            "srv CPU/wall (loop)",
            "client CPU/wall",
            "py-spy CPU/wall",
            "other procs",
            "load 1m",
        ]
    ]
    for r in runs:
        client = max((c for c in r["client_cpu_per_wall"] if c is not None), default=None)
        rows.append(
            [
                str(r["round"]),
                "yes" if r["profiled"] else "no",
                fmt(r["publishes_per_s"]),
                fmt(r["latency_ms"]["p50"]),
                fmt(r["latency_ms"]["p99"]),
                fmt(r["server_cpu_us_per_publish"]),
                f"{fmt(r['server_cpu_per_wall'])} ({fmt(r['server_main_thread_cpu_per_wall'])})",
                fmt(client) + (" SAT" if (client or 0.0) > SATURATED else ""),
                fmt(r.get("pyspy_cpu_per_wall")),
                fmt(r["other_processes"]),
                fmt(r["load_average_1m_before"]),
            ]
        )
    lines += render(rows)
    if not fig:
        return [*lines, "", "no profile (no profiled run finished, or py-spy wrote nothing)"]
    total = fig["server_cpu_us_per_publish"]
    lines += [
        "",
        (
            f"profiled runs: {fig['accepted_publishes']:,} publishes, {fig['samples']:,} samples, "
            f"server CPU {fmt(total)} µs per publish (all threads, /proc)"
        ),
        "",
    ]
    groups = list(fig["groups"])
    srows = [["stage", "% srv CPU", "µs/publish", *(f"{g} µs" for g in groups), "samples"]]
    for stage, st in fig["stages"].items():
        if not st["samples"] and stage != "other":
            continue
        srows.append(
            [
                f"{stage}: {STAGES[stage]}",
                pct(st["cpu_share"]),
                fmt(st["us_per_publish"]),
                *(fmt(st["by_group_us"].get(g, 0.0)) for g in groups),
                fmt(st["samples"]),
            ]
        )
    srows.append(
        [
            "total",
            pct(sum(st["cpu_share"] or 0.0 for st in fig["stages"].values())),
            fmt(round(sum(st["us_per_publish"] for st in fig["stages"].values()), 1)),
            *(fmt(fig["groups"][g]["cpu_us_per_publish"]) for g in groups),
            fmt(fig["samples"]),
        ]
    )
    lines += render(srows)
    lines.append("")
    grows = [["thread group", "samples", "CPU µs/publish", "CPU/wall", "samples/(rate × wall)"]]
    for g, d in fig["groups"].items():
        grows.append(
            [
                g,
                fmt(d["samples"]),
                fmt(d["cpu_us_per_publish"]),
                fmt(d["cpu_per_wall"]),
                fmt(d["sampled_per_wall"]),
            ]
        )
    lines += render(grows)
    lines.append(
        f"'loop' may include up to {fmt(fig['loop_stage_wait_bound_us'])} µs/publish of the "
        f"event-loop thread waiting for a core after a wake-up: it was runnable but not "
        f"running {fmt(fig['loop_waiting_for_cpu_per_wall'])} of the wall time (schedstat), "
        "and py-spy samples such a thread as busy"
    )
    kinds = ", ".join(
        f"{kind} {fig['threads_seen'].get(kind, 0)} thread(s) / {n:,} samples"
        for kind, n in sorted(fig["samples_by_thread_kind"].items())
    )
    lines += [
        f"threads sampled: {kinds}",
        f"py-spy itself used {fmt(fig['pyspy_cpu_per_wall'])} CPU/wall (part of 'other procs')",
    ]
    if fig["unsampled_us_per_publish"]:
        lines.append(f"CPU of groups without samples: {fmt(fig['unsampled_us_per_publish'])} µs")
    lines.append("")
    trows = [
        [f"top {len(fig['top_self'])} self time", "% srv CPU", "µs/publish", "samples", "stage"]
    ]
    for t in fig["top_self"]:
        trows.append(
            [
                t["function"][:90],
                pct(t["cpu_share"]),
                fmt(t["us_per_publish"]),
                fmt(t["samples"]),
                t["stage"],
            ]
        )
    lines += render(trows)
    if fig["other_top_leaf"]:
        lines += ["", "top frames of 'other' (innermost frame: samples) — extend RULES for these:"]
        lines += [f"  {n:6d}  {leaf[:110]}" for leaf, n in fig["other_top_leaf"]]
    return lines


def write_results(bench: Breakdown) -> Path:
    server = bench.servers[0] if bench.servers else None
    args = argparse.Namespace(**{k: v for k, v in vars(bench.args).items() if k != "tmp"})
    return common_write_results(
        "breakdown",
        status=bench.status,
        timed_out=bench.timed_out,
        args=args,
        notes=bench.notes,
        **bench.figures,
        stage_descriptions=STAGES,
        rules=[vars(r) for r in RULES],
        runs=server.runs if server else [],
        server_log=server.log if server else {},
    )


def report(bench: Breakdown, *, failed: bool) -> None:
    bench.figures["breakdown"] = figures(bench)
    print("\n".join(report_lines(bench)))
    facts = bench.figures.get("machine", {})
    print(
        f"cores {facts.get('cpu_count')} / python {facts.get('python')} / herald "
        f"{facts.get('herald')} / {facts.get('platform')}"
    )
    for note in bench.notes:
        print("note:", note)
    if bench.servers:
        server = bench.servers[0]
        problems = server.log.get("problems", [])
        if problems:
            print(f"server log warnings and errors (last {LOG_TAIL_LINES}):")
            for line in problems:
                print("  " + line[:400])
        if not (failed or bench.timed_out):
            server.log.pop("tail", None)
    print(f"results: {write_results(bench)}")


# -- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.breakdown", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--messages", type=int, default=3000, help="per run (default: 3000)")
    parser.add_argument("--runs", type=int, default=3, help="profiled runs (default: 3)")
    parser.add_argument(
        "--unprofiled-runs",
        type=int,
        default=1,
        help="runs without py-spy first, to show its overhead (default: 1)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="per run (default: 200)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="keep-alive connections (default: 64)"
    )
    parser.add_argument(
        "--client-procs", type=int, default=1, help="load-generating processes (default: 1)"
    )
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples/s (default: 100)")
    parser.add_argument("--top", type=int, default=15, help="self-time functions to list")
    parser.add_argument(
        "--raw-dir",
        type=Path,
        default=None,
        help="keep py-spy's raw output of each run here (flamegraph.pl / speedscope input)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="hard limit for the whole benchmark (s)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 publishes, 1 profiled run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.runs, args.unprofiled_runs = 1000, 1, 0
    for name in ("messages", "runs", "concurrency", "client_procs", "rate", "top"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.unprofiled_runs < 0 or args.timeout <= 0:
        parser.error("--warmup and --unprofiled-runs must not be negative, --timeout positive")
    args.client_procs = min(args.client_procs, args.concurrency)
    args.client, args.batch = "raw", 0  # scenario 1: the lean client, single publishes
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pyspy = find_pyspy()
    if pyspy is None:
        print(f"py-spy not found (next to {sys.executable} or on PATH): cannot profile")
        return 2
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bench = Breakdown(args=args, deadline=time.time() + args.timeout, pyspy=pyspy)
    bench.figures["machine"] = machine_facts()
    bench.figures["py_spy"] = {
        "binary": pyspy,
        "version": subprocess.run(
            [pyspy, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip(),
        "rate_hz": args.rate,
        "gil_only": False,
        "idle": False,
    }
    raise_nofile(args.concurrency * 2 + 256)
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-breakdown-"))
    args.tmp = str(tmp)
    failed = False
    server = ps.Server(config=next(c for c in ps.CONFIGS if c.key == "ed25519"), tmp=tmp / "srv")
    try:
        bench.servers.append(server)
        bench.status = "starting the server"
        ps.prepare_server(server, bench)
        time.sleep(1.1)  # signatures created before the server started are refused
        plan = [False] * args.unprofiled_runs + [True] * args.runs
        for run_no, profiled in enumerate(plan, 1):
            if bench.remaining() <= 0:
                bench.timed_out = True
                break
            bench.status = f"run {run_no}/{len(plan)}" + (" (profiled)" if profiled else "")
            measured_run(bench, server, run_no, profiled=profiled)
            if bench.timed_out:
                break
        bench.status = "finished" if not bench.timed_out else f"timed out in {bench.status}"
    except KeyboardInterrupt:
        bench.status = f"interrupted during {bench.status}"
        failed = True
    except Exception as exc:
        bench.status = f"failed during {bench.status}: {type(exc).__name__}: {exc}"
        bench.notes.append(traceback.format_exc())
        failed = True
    finally:
        ps.stop_children(bench)
        if server.process is not None:
            stop_server(server.process)
        server.log = log_summary(server.tmp / "data" / "serve.log")
        shutil.rmtree(tmp, ignore_errors=True)
    report(bench, failed=failed)
    return 0 if bench.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
