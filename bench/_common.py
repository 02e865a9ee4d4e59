"""Helpers shared by the benchmarks: a throw-away ``herald serve``, CPU accounting, output.

Everything here stays on 127.0.0.1. ``start_server`` runs ``herald serve`` in its own session
(so Ctrl-C reaches the benchmark, which stops it) and waits for ``/healthz``; ``stop_server``
terminates it, then kills it after 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import platform
import queue
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HERALD = [sys.executable, "-m", "herald.cli"]
HOST = "127.0.0.1"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SATURATED = 0.9  # CPU seconds per wall second above which a process counts as saturated
LOG_TAIL_LINES = 25
#: Seconds to wait after the server answers before sending signed requests: it refuses
#: signatures whose (whole-second) ``created`` precedes its own start time, which it keeps
#: with sub-second precision, so requests signed in its first second would be refused.
SIGNED_START_WAIT = 1.1


def raise_nofile(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit when below ``needed``; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop factory for ``asyncio.Runner`` (``None``: not installed, asyncio's)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    if not ordered:
        return None
    rank = max(0, math.ceil(q / 100.0 * len(ordered)) - 1)
    return ordered[min(rank, len(ordered) - 1)]


@dataclass
class BenchRun:
    """What a run has measured so far: reported even when it is cut short.

    Each benchmark subclasses it with the processes and state of its own.
    """

    args: argparse.Namespace
    deadline: float  # time.time() by which the run stops, whatever happened
    status: str = "starting"
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.time())


def metric_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` of every sample of a ``/metrics`` page (Prometheus text)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def bucket_quantile(
    now: dict[float, float], before: dict[float, float], q: float
) -> tuple[float | None, int]:
    """The upper bound of the histogram bucket holding the ``q`` quantile (0-1).

    ``now`` and ``before`` are cumulative bucket counts (``le`` → count) of two scrapes
    (``before`` empty: everything since the start). Returns the bound (``None`` without
    samples; ``inf`` beyond the last finite bucket) and the number of samples in between.
    The true quantile is at most the bound and above the next lower bound; the
    nearest-rank sample is used (``ceil(q * n)``-th smallest).
    """
    bounds = sorted(now)
    deltas = [now[b] - before.get(b, 0.0) for b in bounds]
    total = round(deltas[-1]) if deltas else 0
    if total <= 0:
        return None, 0
    rank = max(1, math.ceil(q * total))
    return next(b for b, count in zip(bounds, deltas, strict=True) if count >= rank), total


def bucket_bound(label: str) -> float:
    """A histogram bucket's ``le`` label as a number (``+Inf`` is infinity)."""
    return math.inf if label == "+Inf" else float(label)


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid``, all threads (Linux /proc; else ``None``)."""
    return proc_cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc), e.g. ``herald serve --workers``' workers."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_cpu_seconds(pid: int, *, main_threads: bool = False) -> float | None:
    """CPU seconds of ``pid`` and its descendants (only their main threads if asked)."""
    read = main_thread_cpu_seconds if main_threads else proc_cpu_seconds
    values = [read(p) for p in process_tree(pid)]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat)."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    values = [int(v) for v in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def distribution(values: Iterable[float], qs: Iterable[float] = (50, 99, 99.9)) -> dict[str, Any]:
    """Percentiles ``p<q>`` (nearest rank), max, min (ms) and count of durations in seconds."""
    ordered = sorted(values)
    out: dict[str, Any] = {f"p{q:g}": ms(percentile(ordered, q)) for q in qs}
    out["max"] = ms(ordered[-1] if ordered else None)
    out["min"] = ms(ordered[0] if ordered else None)
    out["samples"] = len(ordered)
    return out


@dataclass
class CpuSnapshot:
    """CPU seconds used so far by the machine and by each process of the benchmark."""

    wall: float
    machine: float | None
    server: float | None
    parent: float
    clients: list[float | None]

    @classmethod
    def take(cls, server_pid: int, client_pids: list[int]) -> CpuSnapshot:
        return cls(
            wall=time.monotonic(),
            machine=machine_busy_seconds(),
            server=proc_cpu_seconds(server_pid),
            parent=time.process_time(),
            clients=[proc_cpu_seconds(pid) for pid in client_pids],
        )


def cpu_between(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, Any]:
    """CPU seconds per wall second of each part between two snapshots (``None``: unknown)."""
    wall = max(b.wall - a.wall, 1e-9)

    def rate(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else round((y - x) / wall, 3)

    clients = [rate(x, y) for x, y in zip(a.clients, b.clients, strict=True)]
    out: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "machine_busy": rate(a.machine, b.machine),
        "server": rate(a.server, b.server),
        "publisher": rate(a.parent, b.parent),
        "clients": clients,
    }
    ours = [out["server"], out["publisher"], *clients]
    if out["machine_busy"] is not None and None not in ours:
        out["other_processes"] = round(max(0.0, out["machine_busy"] - sum(ours)), 3)
    return out


def server_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_DATA_DIR=str(data_dir),
        HERALD_HOST=HOST,
        HERALD_PORT=str(port),
        HERALD_LOG_LEVEL="info",
    )
    return env


def herald_init(env: dict[str, str]) -> dict[str, Any]:
    return herald_json(env, "init")


def herald_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """``herald ARGS --json`` against ``env``'s data directory; the parsed output."""
    done = subprocess.run(
        [*HERALD, *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        command = " ".join(args[:2])
        raise RuntimeError(f"herald {command} failed ({done.returncode}): {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def start_server(
    env: dict[str, str], url: str, ca: str, deadline: float
) -> subprocess.Popen[bytes]:
    """Start ``herald serve`` (own session: Ctrl-C reaches us, we stop it) and await /healthz."""
    log_path = Path(env["HERALD_DATA_DIR"]) / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*HERALD, "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(
            process, url, ssl.create_default_context(cafile=ca), min(deadline, time.time() + 30)
        )
    except BaseException:
        stop_server(process)
        raise
    return process


def wait_healthy(
    process: subprocess.Popen[bytes], url: str, verify: ssl.SSLContext, give_up: float
) -> None:
    import httpx

    while time.time() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"herald serve exited with {process.returncode}")
        try:
            if (
                httpx.get(url + "/healthz", verify=verify, timeout=1.0, trust_env=False).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("herald serve did not answer /healthz in time")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_summary(path: Path) -> dict[str, Any]:
    """Counts of log records by level, the last lines, and the last warnings and errors."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"levels": {}, "tail": [], "problems": []}
    levels: Counter[str] = Counter()
    problems: list[str] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        level = str(record.get("level", "?")) if isinstance(record, dict) else "(not json)"
        levels[level] += 1
        if level not in {"debug", "info"}:
            problems.append(line)
    return {
        "levels": dict(levels),
        "tail": lines[-LOG_TAIL_LINES:],
        "problems": problems[-LOG_TAIL_LINES:],
    }


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text + unit


def machine_facts() -> dict[str, Any]:
    import herald

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "herald": herald.__version__,
        "nofile_soft_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so ``finally`` blocks stop the servers."""
    raise KeyboardInterrupt


def main_thread_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the main thread of ``pid`` (its event loop, for herald)."""
    return proc_cpu_seconds_of(Path(f"/proc/{pid}/task/{pid}/stat"))


def proc_cpu_seconds_of(path: Path) -> float | None:
    try:
        stat = path.read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def results_stamp(now: datetime | None = None) -> str:
    """The UTC stamp in result file names (``20250101T120000Z``)."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def write_results(name: str, *, stamp: str | None = None, **fields: Any) -> Path:
    """Write one run's figures to ``bench/results/<name>-<UTC stamp>.json``; return the path.

    ``args`` (an ``argparse.Namespace``) is stored as a dict; everything else as given.
    ``stamp`` (from :func:`results_stamp`) names the file when other files share it.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = RESULTS_DIR / f"{name}-{stamp or results_stamp(now)}.json"
    if "args" in fields:
        fields["args"] = vars(fields["args"])
    payload = {"benchmark": name, "finished_at": now.isoformat(), **fields}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


async def publish_in_process(
    rt: Any, claims: Any, request: Any, request_hash: bytes, *, count: int, concurrency: int
) -> None:
    """``count`` publishes of one message each through the service layer (no HTTP)."""
    from herald.service import messages

    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            outcome = await messages.publish(
                rt, claims, [request], single=True, idempotency_key=None, request_hash=request_hash
            )
            if outcome.status != 202:
                raise RuntimeError(f"publish answered {outcome.status}: {outcome.body}")

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))


# -- request signing, subscribers and client processes (publish_deliver, soak) ------------


def request_signer(init: dict[str, Any]) -> tuple[Any, str]:
    """An RFC 9421 signer for the demo app, when the SDK can sign and init reported a key.

    ``herald init --json`` reports the demo app's Ed25519 key as ``signing_keyid`` and
    ``signing_key_file``. Returns the signer (or ``None``) and a description for the report.
    """
    from herald.client import AsyncPublisher

    try:
        from herald.client import RequestSigner
    except ImportError:
        return None, "this SDK cannot sign requests"
    if "signer" not in inspect.signature(AsyncPublisher).parameters:
        return None, "this SDK's AsyncPublisher takes no signer"
    keyid, path = init.get("signing_keyid"), init.get("signing_key_file")
    if not isinstance(keyid, str) or not isinstance(path, str):
        return None, "`herald init --json` reported no request-signing key"
    return RequestSigner.from_key_file(keyid, path), f"on (Ed25519 key {keyid})"


def configure_signing(mode: str, init: dict[str, Any], env: dict[str, str]) -> tuple[Any, str]:
    """The publisher's request signer (``None`` after telling the server not to require one).

    ``mode`` is ``auto``, ``on`` or ``off`` (the ``--signatures`` option). Returns the signer
    and a description for the report.
    """
    signer, signing = (None, "off (--signatures off)")
    if mode != "off":
        signer, signing = request_signer(init)
    if signer is None:
        if mode == "on":
            raise RuntimeError(f"--signatures on, but {signing}")
        # Only for this throw-away server: the SDK cannot sign, so do not require it.
        env["HERALD_REQUIRE_SIGNATURES"] = "false"
        if mode == "auto":
            signing = f"OFF (HERALD_REQUIRE_SIGNATURES=false: {signing})"
    return signer, signing


async def mint_subscriber_tokens(
    pub: Any,
    wanted: list[tuple[str, list[str]]],
    *,
    ttl: int,
    timeout: float,
    concurrency: int = 16,
) -> list[str]:
    """One subscriber token per ``(recipient, topic patterns)``, in order.

    ``POST /v1/subscriber-tokens`` with the SDK's publisher ``pub``, at most ``concurrency``
    requests in flight, all within ``timeout`` seconds.
    """
    sem = asyncio.Semaphore(concurrency)

    async def one(recipient: str, patterns: list[str]) -> str:
        async with sem:
            issued = await pub.subscriber_token(recipient, patterns, ttl=ttl)
            return str(issued["token"])

    minted = asyncio.gather(*(one(recipient, patterns) for recipient, patterns in wanted))
    return list(await asyncio.wait_for(minted, max(timeout, 0.1)))


async def open_stream(
    ws_url: str, ctx: ssl.SSLContext, token: str, *, timeout: float = 20.0
) -> Any:
    """A raw ``websockets`` connection to ``/v1/stream`` that has received its ``ready`` frame.

    ``Authorization: Bearer`` carries the subscriber token. No client pings (the server sends
    heartbeats) and no compression, which keeps client work minimal.
    """
    from websockets.asyncio.client import connect

    ws = await connect(
        ws_url,
        ssl=ctx,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        proxy=None,
        ping_interval=None,
        open_timeout=timeout,
        close_timeout=2,
        max_size=1 << 20,
        user_agent_header="herald-bench",
    )
    try:
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    except BaseException:
        await ws.close()
        raise
    kind = first.get("type") if isinstance(first, dict) else None
    if kind != "ready":
        await ws.close()
        raise RuntimeError(f"first frame was {kind!r}, not 'ready'")
    return ws


async def collect_messages(
    procs: list[Any], q: Any, kind: str, *, count: int, until: float, stash: dict[str, list[Any]]
) -> tuple[list[Any], list[str]]:
    """Wait for ``count`` ``(kind, index, ...)`` items from child processes until ``until``.

    Items of other kinds are kept in ``stash`` for later calls. Returns the items of ``kind``
    and the tracebacks of ``("error", index, traceback)`` items (each reported once).
    """
    got = stash.setdefault(kind, [])
    while len(got) < count and time.time() < until:
        try:
            item = q.get_nowait()
        except queue.Empty:
            if all(not p.is_alive() for p in procs):
                # Dead children cannot send more; anything already queued is read here.
                await asyncio.sleep(0.2)
                with contextlib.suppress(queue.Empty):
                    while True:
                        item = q.get_nowait()
                        stash.setdefault(item[0], []).append(item)
                break
            await asyncio.sleep(0.05)
            continue
        stash.setdefault(item[0], []).append(item)
    errors = [
        f"client process {index} failed:\n{trace}" for _, index, trace in stash.get("error", [])
    ]
    stash["error"] = []
    return got, errors


def stop_processes(procs: list[Any], stop: Any, q: Any) -> None:
    """Stop child processes: set ``stop``, wait up to 10 s, then terminate, then kill."""
    if stop is not None:
        stop.set()
    give_up = time.monotonic() + 10
    while any(proc.is_alive() for proc in procs) and time.monotonic() < give_up:
        # A child cannot exit while its queue feeder still holds unread data: keep reading.
        with contextlib.suppress(queue.Empty, OSError, EOFError, ValueError, AttributeError):
            while True:
                q.get_nowait()
        time.sleep(0.05)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
