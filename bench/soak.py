"""Soak test: thousands of WebSocket subscribers, a steady publish rate, nothing may leak or lag.

Run it from the repository root::

    python -m bench.soak                                  # 5,000 subscribers, 10 minutes
    python -m bench.soak --duration 60                    # the CI profile (make soak-ci)
    python -m bench.soak --duration 30 --subscribers 500  # a quick local try

What it does, always on 127.0.0.1 only:

1. starts a throw-away ``herald serve`` (``herald init --json`` in a temporary directory);
2. mints one subscriber token per subscriber, subscriber ``i`` for topic ``soak.tNNN`` with
   ``NNN = i mod --topics`` (``POST /v1/subscriber-tokens``);
3. spawns ``--client-procs`` processes holding the subscribers as raw ``websockets``
   connections; each subscriber checks that the per-topic sequence numbers it receives are
   gap-free, in order and without duplicates;
4. publishes at ``--rate`` messages/s for ``--duration`` seconds, round-robin over the
   topics, each with ``data = {"t", "k" (topic index), "seq" (per-topic sequence)}``;
5. samples every ``--sample-interval`` seconds the server's RSS and open file descriptors
   (psutil) and, from ``/metrics``, event-loop lag, stream queue depths and deliveries in
   flight; writes ``bench/results/soak-<UTC>.csv``, ``.png`` (chart) and ``.json``;
6. exits 1 with one line per failed criterion: RSS grew more than ``--rss-growth-max``
   after the warm-up, a message was lost (or duplicated, or out of order), event-loop lag
   p99 above ``--lag-p99-max-ms`` in a sampled window, or the run itself broke (connects
   failed, publishes failed, subscribers cut off, server errors, hard timeout).

The server and the client processes are always stopped and the directory removed, also on
Ctrl-C, SIGTERM and at the hard ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import math
import multiprocessing as mp
import os
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

from bench._common import (
    LOG_TAIL_LINES,
    RESULTS_DIR,
    SIGNED_START_WAIT,
    BenchRun,
    bucket_bound,
    bucket_quantile,
    collect_messages,
    configure_signing,
    fmt,
    free_port,
    herald_init,
    log_summary,
    machine_busy_seconds,
    machine_facts,
    metric_samples,
    mint_subscriber_tokens,
    open_stream,
    proc_cpu_seconds,
    raise_keyboard_interrupt,
    raise_nofile,
    results_stamp,
    server_env,
    start_server,
    stop_processes,
    stop_server,
    uvloop_factory,
    write_results,
)

TOPIC_PREFIX = "soak.t"
CONNECT_PHASES = frozenset({"connect", "publish-start"})  # rows whose window is (mostly) connecting
PUBLISH_PHASES = frozenset({"warmup", "steady", "publish-end"})  # rows whose window is publishing
BODY = ("Herald soak payload. " * 6)[:100]  # 100 ASCII bytes
PROGRESS_PERIOD = 1.0  # seconds between a client process's updates of its shared counters
PROGRESS_FIELDS = 4  # per client process: unique received, duplicates, out of order, closes
LAG_BUCKETS = "herald_event_loop_lag_seconds_bucket"
CONNECT_PHASE_BUDGET = 240.0  # seconds the hard timeout allows for minting and connecting
TEARDOWN_BUDGET = 60.0  # seconds the hard timeout allows for draining, reports and stopping
ALARM_GRACE = 30  # seconds after --timeout at which SIGALRM interrupts whatever hangs
CSV_FIELDS = (
    "t_s",
    "phase",
    "rss_mib",
    "open_fds",
    "threads",
    "server_cpu",
    "others_cpu",
    "lag_samples",
    "lag_p99_le_ms",
    "lag_max_ms",
    "stream_queued_frames",
    "stream_queue_depth_max",
    "deliveries_in_flight",
    "active_streams",
    "published",
    "delivered",
    "backlog",
)


def topic(k: int) -> str:
    return f"{TOPIC_PREFIX}{k:03d}"


# -- client processes --------------------------------------------------------------------


class FrameData(msgspec.Struct):
    k: int = -1
    seq: int = -1


class Frame(msgspec.Struct):
    """The parts of a server frame a subscriber looks at (other fields are skipped)."""

    type: str = ""
    data: FrameData | None = None


@dataclass
class ChildConfig:
    index: int
    ws_url: str
    ca: str
    subscribers: list[tuple[str, int]]  # (token, topic index)
    topics: int
    seq_cap: int  # no topic gets more messages than this
    connect_concurrency: int
    deadline: float  # time.time() after which the process reports and stops, whatever happened


class Subscriber:
    """One connection and its gap check: which per-topic sequence numbers it has seen."""

    __slots__ = ("closed", "high", "k", "seen", "unique", "ws")

    def __init__(self, ws: Any, k: int, seq_cap: int) -> None:
        self.ws = ws
        self.k = k
        self.seen = bytearray(seq_cap)
        self.unique = 0
        self.high = -1  # highest sequence number seen
        self.closed = False


@dataclass
class ChildState:
    unique: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    misrouted: int = 0
    out_of_range: int = 0
    heartbeats: int = 0
    other_frames: Counter[str] = field(default_factory=Counter)
    unexpected_closes: Counter[str] = field(default_factory=Counter)
    stopping: bool = False


def child_main(cfg: ChildConfig, out: Any, stop: Any, progress: Any, attempted: Any) -> None:
    """Entry point of one client process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    raise_nofile(len(cfg.subscribers) + 64)
    try:
        with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
            runner.run(child_run(cfg, out, stop, progress, attempted))
    except BaseException:
        out.put(("error", cfg.index, traceback.format_exc()))


async def child_connect(
    cfg: ChildConfig, ctx: ssl.SSLContext
) -> tuple[list[Subscriber], Counter[str]]:
    sem = asyncio.Semaphore(cfg.connect_concurrency)

    async def open_one(token: str, k: int) -> Subscriber:
        async with sem:
            return Subscriber(await open_stream(cfg.ws_url + topic(k), ctx, token), k, cfg.seq_cap)

    tasks = [asyncio.create_task(open_one(token, k)) for token, k in cfg.subscribers]
    _, pending = await asyncio.wait(tasks, timeout=max(0.1, cfg.deadline - time.time()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    subs: list[Subscriber] = []
    errors: Counter[str] = Counter()
    for task in tasks:
        if task in pending:
            errors["timeout (hard deadline)"] += 1
        elif (exc := task.exception()) is not None:
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
        else:
            subs.append(task.result())
    return subs, errors


async def child_read(sub: Subscriber, st: ChildState, decoder: msgspec.json.Decoder[Frame]) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for raw in sub.ws:
            frame = decoder.decode(raw)
            if frame.type == "message" and frame.data is not None:
                k, seq = frame.data.k, frame.data.seq
                if k != sub.k:
                    st.misrouted += 1
                elif not 0 <= seq < len(sub.seen):
                    st.out_of_range += 1
                elif sub.seen[seq]:
                    st.duplicates += 1
                else:
                    sub.seen[seq] = 1
                    sub.unique += 1
                    st.unique += 1
                    if seq < sub.high:
                        st.out_of_order += 1
                    sub.high = max(sub.high, seq)
            elif frame.type == "heartbeat":
                st.heartbeats += 1
            else:
                st.other_frames[frame.type] += 1
    except ConnectionClosed:
        pass
    except Exception as exc:
        st.unexpected_closes[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
    sub.closed = True
    if not st.stopping:
        st.unexpected_closes[f"close code {sub.ws.close_code}"] += 1


def publish_progress(cfg: ChildConfig, st: ChildState, progress: Any) -> None:
    base = cfg.index * PROGRESS_FIELDS
    closes = sum(st.unexpected_closes.values())
    for offset, value in enumerate((st.unique, st.duplicates, st.out_of_order, closes)):
        progress[base + offset] = value


async def child_run(cfg: ChildConfig, out: Any, stop: Any, progress: Any, attempted: Any) -> None:
    ctx = ssl.create_default_context(cafile=cfg.ca)
    decoder = msgspec.json.Decoder(Frame)
    st = ChildState()
    wall0 = time.monotonic()
    subs, connect_errors = await child_connect(cfg, ctx)
    out.put(
        (
            "ready",
            cfg.index,
            {
                "connected": len(subs),
                "per_topic": dict(Counter(sub.k for sub in subs)),
                "connect_errors": dict(connect_errors),
                "connect_s": round(time.monotonic() - wall0, 3),
            },
        )
    )
    readers = [asyncio.create_task(child_read(sub, st, decoder)) for sub in subs]
    outcome = "stopped"
    while not stop.is_set():
        await asyncio.sleep(PROGRESS_PERIOD)
        publish_progress(cfg, st, progress)
        if time.time() >= cfg.deadline:
            outcome = "timeout"
            break
    st.stopping = True
    publish_progress(cfg, st, progress)
    # Which (topic, seq) each subscriber lacks among everything published to its topic; the
    # parent counts only those whose publish was accepted as lost.
    missing: Counter[tuple[int, int]] = Counter()
    for sub in subs:
        sent = min(attempted[sub.k], cfg.seq_cap)
        if sub.unique < sent:
            missing.update((sub.k, seq) for seq in range(sent) if not sub.seen[seq])
    result = {
        "index": cfg.index,
        "outcome": outcome,
        "connected": len(subs),
        "unique": st.unique,
        "duplicates": st.duplicates,
        "out_of_order": st.out_of_order,
        "misrouted": st.misrouted,
        "out_of_range": st.out_of_range,
        "heartbeats": st.heartbeats,
        "other_frames": dict(st.other_frames),
        "unexpected_closes": dict(st.unexpected_closes),
        "cpu_s": round(time.process_time(), 3),
    }
    out.put(("result", cfg.index, result, dict(missing)))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(sub.ws.close() for sub in subs), return_exceptions=True), 5
        )
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


# -- server samples ----------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, Any]:
    """The figures the soak samples from the server's ``/metrics`` (Prometheus text)."""
    out: dict[str, Any] = {"lag_buckets": {}, "active_streams": 0.0}
    singles = {
        "herald_event_loop_lag_seconds_count": "lag_count",
        "herald_event_loop_lag_max_seconds": "lag_max_s",
        "herald_stream_queued_frames": "stream_queued_frames",
        "herald_stream_queue_depth_max": "stream_queue_depth_max",
        "herald_deliveries_in_flight": "deliveries_in_flight",
    }
    for name, labels, value in metric_samples(text):
        if name == LAG_BUCKETS:
            out["lag_buckets"][bucket_bound(labels["le"])] = value
        elif name in singles:
            out[singles[name]] = value
        elif name == "herald_active_streams":
            out["active_streams"] += value
    return out


@dataclass
class Sampler:
    """Takes one row of server figures per call; keeps the previous scrape for deltas."""

    server_pid: int
    metrics_url: str
    ca: str
    t0: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    published: int = 0
    expected_so_far: int = 0
    progress: Any = None
    client_pids: list[int] = field(default_factory=list)
    scrape_errors: int = 0
    _before: dict[str, Any] = field(default_factory=dict)
    _cpu_before: tuple[float, float, float | None] | None = None
    _client: Any = None

    async def sample(self, phase: str) -> dict[str, Any]:
        import httpx
        import psutil

        if self._client is None:
            verify = ssl.create_default_context(cafile=self.ca)
            self._client = httpx.AsyncClient(verify=verify, trust_env=False, timeout=5.0)
        now = time.monotonic()
        proc = psutil.Process(self.server_pid)
        with proc.oneshot():
            rss, fds, threads = proc.memory_info().rss, proc.num_fds(), proc.num_threads()
        cpu = proc_cpu_seconds(self.server_pid)
        # Everything else on the machine: its busy time minus the server, the clients and us.
        busy = machine_busy_seconds()
        ours = [proc_cpu_seconds(pid) for pid in self.client_pids]
        others = (
            None
            if busy is None or None in ours
            else busy - sum(c for c in ours if c is not None) - time.process_time()
        )
        try:
            response = await self._client.get(self.metrics_url)
            scraped = parse_metrics(response.text)
        except httpx.HTTPError:
            self.scrape_errors += 1
            scraped = {}
        row: dict[str, Any] = {
            "t_s": round(now - self.t0, 1),
            "phase": phase,
            "rss_mib": round(rss / 2**20, 2),
            "open_fds": fds,
            "threads": threads,
            "server_cpu": None,
        }
        row["others_cpu"] = None
        if cpu is not None and self._cpu_before is not None:
            wall = max(now - self._cpu_before[0], 1e-9)
            row["server_cpu"] = round((cpu - self._cpu_before[1]) / wall, 3)
            before = self._cpu_before[2]
            if others is not None and before is not None:
                rest = (others - before) / wall - row["server_cpu"]
                row["others_cpu"] = round(max(0.0, rest), 3)
        if cpu is not None:
            self._cpu_before = (now, cpu, others)
        buckets = scraped.get("lag_buckets")
        if buckets:
            bound, count = bucket_quantile(buckets, self._before.get("lag_buckets", {}), 0.99)
            row["lag_samples"] = count
            row["lag_p99_le_ms"] = None if bound is None else bound * 1000.0
            row["lag_buckets"] = buckets
            self._before = scraped
        max_s = scraped.get("lag_max_s")
        row["lag_max_ms"] = None if max_s is None else round(max_s * 1000.0, 2)
        for name in (
            "stream_queued_frames",
            "stream_queue_depth_max",
            "deliveries_in_flight",
            "active_streams",
        ):
            value = scraped.get(name)
            row[name] = None if value is None else int(value)
        delivered = (
            sum(self.progress[i] for i in range(0, len(self.progress), PROGRESS_FIELDS))
            if self.progress is not None
            else 0
        )
        row.update(
            published=self.published,
            delivered=delivered,
            backlog=max(0, self.expected_so_far - delivered),
        )
        self.rows.append(row)
        return row

    async def every(self, interval: float, phase: str, until: float) -> None:
        """A row every ``interval`` seconds (on a fixed schedule) until ``until`` (monotonic)."""
        tick = time.monotonic()
        while True:
            tick += interval
            if tick > until:
                return
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            await self.sample(phase)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


# -- the run -----------------------------------------------------------------------------


@dataclass
class Run(BenchRun):
    """The soak's run: its client processes and the sampler."""

    status: str = "running"
    procs: list[Any] = field(default_factory=list)
    stop: Any = None
    queue: Any = None
    sampler: Sampler | None = None


@dataclass
class Publisher:
    """Publishes round-robin over the topics at a fixed rate, per-topic sequence numbers."""

    topics: int
    attempted: Any  # shared array: messages attempted per topic (the children read it)
    accepted: set[tuple[int, int]] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    schedule_lag_max: float = 0.0

    async def run(self, pub: Any, rate: float, duration: float, concurrency: int) -> None:
        from herald.client import HeraldClientError

        sem = asyncio.Semaphore(concurrency)
        # Messages of one topic never overlap in flight, so their commit order (which is
        # their delivery order) is their sequence order.
        locks = [asyncio.Lock() for _ in range(self.topics)]
        tasks: set[asyncio.Task[None]] = set()

        async def one(k: int, seq: int) -> None:
            try:
                async with locks[k]:
                    started = time.perf_counter()
                    data = {"t": time.time(), "k": k, "seq": seq}
                    await pub.publish(topic(k), title=f"soak {k}/{seq}", body=BODY, data=data)
                    self.latencies.append(time.perf_counter() - started)
                    self.accepted.add((k, seq))
            except HeraldClientError as exc:
                self.errors[str(exc)[:120]] += 1
            finally:
                sem.release()

        interval = 1.0 / rate
        count = int(duration * rate)
        t0 = time.monotonic()
        for j in range(count):
            delay = t0 + j * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            self.schedule_lag_max = max(self.schedule_lag_max, time.monotonic() - t0 - j * interval)
            k = j % self.topics
            seq = self.attempted[k]
            self.attempted[k] = seq + 1
            task = asyncio.create_task(one(k, seq))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)


def start_children(run: Run, init: dict[str, Any], tokens: list[str], attempted: Any) -> Any:
    args = run.args
    ctx = mp.get_context("spawn")
    run.queue = ctx.Queue()
    run.stop = ctx.Event()
    progress = ctx.Array("q", args.client_procs * PROGRESS_FIELDS, lock=False)
    ws_url = init["url"].replace("https://", "wss://", 1) + "/v1/stream?topics="
    subscribers = [(token, i % args.topics) for i, token in enumerate(tokens)]
    seq_cap = math.ceil(args.duration * args.rate / args.topics) + 1
    for index in range(args.client_procs):
        cfg = ChildConfig(
            index=index,
            ws_url=ws_url,
            ca=init["ca_cert"],
            subscribers=subscribers[index :: args.client_procs],
            topics=args.topics,
            seq_cap=seq_cap,
            connect_concurrency=args.connect_concurrency,
            deadline=run.deadline,
        )
        proc = ctx.Process(
            target=child_main,
            args=(cfg, run.queue, run.stop, progress, attempted),
            name=f"soak-client-{index}",
        )
        proc.start()
        run.procs.append(proc)
    return progress


async def soak(run: Run, init: dict[str, Any], server_pid: int, signer: Any) -> None:
    from herald.client import AsyncPublisher

    args, fig = run.args, run.figures
    stash: dict[str, list[Any]] = {}
    sampler = run.sampler = Sampler(
        server_pid=server_pid,
        metrics_url=init["url"] + "/metrics",
        ca=init["ca_cert"],
        t0=time.monotonic(),
    )
    extra = {"signer": signer} if signer is not None else {}
    await sampler.sample("start")
    connect_sampler = asyncio.create_task(
        sampler.every(args.sample_interval, "connect", until=math.inf)
    )
    try:
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
            ttl = int(args.duration + CONNECT_PHASE_BUDGET + TEARDOWN_BUDGET + 600)
            wanted = [(f"soak-{i:06d}", [topic(i % args.topics)]) for i in range(args.subscribers)]
            tokens = await mint_subscriber_tokens(
                pub, wanted, ttl=ttl, timeout=run.remaining(), concurrency=args.mint_concurrency
            )
            fig["token_mint_s"] = round(time.monotonic() - started, 3)

            run.status = "connecting"
            ctx = mp.get_context("spawn")
            attempted = ctx.Array("i", args.topics, lock=False)
            started = time.monotonic()
            sampler.progress = start_children(run, init, tokens, attempted)
            sampler.client_pids = [proc.pid for proc in run.procs if proc.pid is not None]
            ready, errors = await collect_messages(
                run.procs, run.queue, "ready", count=args.client_procs, until=run.deadline,
                stash=stash,
            )  # fmt: skip
            run.notes.extend(errors)
            fig["connect_s"] = round(time.monotonic() - started, 3)
            fig["connected"] = sum(r[2]["connected"] for r in ready)
            fig["connect_errors"] = dict(
                sum((Counter(r[2]["connect_errors"]) for r in ready), Counter())
            )
            fig["client_connect_s"] = [r[2]["connect_s"] for r in sorted(ready, key=lambda r: r[1])]
            if len(ready) < args.client_procs:
                run.notes.append(f"only {len(ready)} of {args.client_procs} client processes ready")
                run.timed_out = time.time() >= run.deadline
                return
            # Connected subscribers per topic: what each message must reach (connect failures
            # are a failure of their own, not counted as lost messages).
            per_topic: Counter[int] = sum((Counter(r[2]["per_topic"]) for r in ready), Counter())
            await pub.publish("soakwarmup.load", body=BODY)  # open the publisher's connection
            connect_sampler.cancel()
            await asyncio.gather(connect_sampler, return_exceptions=True)

            run.status = "publishing"
            publisher = Publisher(topics=args.topics, attempted=attempted)
            fig["publish_started_at_s"] = round(time.monotonic() - sampler.t0, 1)
            await sampler.sample("publish-start")
            publish_t0 = time.monotonic()
            warmup_end = publish_t0 + args.warmup * args.duration

            async def track_expected() -> None:
                while True:
                    sampler.published = len(publisher.accepted)
                    sampler.expected_so_far = sum(per_topic[k] for k, _ in publisher.accepted)
                    await asyncio.sleep(0.5)

            tracker = asyncio.create_task(track_expected())
            samplers = [
                asyncio.create_task(
                    sampler.every(args.sample_interval, "warmup", until=warmup_end - 1e-6)
                )
            ]

            async def steady_samples() -> None:
                await samplers[0]
                tick = warmup_end
                # Steady-phase rows continue the same 10 s grid from the publish start.
                offset = (warmup_end - publish_t0) % args.sample_interval
                if offset:
                    tick += args.sample_interval - offset
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
                await sampler.sample("steady")
                await sampler.every(
                    args.sample_interval, "steady", until=publish_t0 + args.duration - 1.0
                )

            samplers.append(asyncio.create_task(steady_samples()))
            try:
                await asyncio.wait_for(
                    publisher.run(pub, args.rate, args.duration, args.concurrency),
                    timeout=max(0.1, run.remaining()),
                )
            except TimeoutError:
                run.timed_out = True
                run.notes.append("hard timeout while publishing")
            finally:
                for task in samplers:
                    task.cancel()
                await asyncio.gather(*samplers, return_exceptions=True)
            sampler.published = len(publisher.accepted)
            sampler.expected_so_far = sum(per_topic[k] for k, _ in publisher.accepted)
            await sampler.sample("publish-end")
            tracker.cancel()
            await asyncio.gather(tracker, return_exceptions=True)
            fig["publish_s"] = round(time.monotonic() - publish_t0, 3)
            fig["publish"] = publish_figures(publisher)

            run.status = "draining"
            until = min(run.deadline, time.time() + args.drain)
            while time.time() < until and sampler.expected_so_far > sum(
                sampler.progress[i] for i in range(0, len(sampler.progress), PROGRESS_FIELDS)
            ):
                await asyncio.sleep(0.2)
            await sampler.sample("drained")
            run.stop.set()
            results, errors = await collect_messages(
                run.procs, run.queue, "result", count=len(ready), until=time.time() + 30,
                stash=stash,
            )  # fmt: skip
            run.notes.extend(errors)
            summarise(run, results, publisher, per_topic)
    finally:
        connect_sampler.cancel()
        await asyncio.gather(connect_sampler, return_exceptions=True)
        await sampler.close()


def publish_figures(publisher: Publisher) -> dict[str, Any]:
    ordered = sorted(publisher.latencies)

    def pct(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000, 2)

    return {
        "attempted": int(sum(publisher.attempted)),
        "accepted": len(publisher.accepted),
        "errors": dict(publisher.errors),
        "latency_p50_ms": pct(50),
        "latency_p99_ms": pct(99),
        "latency_max_ms": pct(100),
        "schedule_lag_max_ms": round(publisher.schedule_lag_max * 1000, 2),
    }


def summarise(run: Run, results: list[Any], publisher: Publisher, per_topic: Counter[int]) -> None:
    fig = run.figures
    children = [r[2] for r in sorted(results, key=lambda r: r[1])]
    missing: Counter[tuple[int, int]] = Counter()
    for *_, child_missing in results:
        missing.update(child_missing)
    expected = sum(per_topic[k] for k, _ in publisher.accepted)
    lost = sum(count for key, count in missing.items() if key in publisher.accepted)
    received = sum(c["unique"] for c in children)
    fig.update(
        {
            "deliveries_expected": expected,
            "deliveries_received": received,
            "deliveries_lost": lost,
            "duplicates": sum(c["duplicates"] for c in children),
            "out_of_order": sum(c["out_of_order"] for c in children),
            "misrouted": sum(c["misrouted"] + c["out_of_range"] for c in children),
            "heartbeats": sum(c["heartbeats"] for c in children),
            "unexpected_closes": dict(
                sum((Counter(c["unexpected_closes"]) for c in children), Counter())
            ),
            "clients": children,
        }
    )
    if len(children) < len(run.procs):
        run.notes.append("some client processes never reported: their deliveries count as lost")
        fig["deliveries_lost"] = max(lost, expected - received)


# -- verdict, files, report ----------------------------------------------------------------


def evaluate(run: Run) -> tuple[list[str], dict[str, Any]]:
    """The failed criteria (one line each) and the figures they were judged on."""
    args, fig = run.args, run.figures
    rows = run.sampler.rows if run.sampler is not None else []
    failures: list[str] = []
    verdict: dict[str, Any] = {}
    if run.status != "finished":
        failures.append(f"the run did not finish: {run.status}")
    if run.timed_out:
        failures.append(f"hard timeout ({args.timeout:g} s) reached")
    judge_rss(rows, args, verdict, failures, finished=run.status == "finished")
    judge_lag(rows, args, verdict, failures, finished=run.status == "finished")
    judge_deliveries(fig, failures)
    return failures, verdict


def judge_rss(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    verdict: dict[str, Any],
    failures: list[str],
    *,
    finished: bool,
) -> None:
    """RSS: the first sample at or after the warm-up's end against the last while publishing."""
    after_warmup = [r for r in rows if r["phase"] in {"steady", "publish-end"}]
    if not after_warmup:
        if finished:
            failures.append("no RSS sample after the warm-up: the run is too short to judge RSS")
        return
    baseline, final = after_warmup[0]["rss_mib"], after_warmup[-1]["rss_mib"]
    growth = (final - baseline) / baseline
    verdict["rss"] = {
        "baseline_mib": baseline,
        "baseline_t_s": after_warmup[0]["t_s"],
        "final_mib": final,
        "peak_after_warmup_mib": max(r["rss_mib"] for r in after_warmup),
        "growth_pct": round(growth * 100, 2),
    }
    if growth > args.rss_growth_max:
        failures.append(
            f"RSS grew {growth * 100:.1f} % after warm-up ({baseline:.1f} → {final:.1f} MiB; "
            f"limit {args.rss_growth_max * 100:g} %)"
        )


def judge_lag(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    verdict: dict[str, Any],
    failures: list[str],
    *,
    finished: bool,
) -> None:
    """Event-loop lag: the p99 of every sampled window while publishing, from bucket deltas."""
    windows = [r for r in rows if r["phase"] in PUBLISH_PHASES and r.get("lag_samples")]
    if not windows:
        if finished:
            failures.append(
                "no event-loop lag samples: /metrics lacks herald_event_loop_lag_seconds"
            )
        return
    worst = max(windows, key=lambda r: r["lag_p99_le_ms"])
    connecting = [
        r for r in rows if r["phase"] in {"connect", "publish-start"} and r.get("lag_samples")
    ]
    verdict["lag_while_connecting"] = {
        "worst_window_p99_le_ms": max((r["lag_p99_le_ms"] for r in connecting), default=None),
        "max_ms": max((r["lag_max_ms"] or 0.0 for r in connecting), default=None),
    }
    verdict["lag"] = {
        "windows": len(windows),
        "samples": sum(r["lag_samples"] for r in windows),
        "worst_window_p99_le_ms": worst["lag_p99_le_ms"],
        "worst_window_t_s": worst["t_s"],
        "run_p99_le_ms": run_lag_p99_ms(rows),
        "max_ms": max((r["lag_max_ms"] or 0.0) for r in windows),
    }
    limit = args.lag_p99_max_ms
    over = [r for r in windows if r["lag_p99_le_ms"] > limit]
    if over:
        failures.append(
            f"event-loop lag p99 above {limit:g} ms in {len(over)} of {len(windows)} "
            f"{args.sample_interval:g}-s windows (worst: ≤ {worst['lag_p99_le_ms']:g} ms at "
            f"t={worst['t_s']:g} s)"
        )


def run_lag_p99_ms(rows: list[dict[str, Any]]) -> float | None:
    """The lag p99 over the whole publishing phase (bucket upper bound, ms)."""
    start = next((r for r in rows if r["phase"] == "publish-start"), None)
    end = next((r for r in reversed(rows) if r["phase"] in PUBLISH_PHASES), None)
    if start is None or end is None or "lag_buckets" not in start or "lag_buckets" not in end:
        return None
    bound, _ = bucket_quantile(end["lag_buckets"], start["lag_buckets"], 0.99)
    return None if bound is None else bound * 1000.0


def judge_deliveries(fig: dict[str, Any], failures: list[str]) -> None:
    """Loss, duplicates, order, cut-offs, connect and publish failures, server errors."""
    if "deliveries_expected" in fig:
        expected, received = fig["deliveries_expected"], fig["deliveries_received"]
        if fig["deliveries_lost"] or received != expected:
            failures.append(
                f"messages lost: {fig['deliveries_lost']:,} deliveries missing "
                f"({received:,} received of {expected:,} expected)"
            )
        for key, what in (
            ("duplicates", "duplicate deliveries"),
            ("out_of_order", "deliveries out of sequence order"),
            ("misrouted", "deliveries for another topic or out of range"),
        ):
            if fig[key]:
                failures.append(f"{fig[key]:,} {what}")
        if fig["unexpected_closes"]:
            failures.append(f"subscribers cut off during the soak: {fig['unexpected_closes']}")
    if fig.get("connect_errors"):
        failures.append(f"subscribers failed to connect: {fig['connect_errors']}")
    if fig.get("publish", {}).get("errors"):
        failures.append(f"publishes failed: {fig['publish']['errors']}")
    levels = fig.get("server_log", {}).get("levels", {})
    bad = {level: n for level, n in levels.items() if level in {"error", "critical", "exception"}}
    if bad:
        failures.append(f"the server logged errors: {bad}")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_FIELDS})


def write_chart(path: Path, run: Run, verdict: dict[str, Any]) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    rows = run.sampler.rows if run.sampler is not None else []
    args = run.args
    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    start = run.figures.get("publish_started_at_s")
    title = (
        f"Herald soak: {run.figures.get('connected', 0):,} subscribers, {args.rate:g} msg/s over "
        f"{args.topics} topics, {args.duration:g} s"
    )
    fig.suptitle(title)
    if start is not None:
        for ax in axes:
            ax.axvspan(0, start, color="0.92", label="_connect")
            ax.axvspan(start, start + args.warmup * args.duration, color="#fff3d6")
            ax.grid(alpha=0.3)
    ax = axes[0]
    ax.plot(t, [r["rss_mib"] for r in rows], marker=".", label="RSS")
    rss = verdict.get("rss")
    if rss:
        limit = rss["baseline_mib"] * (1 + args.rss_growth_max)
        ax.axhline(rss["baseline_mib"], color="tab:green", ls=":", label="baseline (after warm-up)")
        ax.axhline(limit, color="tab:red", ls="--", label=f"+{args.rss_growth_max * 100:g} % limit")
    ax.set_ylabel("server RSS (MiB)")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    ax.plot(t, [r["open_fds"] for r in rows], marker=".", color="tab:purple", label="open fds")
    streams = [r.get("active_streams") for r in rows]
    ax.plot(t, streams, ls=":", color="tab:gray", label="active streams")
    ax.set_ylabel("count")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    ax.plot(t, [r.get("stream_queued_frames") for r in rows], marker=".", label="queued (all)")
    ax.plot(t, [r.get("stream_queue_depth_max") for r in rows], marker=".", label="fullest queue")
    ax.plot(t, [r.get("deliveries_in_flight") for r in rows], ls=":", label="deliveries in flight")
    ax.set_ylim(
        bottom=0, top=max([1.0] + [float(r.get("stream_queued_frames") or 0) for r in rows]) * 1.1
    )
    ax.set_ylabel("frames at scrape")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[3]
    ax.step(
        t, [r.get("lag_p99_le_ms") for r in rows], where="pre", marker=".", label="p99 (≤ bucket)"
    )
    ax.plot(t, [r.get("lag_max_ms") for r in rows], ls=":", marker="x", label="max (last 10 s)")
    ax.axhline(args.lag_p99_max_ms, color="tab:red", ls="--", label=f"{args.lag_p99_max_ms:g} ms")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.1)
    ax.set_ylabel("event-loop lag (ms)")
    ax.set_xlabel("seconds since the server was up (grey: minting + connecting, yellow: warm-up)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(run: Run, verdict: dict[str, Any], failures: list[str]) -> str:
    args, fig = run.args, run.figures
    pub = fig.get("publish", {})
    rss, lag = verdict.get("rss", {}), verdict.get("lag", {})
    connecting = verdict.get("lag_while_connecting", {})
    rows = run.sampler.rows if run.sampler is not None else []
    publishing = [r for r in rows if r["phase"] in PUBLISH_PHASES]
    cpu = [r["server_cpu"] for r in publishing if r.get("server_cpu") is not None]
    others = [r["others_cpu"] for r in publishing if r.get("others_cpu") is not None]
    fds = [r["open_fds"] for r in rows]
    first = rows[0] if rows else {}

    def most(key: str) -> str:
        return fmt(max((r.get(key) or 0 for r in rows), default=None))

    def joined(*values: str) -> str:
        return " / ".join(values)

    lines = [
        ("status", ("PASS" if not failures else "FAIL") + f" ({run.status})"),
        (
            "subscribers requested / connected",
            joined(fmt(args.subscribers), fmt(fig.get("connected"))),
        ),
        ("topics × subscribers each", f"{args.topics} × ~{args.subscribers // args.topics}"),
        (
            "token minting / connect phase",
            joined(fmt(fig.get("token_mint_s"), " s"), fmt(fig.get("connect_s"), " s"))
            + f" (per client process: {fig.get('client_connect_s')})",
        ),
        (
            "publish rate / duration / warm-up",
            joined(f"{args.rate:g} msg/s", f"{args.duration:g} s", f"{args.warmup * 100:g} %"),
        ),
        (
            "messages attempted / accepted",
            joined(fmt(pub.get("attempted")), fmt(pub.get("accepted"))),
        ),
        (
            "publish latency p50 / p99 / max",
            joined(*(fmt(pub.get(f"latency_{k}_ms")) for k in ("p50", "p99", "max"))) + " ms",
        ),
        (
            "deliveries expected / received",
            joined(fmt(fig.get("deliveries_expected")), fmt(fig.get("deliveries_received"))),
        ),
        (
            "lost / duplicates / out of order",
            joined(*(fmt(fig.get(k)) for k in ("deliveries_lost", "duplicates", "out_of_order"))),
        ),
        (
            "RSS start / baseline / end",
            joined(
                fmt(first.get("rss_mib"), " MiB"),
                fmt(rss.get("baseline_mib"), " MiB") + f" (t={fmt(rss.get('baseline_t_s'))} s)",
                fmt(rss.get("final_mib"), " MiB"),
            ),
        ),
        (
            "RSS growth after warm-up (limit)",
            (
                f"{fmt(rss.get('growth_pct'), ' %')} ({args.rss_growth_max * 100:g} %), "
                f"peak {fmt(rss.get('peak_after_warmup_mib'), ' MiB')}"
            ),
        ),
        (
            "open fds start / min / max / end",
            joined(
                fmt(first.get("open_fds")),
                fmt(min(fds, default=None)),
                fmt(max(fds, default=None)),
                fmt(fds[-1] if fds else None),
            ),
        ),
        (
            "event-loop lag p99, worst window (limit)",
            (
                f"≤ {fmt(lag.get('worst_window_p99_le_ms'))} ms ({args.lag_p99_max_ms:g} ms) over "
                f"{fmt(lag.get('windows'))} windows; whole run ≤ "
                f"{fmt(lag.get('run_p99_le_ms'))} ms; "
                f"max {fmt(lag.get('max_ms'))} ms"
            ),
        ),
        (
            "lag while minting + connecting (not judged)",
            (
                f"worst-window p99 ≤ {fmt(connecting.get('worst_window_p99_le_ms'))} ms, "
                f"max {fmt(connecting.get('max_ms'))} ms"
            ),
        ),
        (
            "queued frames, most seen (all / fullest)",
            joined(most("stream_queued_frames"), most("stream_queue_depth_max")),
        ),
        (
            "server CPU/wall while publishing",
            f"mean {fmt(sum(cpu) / len(cpu) if cpu else None)}, max {fmt(max(cpu, default=None))}",
        ),
        (
            "other processes' CPU while publishing",
            (
                f"mean {fmt(sum(others) / len(others) if others else None)}, "
                f"max {fmt(max(others, default=None))} cores (not ours: a shared machine if > 0.1)"
            ),
        ),
        ("server log records by level", str(fig.get("server_log", {}).get("levels"))),
        (
            "cpu_count / load average after",
            f"{fig.get('machine', {}).get('cpu_count')} / {[round(x, 2) for x in os.getloadavg()]}",
        ),
    ]
    width = max(len(k) for k, _ in lines)
    body = [f"{k.ljust(width)}  {v}" for k, v in lines]
    rule = "-" * min(100, max(len(line) for line in body))
    return "\n".join(["soak", rule, *body, rule])


def report(run: Run) -> int:
    """Print the table and verdict, write CSV, PNG and JSON; the exit code."""
    failures, verdict = evaluate(run)
    stamp = results_stamp()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    rows = run.sampler.rows if run.sampler is not None else []
    csv_path = RESULTS_DIR / f"soak-{stamp}.csv"
    png_path = RESULTS_DIR / f"soak-{stamp}.png"
    write_csv(csv_path, rows)
    try:
        write_chart(png_path, run, verdict)
    except Exception as exc:
        run.notes.append(f"chart not written: {type(exc).__name__}: {exc}")
    log = run.figures.get("server_log", {})
    if not failures:
        log.pop("tail", None)
    print(table(run, verdict, failures))
    for note in run.notes:
        print("note:", note)
    if log.get("problems"):
        print(f"server log warnings and errors (last {LOG_TAIL_LINES}):")
        for line in log["problems"]:
            print("  " + line[:400])
    json_path = write_results(
        "soak",
        stamp=stamp,
        status=run.status,
        passed=not failures,
        failures=failures,
        verdict=verdict,
        timed_out=run.timed_out,
        args=run.args,
        notes=run.notes,
        samples=[{k: v for k, v in r.items() if k != "lag_buckets"} for r in rows],
        **run.figures,
    )
    print(f"results: {csv_path}, {png_path.name}, {json_path.name}")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print("PASS: RSS, message loss and event-loop lag within limits")
    return 1 if failures else 0


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n", 1)[0]
    )
    add = parser.add_argument
    add("--duration", type=float, default=600.0, help="publishing time, s (default: 600)")
    add("--subscribers", type=int, default=5000, help="WebSocket subscribers (default: 5000)")
    add("--topics", type=int, default=50, help="topics, subscribers split evenly (default: 50)")
    add("--rate", type=float, default=20.0, help="messages/s over all topics (default: 20)")
    add("--warmup", type=float, default=0.2, help="share of --duration before the RSS baseline")
    add("--sample-interval", type=float, default=10.0, help="seconds between samples")
    add("--rss-growth-max", type=float, default=0.10, help="fail above this RSS growth (0.10)")
    add("--lag-p99-max-ms", type=float, default=100.0, help="fail above this lag p99 (100 ms)")
    add("--client-procs", type=int, default=2, help="subscriber processes (default: 2)")
    add("--concurrency", type=int, default=8, help="publishes in flight at most (default: 8)")
    add("--connect-concurrency", type=int, default=64, help="handshakes in flight per process")
    add("--mint-concurrency", type=int, default=32, help="token requests in flight")
    add("--drain", type=float, default=15.0, help="wait for stragglers after publishing (s)")
    add("--timeout", type=float, default=None, help="hard limit, s (default: duration + 300)")
    add(
        "--signatures",
        choices=("auto", "on", "off"),
        default="auto",
        help="RFC 9421 request signing, as in bench.publish_deliver (default: auto)",
    )
    args = parser.parse_args(argv)
    for name in ("subscribers", "topics", "client_procs", "concurrency", "connect_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.rate <= 0 or args.sample_interval <= 0:
        parser.error("--duration, --rate and --sample-interval must be positive")
    if not 0 <= args.warmup < 1:
        parser.error("--warmup is a share of --duration: 0 <= warmup < 1")
    if args.topics > args.subscribers:
        parser.error("--topics must not exceed --subscribers")
    if args.timeout is None:
        args.timeout = args.duration + CONNECT_PHASE_BUDGET + TEARDOWN_BUDGET
    args.client_procs = min(args.client_procs, args.subscribers)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Last resort: whatever hangs, SIGALRM unwinds us (finally blocks stop everything).
    signal.signal(signal.SIGALRM, raise_keyboard_interrupt)
    signal.alarm(int(args.timeout) + ALARM_GRACE)
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
    tmp = Path(tempfile.mkdtemp(prefix="herald-soak-"))
    data_dir = tmp / "data"
    server: subprocess.Popen[bytes] | None = None
    try:
        run.status = "starting server"
        env = server_env(data_dir, free_port())
        init = herald_init(env)
        signer, run.figures["request_signatures"] = configure_signing(args.signatures, init, env)
        server = start_server(env, init["url"], init["ca_cert"], run.deadline)
        if signer is not None:
            time.sleep(SIGNED_START_WAIT)
        asyncio.run(soak(run, init, server.pid, signer))
        if run.status == "draining":
            run.status = "stopped at the hard timeout" if run.timed_out else "finished"
    except KeyboardInterrupt:
        run.timed_out = run.timed_out or time.time() >= run.deadline
        run.status = f"interrupted while {run.status}"
    except Exception as exc:
        run.status = f"failed while {run.status}: {type(exc).__name__}: {exc}"
        run.notes.append(traceback.format_exc())
    finally:
        stop_processes(run.procs, run.stop, run.queue)
        if server is not None:
            stop_server(server)
        run.figures["server_log"] = log_summary(data_dir / "serve.log")
        shutil.rmtree(tmp, ignore_errors=True)
        signal.alarm(0)
    return report(run)


if __name__ == "__main__":
    sys.exit(main())
