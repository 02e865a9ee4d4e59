"""Publish → deliver benchmark: N WebSocket subscribers on one topic pattern, M messages.

Run it from the repository root::

    python -m bench.publish_deliver            # 1,000 subscribers, 200 messages at 20 msg/s
    python -m bench.publish_deliver --quick    # 100 subscribers, 50 messages (smoke test)

What it does, always on 127.0.0.1 only:

1. creates a temporary data directory, runs ``herald init --json`` in it and starts
   ``herald serve`` (TLS, dev CA, a free port; log in ``<data dir>/serve.log``);
2. mints one subscriber token per subscriber (``POST /v1/subscriber-tokens``);
3. spawns ``--client-procs`` processes, each holding its share of raw ``websockets``
   connections to ``wss://…/v1/stream?topics=bench.>`` (``Authorization: Bearer`` header);
4. publishes ``--messages`` messages (~200-byte body) with the SDK's ``AsyncPublisher`` at a
   fixed ``--rate``; each carries ``data = {"t": time.time(), "seq": i}`` set right before the
   request is sent, so every subscriber measures publish→receive latency on the same clock;
5. waits until every subscriber has every accepted message (or ``--drain`` seconds after the
   last publish, or the hard ``--timeout``), then prints a table and writes the same figures to
   ``bench/results/publish_deliver-<UTC time>.json``.

The server is always stopped and the temporary directory removed, also on Ctrl-C. Nothing
here asserts on timings: it measures and prints.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench._common import (
    LOG_TAIL_LINES,
    SATURATED,
    SIGNED_START_WAIT,
    BenchRun,
    CpuSnapshot,
    bucket_bound,
    bucket_quantile,
    collect_messages,
    cpu_between,
    distribution,
    fmt,
    free_port,
    herald_init,
    log_summary,
    machine_facts,
    metric_samples,
    mint_subscriber_tokens,
    ms,
    open_stream,
    percentile,
    raise_keyboard_interrupt,
    raise_nofile,
    server_env,
    start_server,
    stop_processes,
    stop_server,
    uvloop_factory,
)
from bench._common import (
    configure_signing as common_configure_signing,
)
from bench._common import (
    write_results as common_write_results,
)

TOPIC = "bench.load"
PATTERN = "bench.>"
WARMUP_TOPIC = "benchwarmup.load"  # matched by no subscriber: only warms HTTP connections
BODY = ("Herald benchmark payload. " * 8)[:200]  # 200 ASCII bytes
SAMPLE_PERIOD = 0.1  # seconds between CPU samples in the client processes


# -- small helpers -----------------------------------------------------------------------


def busy_window(samples: list[tuple[float, float, int]]) -> dict[str, Any]:
    """CPU use of a client process while messages were arriving.

    ``samples`` are ``(monotonic, process_time, messages received so far)`` taken every
    SAMPLE_PERIOD. The window runs from the sample before the first message to the first
    sample that saw the final count; ``peak`` is the highest CPU/wall over any ~1 s stretch.
    """
    if len(samples) < 2 or samples[-1][2] == 0:
        return {"window_s": 0.0, "cpu_per_wall": None, "peak_1s": None}
    final = samples[-1][2]
    start = max(0, next(i for i, s in enumerate(samples) if s[2] > 0) - 1)
    end = next(i for i, s in enumerate(samples) if s[2] >= final)
    end = max(end, min(start + 1, len(samples) - 1))
    wall = samples[end][0] - samples[start][0]
    cpu = samples[end][1] - samples[start][1]
    peak = 0.0
    for i in range(start, end):
        for j in range(i + 1, len(samples)):
            if samples[j][0] - samples[i][0] >= 1.0 or j == len(samples) - 1:
                span = samples[j][0] - samples[i][0]
                if span > 0:
                    peak = max(peak, (samples[j][1] - samples[i][1]) / span)
                break
    return {
        "window_s": round(wall, 3),
        "cpu_per_wall": round(cpu / wall, 3) if wall > 0 else None,
        "peak_1s": round(peak, 3),
    }


# -- client processes --------------------------------------------------------------------


class FrameData(msgspec.Struct):
    t: float = 0.0
    seq: int = -1


class Frame(msgspec.Struct):
    """The parts of a server frame the subscribers look at (other fields are skipped)."""

    type: str = ""
    data: FrameData | None = None


@dataclass
class ChildConfig:
    index: int
    ws_url: str
    ca: str
    tokens: list[str]
    messages: int
    connect_concurrency: int
    deadline: float  # time.time() after which the process reports and stops, whatever happened


@dataclass
class Conn:
    ws: ClientConnection
    seen: bytearray
    unique: int = 0
    closed: bool = False
    close_code: int | None = None


@dataclass
class ChildState:
    received: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    other_frames: Counter[str] = field(default_factory=Counter)
    frame_bytes: int = 0
    first_recv: float | None = None
    last_recv: float | None = None
    stopping: bool = False
    unexpected_closes: Counter[str] = field(default_factory=Counter)
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    first_at: array.array[float] = field(default_factory=lambda: array.array("d"))
    last_at: array.array[float] = field(default_factory=lambda: array.array("d"))


def child_main(cfg: ChildConfig, out: Any, stop: Any, target: Any) -> None:
    """Entry point of one client process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    raise_nofile(len(cfg.tokens) + 64)
    try:
        loop_factory = uvloop_factory()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(child_run(cfg, out, stop, target, loop_factory is not None))
    except BaseException:
        out.put(("error", cfg.index, traceback.format_exc()))


async def child_connect(cfg: ChildConfig, ctx: ssl.SSLContext) -> tuple[list[Conn], Counter[str]]:
    sem = asyncio.Semaphore(cfg.connect_concurrency)
    errors: Counter[str] = Counter()

    async def open_one(token: str) -> Conn:
        async with sem:
            ws = await open_stream(cfg.ws_url, ctx, token)
            return Conn(ws=ws, seen=bytearray(cfg.messages))

    tasks = [asyncio.create_task(open_one(token)) for token in cfg.tokens]
    _done, pending = await asyncio.wait(tasks, timeout=max(0.1, cfg.deadline - time.time()))
    for task in pending:
        task.cancel()
    conns: list[Conn] = []
    for task in tasks:
        if task in pending:
            errors["timeout (hard deadline)"] += 1
            continue
        exc = task.exception()
        if exc is None:
            conns.append(task.result())
        else:
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
    await asyncio.gather(*pending, return_exceptions=True)
    return conns, errors


async def child_read(
    conn: Conn, st: ChildState, decoder: msgspec.json.Decoder[Frame], messages: int
) -> None:
    latencies, first_at, last_at = st.latencies, st.first_at, st.last_at
    try:
        async for raw in conn.ws:
            now = time.time()
            frame = decoder.decode(raw)
            if frame.type == "message" and frame.data is not None:
                seq = frame.data.seq
                st.frame_bytes += len(raw)
                if 0 <= seq < messages and not conn.seen[seq]:
                    conn.seen[seq] = 1
                    conn.unique += 1
                    st.received += 1
                    latencies.append(now - frame.data.t)
                    first_at[seq] = min(first_at[seq], now)
                    last_at[seq] = max(last_at[seq], now)
                    if st.first_recv is None:
                        st.first_recv = now
                    st.last_recv = now
                else:
                    st.duplicates += 1
            elif frame.type == "heartbeat":
                st.heartbeats += 1
            else:
                st.other_frames[frame.type] += 1
    except ConnectionClosed:
        pass
    except Exception as exc:
        st.unexpected_closes[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
    conn.closed = True
    conn.close_code = conn.ws.close_code
    if not st.stopping:
        st.unexpected_closes[f"close code {conn.close_code}"] += 1


async def child_run(cfg: ChildConfig, out: Any, stop: Any, target: Any, uvloop_used: bool) -> None:
    ctx = ssl.create_default_context(cafile=cfg.ca)
    decoder = msgspec.json.Decoder(Frame)
    st = ChildState()
    st.first_at.extend([math.inf] * cfg.messages)
    st.last_at.extend([0.0] * cfg.messages)
    wall0, cpu0 = time.monotonic(), time.process_time()
    conns, connect_errors = await child_connect(cfg, ctx)
    wall1, cpu1 = time.monotonic(), time.process_time()
    out.put(
        (
            "ready",
            cfg.index,
            {
                "connected": len(conns),
                "connect_errors": dict(connect_errors),
                "connect_s": round(wall1 - wall0, 3),
                "connect_cpu_per_wall": round((cpu1 - cpu0) / max(wall1 - wall0, 1e-9), 3),
            },
        )
    )
    readers = [asyncio.create_task(child_read(c, st, decoder, cfg.messages)) for c in conns]
    samples: list[tuple[float, float, int]] = [(time.monotonic(), time.process_time(), 0)]
    outcome = "complete"
    while True:
        await asyncio.sleep(SAMPLE_PERIOD)
        samples.append((time.monotonic(), time.process_time(), st.received))
        if time.time() >= cfg.deadline:
            outcome = "timeout"
            break
        if stop.is_set():
            outcome = "stopped"
            break
        want = target.value
        if want >= 0 and all(c.closed or c.unique >= want for c in conns):
            break
    st.stopping = True
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "index": cfg.index,
        "outcome": outcome,
        "connected": len(conns),
        "received": st.received,
        "duplicates": st.duplicates,
        "heartbeats": st.heartbeats,
        "other_frames": dict(st.other_frames),
        "message_frame_bytes": st.frame_bytes,
        "first_recv": st.first_recv,
        "last_recv": st.last_recv,
        "unexpected_closes": dict(st.unexpected_closes),
        "per_conn_unique_min": min((c.unique for c in conns), default=0),
        "cpu": busy_window(samples),
        "cpu_total_s": round(usage.ru_utime + usage.ru_stime, 3),
        "involuntary_ctx_switches": usage.ru_nivcsw,
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "uvloop": uvloop_used,
    }
    result["cpu_total_s"] = round(time.process_time(), 3)
    arrays = (st.latencies.tobytes(), st.first_at.tobytes(), st.last_at.tobytes())
    out.put(("result", cfg.index, result, arrays))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True), 5
        )
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


# -- server ------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, Any]:
    """The stream figures of the server's /metrics (Prometheus text)."""
    buckets: dict[float, float] = {}
    out: dict[str, Any] = {"stream_disconnects": {}}
    for name, labels, value in metric_samples(text):
        if name == "herald_publish_to_deliver_seconds_bucket":
            buckets[bucket_bound(labels["le"])] = value
        elif name == "herald_publish_to_deliver_seconds_count":
            out["deliver_count"] = int(value)
        elif name == "herald_publish_to_deliver_seconds_sum":
            out["deliver_sum_s"] = value
        elif name == "herald_stream_disconnects_total":
            out["stream_disconnects"][labels["reason"]] = int(value)
        elif name == "herald_active_streams":
            out["active_streams"] = out.get("active_streams", 0) + int(value)
    for q in (50, 99, 99.9):
        bound, _ = bucket_quantile(buckets, {}, q / 100)
        out[f"deliver_p{q:g}_le_ms"] = None if bound is None else bound * 1000
    total = out.get("deliver_count", 0)
    if total:
        out["deliver_mean_ms"] = round(out["deliver_sum_s"] / total * 1000, 3)
    return out


# -- the run -----------------------------------------------------------------------------


@dataclass
class Run(BenchRun):
    """This benchmark's run: its client processes and the server's pid."""

    status: str = "running"
    procs: list[Any] = field(default_factory=list)
    stop: Any = None
    queue: Any = None
    server_pid: int | None = None


async def collect(
    run: Run, q: Any, kind: str, *, count: int, until: float, stash: dict[str, list[Any]]
) -> list[Any]:
    """Wait for ``count`` ``kind`` messages from the children until wall time ``until``."""
    got, errors = await collect_messages(run.procs, q, kind, count=count, until=until, stash=stash)
    run.notes.extend(errors)
    return got


async def mint_tokens(pub: Any, run: Run, count: int) -> list[str]:
    wanted = [(f"bench-{i:06d}", [PATTERN]) for i in range(count)]
    return await mint_subscriber_tokens(pub, wanted, ttl=3600, timeout=run.remaining())


async def publish_all(pub: Any, run: Run) -> dict[str, Any]:
    from herald.client import HeraldClientError

    args = run.args
    sem = asyncio.Semaphore(args.concurrency)
    accepted: list[int] = []
    latencies: list[float] = []
    lags: list[float] = []
    errors: Counter[str] = Counter()
    sent_at: dict[int, float] = {}
    acked_at: dict[int, float] = {}

    async def one(seq: int) -> None:
        try:
            started = time.perf_counter()
            now = time.time()
            sent_at[seq] = now
            await pub.publish(TOPIC, title=f"bench {seq}", body=BODY, data={"t": now, "seq": seq})
            latencies.append(time.perf_counter() - started)
            acked_at[seq] = time.time()
            accepted.append(seq)
        except HeraldClientError as exc:
            errors[str(exc)[:120]] += 1
        finally:
            sem.release()

    tasks: list[asyncio.Task[None]] = []
    interval = 1.0 / args.rate
    t0 = time.monotonic() + 0.01
    for seq in range(args.messages):
        scheduled = t0 + seq * interval
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.time() >= run.deadline:
            run.timed_out = True
            run.notes.append(f"hard timeout while publishing: {seq} of {args.messages} sent")
            break
        await sem.acquire()
        lags.append(time.monotonic() - scheduled)
        tasks.append(asyncio.create_task(one(seq)))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=max(run.remaining(), 0.1))
        for task in pending:
            task.cancel()
        if pending:
            run.timed_out = True
            errors["cancelled at the hard timeout"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
    latencies.sort()
    return {
        "attempted": len(tasks),
        "accepted": len(accepted),
        "errors": dict(errors),
        "first_send": min(sent_at.values(), default=None),
        "last_send": max(sent_at.values(), default=None),
        "sent_at": sent_at,
        "acked_at": acked_at,
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p99_ms": ms(percentile(latencies, 99)),
        "latency_max_ms": ms(latencies[-1] if latencies else None),
        "schedule_lag_max_ms": ms(max(lags, default=None)),
    }


def start_children(run: Run, init: dict[str, Any], tokens: list[str]) -> tuple[Any, Any]:
    args = run.args
    ctx = mp.get_context("spawn")
    out = run.queue = ctx.Queue()
    run.stop = ctx.Event()
    target = ctx.Value("i", -1)
    ws_url = init["url"].replace("https://", "wss://", 1) + f"/v1/stream?topics={PATTERN}"
    shares = [tokens[i :: args.client_procs] for i in range(args.client_procs)]
    for index, share in enumerate(shares):
        cfg = ChildConfig(
            index=index,
            ws_url=ws_url,
            ca=init["ca_cert"],
            tokens=share,
            messages=args.messages,
            connect_concurrency=args.connect_concurrency,
            deadline=run.deadline,
        )
        proc = ctx.Process(
            target=child_main, args=(cfg, out, run.stop, target), name=f"bench-client-{index}"
        )
        proc.start()
        run.procs.append(proc)
    return out, target


async def run_bench(run: Run, init: dict[str, Any], server_pid: int, signer: Any) -> None:
    import httpx

    from herald.client import AsyncPublisher

    args, fig = run.args, run.figures
    stash: dict[str, list[Any]] = {}
    extra = {"signer": signer} if signer is not None else {}
    async with AsyncPublisher(
        init["url"],
        init["client_id"],
        init["client_secret"],
        ca=init["ca_cert"],
        max_retries=0,
        **extra,
    ) as pub:
        run.status = "minting subscriber tokens"
        started = time.monotonic()
        tokens = await mint_tokens(pub, run, args.subscribers)
        fig["token_mint_s"] = round(time.monotonic() - started, 3)

        run.status = "connecting"
        out, target = start_children(run, init, tokens)
        pids = [proc.pid for proc in run.procs]
        snap0 = CpuSnapshot.take(server_pid, pids)
        ready = await collect(
            run, out, "ready", count=args.client_procs, until=run.deadline, stash=stash
        )
        snap1 = CpuSnapshot.take(server_pid, pids)
        fig["connected"] = sum(r[2]["connected"] for r in ready)
        fig["connect_s"] = round(snap1.wall - snap0.wall, 3)
        fig["cpu_connect"] = cpu_between(snap0, snap1)
        fig["connect_errors"] = dict(
            sum((Counter(r[2]["connect_errors"]) for r in ready), Counter())
        )
        fig["client_connect"] = [r[2] for r in sorted(ready, key=lambda r: r[1])]
        if len(ready) < args.client_procs:
            run.timed_out = run.timed_out or time.time() >= run.deadline
            run.notes.append(f"only {len(ready)} of {args.client_procs} client processes got ready")

        # Open the publisher's HTTP connections outside the measured window.
        await asyncio.gather(
            *(pub.publish(WARMUP_TOPIC, body=BODY) for _ in range(args.concurrency)),
            return_exceptions=True,
        )
        await asyncio.sleep(0.5)

        run.status = "publishing"
        fig["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        snap2 = CpuSnapshot.take(server_pid, pids)
        fig["publish"] = await publish_all(pub, run)
        target.value = fig["publish"]["accepted"]
        publish_done = time.time()

        run.status = "draining"
        until = min(run.deadline, publish_done + args.drain)
        results = await collect(run, out, "result", count=len(ready), until=until, stash=stash)
        if len(results) < len(ready):
            if time.time() >= run.deadline:
                run.timed_out = True
            else:
                run.notes.append(
                    f"drain: not every delivery arrived within {args.drain:g} s after the last "
                    "publish; stopped the subscribers"
                )
            run.stop.set()
            results = await collect(
                run, out, "result", count=len(ready), until=time.time() + 15, stash=stash
            )
        snap3 = CpuSnapshot.take(server_pid, pids)
        for _, index, result, _ in results:  # a client that already exited: its own figure
            if snap3.clients[index] is None:
                snap3.clients[index] = result["cpu_total_s"]
        fig["cpu_publish"] = cpu_between(snap2, snap3)
        fig["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        summarise(run, results)

        with contextlib.suppress(httpx.HTTPError):
            verify = ssl.create_default_context(cafile=init["ca_cert"])
            async with httpx.AsyncClient(verify=verify, trust_env=False, timeout=5) as client:
                response = await client.get(init["url"] + "/metrics")
                fig["server_metrics"] = parse_metrics(response.text)


def fanout_figures(pub: dict[str, Any], results: list[Any], messages: int) -> dict[str, Any]:
    """Per message: send → first and → last subscriber, and the first → last spread."""
    first = [math.inf] * messages
    last = [0.0] * messages
    for _, _, _, (_, first_raw, last_raw) in results:
        firsts: array.array[float] = array.array("d")
        lasts: array.array[float] = array.array("d")
        firsts.frombytes(first_raw)
        lasts.frombytes(last_raw)
        first = [min(a, b) for a, b in zip(first, firsts, strict=True)]
        last = [max(a, b) for a, b in zip(last, lasts, strict=True)]
    sent, acked = pub["sent_at"], pub["acked_at"]
    seqs = [seq for seq in sent if last[seq] > 0.0]
    return {
        "send_to_first_subscriber": distribution([first[q] - sent[q] for q in seqs]),
        "send_to_last_subscriber": distribution([last[q] - sent[q] for q in seqs]),
        "first_to_last_subscriber": distribution([last[q] - first[q] for q in seqs]),
        "http_202_to_last_subscriber": distribution(
            [last[q] - acked[q] for q in seqs if q in acked]
        ),
    }


def summarise(run: Run, results: list[Any]) -> None:
    fig, pub = run.figures, run.figures["publish"]
    latencies: array.array[float] = array.array("d")
    children = []
    for _, _, result, (raw, _, _) in sorted(results, key=lambda r: r[1]):
        chunk: array.array[float] = array.array("d")
        chunk.frombytes(raw)
        latencies.extend(chunk)
        children.append(result)
    expected = fig["connected"] * pub["accepted"]
    received = sum(c["received"] for c in children)
    last_recv = max((c["last_recv"] for c in children if c["last_recv"]), default=None)
    first_send = pub["first_send"]
    window = (last_recv - first_send) if last_recv and first_send else None
    publish_span = (pub["last_send"] - first_send) if first_send else 0.0
    frames = sum(c["received"] + c["duplicates"] for c in children)
    interval = 1.0 / run.args.rate
    fig.update(
        {
            "reported_subscribers": sum(c["connected"] for c in children),
            "deliveries_expected": expected,
            "deliveries_received": received,
            "deliveries_lost": max(0, expected - received),
            "duplicates": sum(c["duplicates"] for c in children),
            "unexpected_closes": dict(
                sum((Counter(c["unexpected_closes"]) for c in children), Counter())
            ),
            "heartbeats": sum(c["heartbeats"] for c in children),
            "message_frame_bytes_avg": (
                round(sum(c["message_frame_bytes"] for c in children) / frames, 1)
                if frames
                else None
            ),
            "target_deliveries_per_s": round(run.args.rate * fig["connected"], 1),
            "achieved_publish_rate": (
                round(pub["attempted"] / (publish_span + interval), 2) if first_send else None
            ),
            "deliveries_per_s": round(received / window, 1) if window else None,
            "delivery_window_s": round(window, 3) if window else None,
            "latency_ms": distribution(list(latencies)),
            "fanout_ms": fanout_figures(pub, results, run.args.messages),
            "clients": children,
        }
    )
    cpu = fig.get("cpu_publish", {})
    if cpu.get("server") is not None and received:
        # Everything the server did in the window (publish requests included) per delivery.
        per_delivery = cpu["server"] * cpu["wall_s"] / received
        fig["server_cpu_us_per_delivery"] = round(per_delivery * 1e6, 1)
        fig["server_deliveries_per_cpu_s"] = round(1.0 / per_delivery)
    # Per-message timestamps were only needed for the fan-out figures.
    pub["sent_at"] = pub["acked_at"] = f"{len(pub['sent_at'])} entries (dropped)"
    if len(results) < len(fig.get("client_connect", [])):
        run.notes.append("some client processes never reported: their deliveries count as lost")


# -- report ------------------------------------------------------------------------------


def quantiles(dist: dict[str, Any] | None) -> str:
    dist = dist or {}
    return " / ".join(fmt(dist.get(k)) for k in ("p50", "p99", "p99.9", "max")) + " ms"


def cpu_row(cpu: dict[str, Any] | None) -> str:
    if not cpu:
        return "n/a"
    clients = " + ".join(fmt(c) for c in cpu.get("clients", []))
    return (
        f"server {fmt(cpu.get('server'))}, clients {clients}, publisher "
        f"{fmt(cpu.get('publisher'))}, other processes {fmt(cpu.get('other_processes'))}; "
        f"machine busy {fmt(cpu.get('machine_busy'))} cores over {fmt(cpu.get('wall_s'), ' s')}"
    )


def client_rows(fig: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for client in fig.get("clients", []):
        cpu = client["cpu"]
        util = cpu["cpu_per_wall"]
        if util is not None and util > SATURATED:
            flag = "  SATURATED"
        elif (cpu["peak_1s"] or 0.0) > SATURATED:
            flag = "  saturated at peak"
        else:
            flag = "  not saturated"
        usage = f"{fmt(util)} (1 s peak {fmt(cpu['peak_1s'])}) over {fmt(cpu['window_s'], ' s')}"
        detail = f"{client['connected']} conns, {client['involuntary_ctx_switches']:,} invol. csw"
        rows.append((f"client proc {client['index']} CPU/wall", f"{usage}, {detail}{flag}"))
    return rows


def table(run: Run) -> str:
    args, fig = run.args, run.figures
    pub = fig.get("publish", {})
    srv = fig.get("server_metrics", {})
    fan = fig.get("fanout_ms", {})
    facts = fig.get("machine", {})
    status = run.status + ("  (TIMED OUT: figures cover what arrived)" if run.timed_out else "")
    srv_deliver = (
        f"{fmt(srv.get('deliver_p50_le_ms'))} / {fmt(srv.get('deliver_p99_le_ms'))} / "
        f"{fmt(srv.get('deliver_p99.9_le_ms'))} ms (bucket upper bounds)"
    )
    load = f"{fig.get('load_average_before', 'n/a')} → {fig.get('load_average_after', 'n/a')}"
    rates = (
        f"{args.rate:g} / {fmt(fig.get('achieved_publish_rate'))} msg/s "
        f"({args.concurrency} in flight max)"
    )
    publish_latency = " / ".join(
        fmt(pub.get(k)) for k in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms")
    )
    publish_latency += " ms"
    per_delivery = (
        f"{fmt(fig.get('server_cpu_us_per_delivery'))} µs "
        f"(⇒ at most {fmt(fig.get('server_deliveries_per_cpu_s'))} deliveries per CPU-second)"
    )
    rows: list[tuple[str, str]] = [
        ("status", status),
        (
            "subscribers requested / connected",
            f"{args.subscribers:,} / {fmt(fig.get('connected'))}",
        ),
        ("client processes", fmt(args.client_procs)),
        ("messages requested / accepted (202)", f"{args.messages:,} / {fmt(pub.get('accepted'))}"),
        ("publish rate target / achieved", rates),
        ("message frame size (avg)", fmt(fig.get("message_frame_bytes_avg"), " B")),
        ("request signatures", fmt(fig.get("request_signatures"))),
        (
            "token minting / connect phase",
            f"{fmt(fig.get('token_mint_s'), ' s')} / {fmt(fig.get('connect_s'), ' s')}",
        ),
        ("deliveries expected", fmt(fig.get("deliveries_expected"))),
        ("deliveries received", fmt(fig.get("deliveries_received"))),
        (
            "deliveries lost / duplicates",
            f"{fmt(fig.get('deliveries_lost'))} / {fmt(fig.get('duplicates'))}",
        ),
        ("deliveries/s target (rate × subscribers)", fmt(fig.get("target_deliveries_per_s"))),
        ("deliveries/s (first send → last receive)", fmt(fig.get("deliveries_per_s"))),
        ("delivery window", fmt(fig.get("delivery_window_s"), " s")),
        ("latency send→receive p50/p99/p99.9/max", quantiles(fig.get("latency_ms"))),
        ("publish latency (HTTP 202) p50/p99/max", publish_latency),
        ("publish schedule lag max", fmt(pub.get("schedule_lag_max_ms"), " ms")),
        ("per msg: send → 1st subscriber", quantiles(fan.get("send_to_first_subscriber"))),
        ("per msg: send → last subscriber", quantiles(fan.get("send_to_last_subscriber"))),
        ("per msg: 1st → last subscriber", quantiles(fan.get("first_to_last_subscriber"))),
        ("per msg: HTTP 202 → last subscriber", quantiles(fan.get("http_202_to_last_subscriber"))),
        ("server metric publish→socket p50/p99/p99.9", srv_deliver),
        ("server CPU per delivery (incl. publishes)", per_delivery),
        ("CPU/wall, connect phase", cpu_row(fig.get("cpu_connect"))),
        ("CPU/wall, publish + drain", cpu_row(fig.get("cpu_publish"))),
        *client_rows(fig),
        ("load average before → after", load),
        ("cpu_count / platform", f"{facts.get('cpu_count')} / {facts.get('platform')}"),
        ("python / herald", f"{facts.get('python')} / {facts.get('herald')}"),
    ]
    extras = [
        ("connect errors", fig.get("connect_errors")),
        ("publish errors", pub.get("errors")),
        ("unexpected closes", fig.get("unexpected_closes")),
        (
            "server stream disconnects (not client-closed)",
            {k: v for k, v in srv.get("stream_disconnects", {}).items() if k != "client_closed"},
        ),
        ("server log records by level", fig.get("server_log", {}).get("levels")),
    ]
    rows += [(name, json.dumps(value)) for name, value in extras if value]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    rule = "-" * min(100, max(len(line) for line in lines))
    return "\n".join(["publish → deliver benchmark", rule, *lines, rule])


def write_results(run: Run) -> Path:
    return common_write_results(
        "publish_deliver",
        status=run.status,
        timed_out=run.timed_out,
        args=run.args,
        notes=run.notes,
        **run.figures,
    )


def stop_children(run: Run) -> None:
    """Stop the client processes: ask, wait up to 10 s, then terminate, then kill."""
    stop_processes(run.procs, run.stop, run.queue)


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.publish_deliver", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="default: 1000")
    parser.add_argument("--messages", type=int, default=200, help="default: 200")
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s (default: 20)")
    parser.add_argument(
        "--client-procs", type=int, default=2, help="subscriber processes (default: 2)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="publishes in flight at most")
    parser.add_argument("--connect-concurrency", type=int, default=64, help="per client process")
    parser.add_argument("--timeout", type=float, default=120.0, help="hard limit for the run (s)")
    parser.add_argument(
        "--drain", type=float, default=15.0, help="wait after the last publish for stragglers (s)"
    )
    parser.add_argument(
        "--signatures",
        choices=("auto", "on", "off"),
        default="auto",
        help="RFC 9421 request signing: auto = sign when the SDK and `herald init` provide a "
        "key, else run the server with HERALD_REQUIRE_SIGNATURES=false (default: auto)",
    )
    parser.add_argument("--quick", action="store_true", help="100 subscribers, 50 messages")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.messages = 100, 50
    for name in ("subscribers", "messages", "client_procs", "concurrency", "connect_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate <= 0 or args.timeout <= 0 or args.drain < 0:
        parser.error("--rate and --timeout must be positive, --drain not negative")
    args.client_procs = min(args.client_procs, args.subscribers)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    run = Run(args=args, deadline=time.time() + args.timeout)
    needed = args.subscribers + 256  # the server inherits this limit and holds every socket
    soft = raise_nofile(needed)
    if soft < needed:
        print(
            f"open-file limit {soft} < {needed} needed for {args.subscribers} subscribers; "
            "raise the hard limit (ulimit -Hn) or use fewer subscribers",
            file=sys.stderr,
        )
        return 2
    run.figures["machine"] = machine_facts()
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    data_dir = tmp / "data"
    server: subprocess.Popen[bytes] | None = None
    failed = False
    try:
        run.status = "starting server"
        env = server_env(data_dir, free_port())
        init = herald_init(env)
        signer = configure_signing(run, init, env)
        server = start_server(env, init["url"], init["ca_cert"], run.deadline)
        run.server_pid = server.pid
        if signer is not None:
            time.sleep(SIGNED_START_WAIT)  # see SIGNED_START_WAIT
        asyncio.run(run_bench(run, init, server.pid, signer))
        run.status = "finished"
    except KeyboardInterrupt:
        run.status = f"interrupted while {run.status}"
        failed = True
    except Exception as exc:
        run.status = f"failed while {run.status}: {type(exc).__name__}: {exc}"
        run.notes.append(traceback.format_exc())
        failed = True
    finally:
        stop_children(run)
        if server is not None:
            stop_server(server)
        run.figures["server_log"] = log_summary(data_dir / "serve.log")
        shutil.rmtree(tmp, ignore_errors=True)
    report(run, failed=failed)
    return 1 if run.status != "finished" else 0


def configure_signing(run: Run, init: dict[str, Any], env: dict[str, str]) -> Any:
    """The publisher's request signer, or ``None`` after telling the server not to require one."""
    signer, run.figures["request_signatures"] = common_configure_signing(
        run.args.signatures, init, env
    )
    return signer


def report(run: Run, *, failed: bool) -> None:
    """Print the table (plus notes and server log excerpts) and write the JSON file."""
    levels = run.figures["server_log"]["levels"]
    failed = (
        failed
        or run.timed_out
        or bool(run.figures.get("deliveries_lost"))
        or bool(run.figures.get("publish", {}).get("errors"))
        or bool(run.figures.get("connect_errors"))
        or bool(run.figures.get("unexpected_closes"))
        or any(level in levels for level in ("error", "critical", "exception"))
    )
    log = run.figures["server_log"]
    if not failed:
        log.pop("tail")  # kept (and printed) only when something failed
    print(table(run))
    for note in run.notes:
        print("note:", note)
    if log["problems"]:
        print(f"server log warnings and errors (last {LOG_TAIL_LINES}; full lines in the JSON):")
        for line in log["problems"]:
            print("  " + line[:400])
    if failed and log.get("tail"):
        print("last lines of the server log:")
        for line in log["tail"][-10:]:
            print("  " + line[:400])
    print(f"results: {write_results(run)}")


if __name__ == "__main__":
    sys.exit(main())
