"""Publish → receive latency at a fixed rate, one subscriber per topic, the whole secured path.

Run it from the repository root::

    python -m bench.latency                  # 1,000 msgs/s for 10 s over 100 topics
    python -m bench.latency --rate 100 --seconds 5

A throw-away ``herald serve`` (TLS, SQLite, request signatures and nonces on, as
``herald init`` makes it) gets ``--topics`` WebSocket subscribers, each on its own topic
and in its own connection, all in one client process. The publisher (another process)
sends signed ``POST /v1/messages`` (RFC 9421 Ed25519 + nonce, ``Idempotency-Key``, a 200-byte
body) open-loop at ``--rate``: message i is due at ``start + i / rate`` on the next free of
``--connections`` keep-alive connections, round-robin over the topics, and carries its due
time. Latency is receive time − due time, so a publisher that falls behind shows as
latency, not as a slower rate (no coordinated omission); the schedule lag is reported too.
Everything stays on 127.0.0.1, the run is bounded by ``--timeout``, and the server and the
client processes are always stopped.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    SATURATED,
    SIGNED_START_WAIT,
    BenchRun,
    collect_messages,
    distribution,
    fmt,
    free_port,
    herald_init,
    log_summary,
    machine_facts,
    mint_subscriber_tokens,
    open_stream,
    proc_cpu_seconds,
    raise_keyboard_interrupt,
    raise_nofile,
    request_signer,
    server_env,
    start_server,
    stop_processes,
    stop_server,
    uvloop_factory,
    write_results,
)

BODY = "x" * 200
HTTP_TIMEOUT = 10.0
DRAIN = 3.0  # seconds the subscribers read on after the last publish was answered
MAX_LISTEN = 600.0  # a subscriber process stops by itself after this, whatever happened


@dataclass
class Run(BenchRun):
    server: Any = None
    procs: list[Any] = field(default_factory=list)
    queue: Any = None
    stop: Any = None


# -- subscriber process --------------------------------------------------------------------


def subscriber_main(urls: list[str], ca: str, tokens: list[str], stop: Any, out: Any) -> None:
    """One process, one connection per topic; reports every (seq, latency) it received."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile(len(tokens) + 64)
    with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
        runner.run(subscribe(urls, ca, tokens, stop, out))


async def subscribe(urls: list[str], ca: str, tokens: list[str], stop: Any, out: Any) -> None:
    """Read every stream until the parent sets ``stop`` (publishing done and drained)."""
    from herald.client import make_ssl_context

    ctx = make_ssl_context(ca)
    seqs: array.array[int] = array.array("q")
    lat: array.array[float] = array.array("d")
    conns = await asyncio.gather(
        *(open_stream(url, ctx, token) for url, token in zip(urls, tokens, strict=True))
    )
    out.put(("ready", 0, len(conns)))
    cpu0, wall0 = time.process_time(), time.monotonic()

    async def read(ws: Any) -> None:
        async for frame in ws:
            now = time.time()
            message = json.loads(frame)
            if message.get("type") == "message":
                data = message.get("data") or {}
                seqs.append(int(data["seq"]))
                lat.append(now - float(data["due"]))

    readers = [asyncio.create_task(read(ws)) for ws in conns]
    await asyncio.to_thread(stop.wait, MAX_LISTEN)
    cpu = (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    out.put(("result", 0, {"cpu_per_wall": round(cpu, 3)}, seqs.tobytes(), lat.tobytes()))


# -- publisher process ---------------------------------------------------------------------


def publisher_main(cfg: dict[str, Any], out: Any, go: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
        runner.run(publish(cfg, out, go))


async def publish(cfg: dict[str, Any], out: Any, go: Any) -> None:
    import httpx

    from bench.publish_security import RawConnection
    from herald.client import RequestSigner, make_ssl_context

    signer = RequestSigner.from_key_file(cfg["keyid"], cfg["key_file"])
    ctx = make_ssl_context(cfg["ca"])
    url = cfg["url"].rstrip("/") + "/v1/messages"
    conns = [RawConnection(cfg["url"], ctx) for _ in range(cfg["connections"])]
    headers = {
        "Authorization": f"Bearer {cfg['token']}",
        "Content-Type": "application/json",
        "User-Agent": "herald-bench",
    }
    total, rate, topics = cfg["messages"], cfg["rate"], cfg["topics"]
    statuses: dict[str, int] = {}
    lags: array.array[float] = array.array("d")
    next_index = 0

    def request(i: int, due: float) -> Any:
        body = {
            "topic": f"bench.lat.{i % topics}",
            "body": BODY,
            "data": {"seq": i, "due": due},
        }
        req = httpx.Request(
            "POST",
            url,
            content=json.dumps(body).encode(),
            headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        return signer.sign(req)

    # Warm-up: every connection opens its TLS session with one publish to an unused topic.
    warm = [
        await c.request(
            signer.sign(httpx.Request("POST", url, json={"topic": "bench.warm"}, headers=headers))
        )
        for c in conns
    ]
    out.put(("ready", 1, [status for status, _ in warm]))
    if not await asyncio.to_thread(go.wait, 60):
        return
    start = time.time() + 0.2
    cpu0 = time.process_time()

    async def worker(conn: Any) -> None:
        nonlocal next_index
        while next_index < total:
            i = next_index
            next_index += 1
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, time.time() - due))
            try:
                status, _ = await asyncio.wait_for(conn.request(request(i, due)), HTTP_TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                await conn.reset()
                continue
            statuses[str(status)] = statuses.get(str(status), 0) + 1

    await asyncio.gather(*(worker(c) for c in conns))
    wall = max(time.time() - start, 1e-9)
    cpu = (time.process_time() - cpu0) / wall
    for conn in conns:
        await conn.aclose()
    out.put(
        (
            "result",
            1,
            {"statuses": statuses, "cpu_per_wall": round(cpu, 3), "wall_s": round(wall, 3)},
            lags.tobytes(),
        )
    )


# -- the run -------------------------------------------------------------------------------


def run(bench: Run, tmp: Path) -> None:
    args = bench.args
    data = tmp / "data"
    env = server_env(data, free_port())
    env["HERALD_RATE_LIMIT_APP_RATE"] = "1000000"  # the load, not the app's limit
    env["HERALD_RATE_LIMIT_APP_BURST"] = "1000000"
    bench.status = "starting the server"
    init = herald_init(env)
    signer, signing = request_signer(init)
    if signer is None:
        raise RuntimeError(f"request signing unavailable: {signing}")
    bench.server = start_server(env, init["url"], init["ca_cert"], bench.deadline)
    time.sleep(SIGNED_START_WAIT)
    tokens, access = asyncio.run(tokens_for(init, args.topics, bench.remaining()))
    ctx = mp.get_context("spawn")
    bench.queue, go = ctx.Queue(), ctx.Event()
    ws_base = init["url"].replace("https://", "wss://", 1) + "/v1/stream?topics="
    messages = int(args.rate * args.seconds)
    bench.stop = ctx.Event()
    bench.status = "connecting subscribers"
    urls = [f"{ws_base}bench.lat.{n}" for n in range(args.topics)]
    sub = ctx.Process(
        target=subscriber_main,
        args=(urls, init["ca_cert"], tokens, bench.stop, bench.queue),
        name="bench-subscribers",
    )
    pub = ctx.Process(
        target=publisher_main,
        args=(
            {
                "url": init["url"],
                "ca": init["ca_cert"],
                "keyid": init["signing_keyid"],
                "key_file": init["signing_key_file"],
                "token": access,
                "connections": args.connections,
                "messages": messages,
                "rate": args.rate,
                "topics": args.topics,
            },
            bench.queue,
            go,
        ),
        name="bench-publisher",
    )
    bench.procs = [sub, pub]
    sub.start()
    pub.start()
    stash: dict[str, list[Any]] = {}
    ready, errors = asyncio.run(
        collect_messages(
            bench.procs, bench.queue, "ready", count=2, until=time.time() + 60, stash=stash
        )
    )
    if len(ready) < 2 or errors:
        raise RuntimeError("clients did not get ready: " + "; ".join(errors))
    bench.status = f"publishing {messages:,} messages at {args.rate:g}/s"
    cpu0, t0 = proc_cpu_seconds(bench.server.pid), time.monotonic()
    go.set()
    until = min(bench.deadline, time.time() + args.seconds * 3 + 60)
    # The publisher answers first: the server's CPU is taken over the publishing window,
    # then the subscribers read on for stragglers and are told to stop.
    asyncio.run(
        collect_messages(bench.procs, bench.queue, "result", count=1, until=until, stash=stash)
    )
    cpu1, t1 = proc_cpu_seconds(bench.server.pid), time.monotonic()
    time.sleep(DRAIN)
    bench.stop.set()
    results, errors = asyncio.run(
        collect_messages(bench.procs, bench.queue, "result", count=2, until=until, stash=stash)
    )
    if errors:
        bench.notes.extend(errors)
    by_index = {item[1]: item for item in results}
    if 0 not in by_index or 1 not in by_index:
        raise RuntimeError("a client process sent no result")
    _, _, sub_info, seq_raw, lat_raw = by_index[0]
    _, _, pub_info, lag_raw = by_index[1]
    seqs: array.array[int] = array.array("q")
    seqs.frombytes(seq_raw)
    lat: array.array[float] = array.array("d")
    lat.frombytes(lat_raw)
    lags: array.array[float] = array.array("d")
    lags.frombytes(lag_raw)
    received = len(set(seqs))
    server_cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / (t1 - t0)
    bench.figures.update(
        messages=messages,
        accepted=pub_info["statuses"].get("202", 0),
        statuses=pub_info["statuses"],
        received=received,
        duplicates=len(seqs) - received,
        lost=messages - received,
        latency_ms=distribution(lat),
        schedule_lag_ms=distribution(lags),
        publisher_cpu_per_wall=pub_info["cpu_per_wall"],
        subscriber_cpu_per_wall=sub_info["cpu_per_wall"],
        server_cpu_per_wall=None if server_cpu is None else round(server_cpu, 3),
        achieved_rate=round(messages / pub_info["wall_s"], 1),
    )
    bench.status = "finished"


async def tokens_for(init: dict[str, Any], topics: int, timeout: float) -> tuple[list[str], str]:
    """A subscriber token per topic (recipient ``lat-n``, pattern ``bench.lat.n``) and an
    access token for the publisher."""
    from herald.client import AsyncPublisher

    signer, _ = request_signer(init)
    async with AsyncPublisher(
        init["url"], init["client_id"], init["client_secret"], ca=init["ca_cert"], signer=signer
    ) as pub:
        wanted = [(f"lat-{n}", [f"bench.lat.{n}"]) for n in range(topics)]
        tokens = await mint_subscriber_tokens(pub, wanted, ttl=3600, timeout=timeout)
        return tokens, await pub.token()


def run_lines(fig: dict[str, Any], args: argparse.Namespace, label: str) -> list[str]:
    """One run's figures, as lines of the report."""
    lat, lag = fig.get("latency_ms", {}), fig.get("schedule_lag_ms", {})
    lines = [
        f"{label}: {fig.get('status', '?')}",
        (
            f"  rate target / achieved         {args.rate:g} / {fmt(fig.get('achieved_rate'))}"
            f" msgs/s over {args.topics} topics, {args.connections} publisher connections"
        ),
        (
            f"  messages / accepted / received {fmt(fig.get('messages'))} / "
            f"{fmt(fig.get('accepted'))} / {fmt(fig.get('received'))}"
            f" (lost {fmt(fig.get('lost'))}, duplicates {fmt(fig.get('duplicates'))})"
        ),
        (
            f"  latency p50/p99/p99.9/max ms   {fmt(lat.get('p50'))} / {fmt(lat.get('p99'))} / "
            f"{fmt(lat.get('p99.9'))} / {fmt(lat.get('max'))} (due time → received)"
        ),
        f"  publisher schedule lag p99/max {fmt(lag.get('p99'))} / {fmt(lag.get('max'))} ms",
        (
            f"  CPU/wall                       server {fmt(fig.get('server_cpu_per_wall'))}, "
            f"publisher {fmt(fig.get('publisher_cpu_per_wall'))}, "
            f"subscribers {fmt(fig.get('subscriber_cpu_per_wall'))}"
        ),
    ]
    for who in ("publisher", "subscriber"):
        value = fig.get(f"{who}_cpu_per_wall")
        if isinstance(value, float) and value > SATURATED:
            lines.append(f"  the {who} process was SATURATED: it, not the server, may be the limit")
    if fig.get("statuses"):
        lines.append(f"  publish answers                {json.dumps(fig['statuses'])}")
    return lines


def summary_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and min–max over the finished runs; losses summed over all of them."""
    done = [r for r in runs if r.get("status") == "finished"]

    def spread(values: list[Any]) -> dict[str, float | None]:
        known = sorted(float(v) for v in values if isinstance(v, int | float))
        if not known:
            return {"median": None, "min": None, "max": None}
        return {"median": statistics.median(known), "min": known[0], "max": known[-1]}

    return {
        "runs": len(done),
        "latency_p50_ms": spread([r["latency_ms"].get("p50") for r in done]),
        "latency_p99_ms": spread([r["latency_ms"].get("p99") for r in done]),
        "latency_p999_ms": spread([r["latency_ms"].get("p99.9") for r in done]),
        "achieved_rate": spread([r.get("achieved_rate") for r in done]),
        "server_cpu_per_wall": spread([r.get("server_cpu_per_wall") for r in done]),
        "lost": sum(int(r.get("lost", 0)) for r in done),
        "duplicates": sum(int(r.get("duplicates", 0)) for r in done),
    }


def med(d: dict[str, float | None], unit: str = "") -> str:
    if d.get("median") is None:
        return "—"
    return f"{fmt(d['median'])}{unit} [{fmt(d['min'])}–{fmt(d['max'])}]"


def report(bench: Run, runs: list[dict[str, Any]], *, failed: bool) -> None:
    args = bench.args
    summary = summary_of(runs)
    lines = [
        "publish → receive latency, one subscriber per topic",
        "-" * 80,
        f"status: {bench.status}",
    ]
    for n, fig in enumerate(runs, 1):
        lines += run_lines(fig, args, f"run {n}")
    lines += [
        f"median [min–max] over {summary['runs']} finished run(s):",
        f"  latency p50   {med(summary['latency_p50_ms'], ' ms')}",
        f"  latency p99   {med(summary['latency_p99_ms'], ' ms')}",
        f"  latency p99.9 {med(summary['latency_p999_ms'], ' ms')}",
        f"  rate achieved {med(summary['achieved_rate'], ' msgs/s')} (target {args.rate:g})",
        f"  server CPU    {med(summary['server_cpu_per_wall'])} cores",
        f"  lost / duplicates over all runs: {summary['lost']} / {summary['duplicates']}",
    ]
    machine = machine_facts()
    lines.append(
        f"cores {machine.get('cpu_count')} / python {machine.get('python')} / "
        f"{machine.get('platform')}"
    )
    lines += [f"note: {n}" for n in bench.notes]
    if failed and runs and runs[-1].get("server_log"):
        lines += runs[-1]["server_log"].get("tail", [])
    print("\n".join(lines))
    path = write_results(
        "latency",
        status=bench.status,
        args=args,
        notes=bench.notes,
        machine=machine,
        summary=summary,
        runs=[{k: v for k, v in r.items() if k != "server_log"} for r in runs],
    )
    print(f"results: {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="msgs/s (default: 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="default: 10")
    parser.add_argument("--topics", type=int, default=100, help="one subscriber each (100)")
    parser.add_argument("--connections", type=int, default=32, help="publisher's (32)")
    parser.add_argument("--runs", type=int, default=3, help="each on a fresh server (3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="hard limit (s)")
    parser.add_argument("--quick", action="store_true", help="one run of 3 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.runs = 3.0, 1
    if min(args.rate, args.seconds, args.topics, args.connections, args.runs) <= 0:
        parser.error("--rate, --seconds, --topics, --connections and --runs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    bench = Run(args=args, deadline=time.time() + args.timeout)
    runs: list[dict[str, Any]] = []
    failed = False
    for number in range(1, args.runs + 1):
        # Each run on a fresh server: no run inherits another's database or nonces.
        bench.figures, bench.status = {}, "starting"
        tmp = Path(tempfile.mkdtemp(prefix="herald-bench-latency-"))
        try:
            run(bench, tmp)
        except KeyboardInterrupt:
            bench.status = f"interrupted while {bench.status} (run {number})"
            failed = True
        except Exception as exc:
            bench.status = (
                f"failed while {bench.status} (run {number}): {type(exc).__name__}: {exc}"
            )
            failed = True
        finally:
            stop_processes(bench.procs, bench.stop, bench.queue)
            bench.procs = []
            if bench.server is not None:
                stop_server(bench.server)
                bench.server = None
            bench.figures["server_log"] = log_summary(tmp / "data" / "serve.log")
            shutil.rmtree(tmp, ignore_errors=True)
        runs.append({**bench.figures, "status": bench.status})
        if failed:
            break
    report(bench, runs, failed=failed)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
