"""Webhook delivery benchmark: Standard Webhooks to a local HTTPS receiver that verifies each.

Run it from the repository root::

    python -m bench.webhook            # 50 recipients; 1,000 messages x 2, then 300 paced
    python -m bench.webhook --quick    # 10 recipients; 100 messages x 2, then 40 paced

What it does, always on 127.0.0.1 only:

1. makes a throw-away CA and a certificate for ``127.0.0.1`` with ``trustme`` and starts the
   receiver in a child process: uvicorn (httptools, uvloop) serving HTTPS with that
   certificate. It checks every request with the independent ``standardwebhooks`` package
   (``Webhook(secret).verify(body, headers)``: HMAC-SHA256 signature and timestamp
   tolerance), answers 204 when it verifies and 401 when it does not, and takes the
   publish→received latency from the payload's ``data.t``;
2. creates a temporary data directory, runs ``herald init --json`` and
   ``herald app create --scope admin --scope publish:bench.> --json`` (an admin app with its
   own Ed25519 request-signing key) and starts ``herald serve`` with
   ``HERALD_EGRESS_ALLOW=127.0.0.1/32`` (the SSRF guard lets the webhook channel reach the
   loopback receiver) and ``HERALD_EGRESS_CA_FILE`` (the trustme CA, trusted for egress);
3. ``PUT /v1/recipients/bench-wh-NNNN`` for ``--recipients`` recipients (signed, admin scope):
   one webhook endpoint each, ``https://127.0.0.1:<port>/hook/<n>`` with its own ``whsec_``
   secret;
4. **burst**: publishes ``--messages`` messages through ``POST /v1/messages:batch``
   (``--batch-size`` per request, ``--concurrency`` requests in flight), each addressed to
   ``--fanout`` recipients, and waits until every delivery has arrived: deliveries/s is the
   delivery capacity (publishing included, as it shares the server);
5. **paced**: publishes ``--paced-messages`` single messages (``POST /v1/messages``) at
   ``--rate`` messages/s (default: half of what the burst achieved), the same fan-out: the
   latency of a server that is not saturated;
6. lists the webhook deliveries that did not end ``delivered`` (``GET /v1/deliveries?state=``),
   reads the server's ``herald_deliveries_total`` counters, prints a table and writes the
   same figures to ``bench/results/webhook-<UTC time>.json``.

Every message carries ``data = {"t": time.time(), "phase": …, "seq": …}`` set right before
its request is sent. The server and the receiver are always stopped and the directory
removed, also on Ctrl-C and SIGTERM. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import queue
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._common import (
    HOST,
    LOG_TAIL_LINES,
    SATURATED,
    BenchRun,
    CpuSnapshot,
    cpu_between,
    distribution,
    fmt,
    free_port,
    herald_init,
    herald_json,
    log_summary,
    machine_facts,
    main_thread_cpu_seconds,
    raise_keyboard_interrupt,
    server_env,
    start_server,
    stop_server,
)
from bench._common import (
    write_results as common_write_results,
)

TOPIC = "bench.webhook"
WARMUP_TOPIC = "bench.warmup"  # no recipients: warms the publisher's connection only
BODY = ("Herald webhook benchmark payload. " * 8)[:200]  # 200 ASCII bytes
PHASES = ("burst", "paced")
BURST, PACED = 0, 1
QUANTILES = (50, 90, 99, 99.9)
HTTP_TIMEOUT = 30.0  # seconds per API request of the benchmark
RECEIVER_START = 30.0  # seconds the receiver may take to listen
FINAL_STATES = ("delivered", "failed", "dead", "expired")
STATES_NOT_DELIVERED = ("pending", "sending", "retrying", "failed", "dead", "expired")
PAGE = 1000  # GET /v1/deliveries page size (the server's maximum)
PAGES_MAX = 100  # pages read per state at most


def recipient_id(index: int) -> str:
    return f"bench-wh-{index:04d}"


def new_secret() -> str:
    """A Standard Webhooks secret made here, independently of Herald's own helper."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def recipients_of(seq: int, fanout: int, recipients: int) -> list[int]:
    """The recipients of message ``seq``: consecutive, wrapping, so every one gets its share."""
    return [(seq * fanout + k) % recipients for k in range(fanout)]


# -- the receiver (child process) ------------------------------------------------------------


@dataclass
class ReceiverConfig:
    port: int
    certfile: str
    keyfile: str
    secrets: list[str]  # by recipient index
    deadline: float  # time.time() after which the receiver stops, whatever happened


class Shared:
    """Counters the receiver writes and the parent polls (one writer: no locks)."""

    def __init__(self, ctx: Any) -> None:
        self.verified = ctx.RawArray("q", len(PHASES))  # unique verified deliveries per phase
        self.first_at = ctx.RawArray("d", len(PHASES))  # time.time() of the first one, or 0
        self.last_at = ctx.RawArray("d", len(PHASES))  # time.time() of the latest one, or 0
        self.rejected = ctx.RawValue("q", 0)  # requests that failed verification


class Refused(Exception):
    """A request the receiver refuses: counted under ``reason``, answered ``status``."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ReceiverApp:
    """A raw ASGI app: verify, de-duplicate by ``webhook-id``, record the latency, answer."""

    def __init__(self, cfg: ReceiverConfig, shared: Shared) -> None:
        from standardwebhooks import Webhook

        self.shared = shared
        self.hooks = {
            f"/hook/{i}": (Webhook(secret), recipient_id(i)) for i, secret in enumerate(cfg.secrets)
        }
        self.seen: set[str] = set()
        self.latencies = [array.array("d") for _ in PHASES]
        self.requests = 0
        self.body_bytes = 0
        self.duplicates = 0
        self.failures: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        more = True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        now = time.time()
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = self.handle(scope["path"], headers, body, now)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    def handle(self, path: str, headers: dict[str, str], body: bytes, now: float) -> int:
        self.requests += 1
        self.body_bytes += len(body)
        try:
            phase, sent = self.check(path, headers, body)
        except Refused as refused:
            self.failures[refused.reason] += 1
            self.shared.rejected.value += 1
            return refused.status
        delivery = headers["webhook-id"]
        if delivery in self.seen:
            self.duplicates += 1  # at-least-once: acknowledge again, count once
            return 204
        self.seen.add(delivery)
        self.latencies[phase].append(now - sent)
        shared = self.shared
        if not shared.first_at[phase]:
            shared.first_at[phase] = now
        shared.last_at[phase] = now
        shared.verified[phase] += 1
        return 204

    def check(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        """Verify one request; its phase and ``data.t``, or :class:`Refused`."""
        hook = self.hooks.get(path)
        if hook is None:
            raise Refused("unknown path", 404)
        webhook, recipient = hook
        try:
            payload = webhook.verify(body, headers)
        except Exception as exc:
            raise Refused(f"{type(exc).__name__}: {str(exc)[:80]}", 401) from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("t"), float):
            raise Refused("verified, but no data.t in the payload", 400)
        if payload.get("recipient") != recipient:
            raise Refused("verified, but for another recipient", 400)
        phase = data.get("phase")
        if phase not in (BURST, PACED):
            raise Refused("verified, but no known data.phase", 400)
        return int(phase), float(data["t"])

    def result(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "verified_unique": len(self.seen),
            "duplicates": self.duplicates,
            "failures": dict(self.failures),
            "body_bytes_avg": round(self.body_bytes / self.requests, 1) if self.requests else None,
        }


def receiver_main(cfg: ReceiverConfig, out: Any, stop: Any, shared: Shared) -> None:
    """Entry point of the receiver process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(receiver_run(cfg, out, stop, shared, uvloop_used=loop_factory is not None))
    except BaseException:
        out.put(("error", traceback.format_exc()))


async def receiver_run(
    cfg: ReceiverConfig, out: Any, stop: Any, shared: Shared, *, uvloop_used: bool
) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the parent stops this server through ``stop``, not with signals

    app = ReceiverApp(cfg, shared)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=cfg.port,
        ssl_certfile=cfg.certfile,
        ssl_keyfile=cfg.keyfile,
        http="httptools",
        ws="none",
        lifespan="off",
        loop="none",
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    task = asyncio.create_task(server.serve())
    give_up = min(cfg.deadline, time.time() + RECEIVER_START)
    while not server.started:
        if task.done() or time.time() >= give_up:
            raise RuntimeError(f"the receiver did not start listening on {HOST}:{cfg.port}")
        await asyncio.sleep(0.02)
    out.put(("ready", {"pid": os.getpid(), "uvloop": uvloop_used, "http": "httptools"}))
    while not stop.is_set() and time.time() < cfg.deadline and not task.done():
        await asyncio.sleep(0.1)
    server.should_exit = True
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, SystemExit):
        await asyncio.wait_for(task, 10)
    result = app.result()
    result["cpu_total_s"] = round(time.process_time(), 3)
    out.put(("result", result, [lat.tobytes() for lat in app.latencies]))


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    certfile: Path
    keyfile: Path


def make_pki(directory: Path) -> Pki:
    """A trustme CA and a certificate for 127.0.0.1 (and localhost), written as PEM files."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    pki = Pki(directory / "ca.pem", directory / "receiver.pem", directory / "receiver.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(pki.keyfile))
    return pki


@dataclass
class Run(BenchRun):
    """This benchmark's run: the receiver process and what it reported."""

    receiver: Any = None  # the receiver's multiprocessing.Process
    queue: Any = None
    stop: Any = None
    shared: Shared | None = None
    receiver_result: tuple[dict[str, Any], list[bytes]] | None = None
    server_pid: int | None = None


def start_receiver(run: Run, pki: Pki, hook_secrets: list[str]) -> int:
    """Spawn the receiver and wait until it listens; returns its port."""
    ctx = mp.get_context("spawn")
    run.queue, run.stop, run.shared = ctx.Queue(), ctx.Event(), Shared(ctx)
    port = free_port()
    cfg = ReceiverConfig(port, str(pki.certfile), str(pki.keyfile), hook_secrets, run.deadline)
    run.receiver = ctx.Process(
        target=receiver_main, args=(cfg, run.queue, run.stop, run.shared), name="bench-receiver"
    )
    run.receiver.start()
    give_up = min(run.deadline, time.time() + RECEIVER_START + 15)
    while time.time() < give_up:
        try:
            item = run.queue.get(timeout=0.2)
        except queue.Empty:
            if not run.receiver.is_alive():
                break
            continue
        if item[0] == "ready":
            run.figures["receiver"] = item[1]
            return port
        if item[0] == "error":
            raise RuntimeError(f"the receiver failed to start:\n{item[1]}")
    raise RuntimeError("the receiver did not get ready in time")


def stop_receiver(run: Run) -> None:
    """Ask the receiver to stop, collect its result (bounded), then make sure it is gone."""
    proc = run.receiver
    if proc is None:
        return
    run.stop.set()
    give_up = time.monotonic() + 20
    while run.receiver_result is None and time.monotonic() < give_up:
        try:
            item = run.queue.get(timeout=0.2)
        except queue.Empty:
            if not proc.is_alive():
                break
            continue
        except (OSError, EOFError, ValueError):
            break
        if item[0] == "result":
            run.receiver_result = (item[1], item[2])
        elif item[0] == "error":
            run.notes.append(f"the receiver failed:\n{item[1]}")
    proc.join(timeout=5)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if run.receiver_result is None:
        run.notes.append("the receiver never reported: its latencies are missing")


@dataclass
class Api:
    """The admin app's clients: the SDK publisher and a signed raw client for the rest."""

    pub: Any  # herald.client.AsyncPublisher
    http: Any  # httpx.AsyncClient
    signer: Any  # herald.client.RequestSigner

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API request with the app's bearer token, signed (RFC 9421) unless safe."""
        headers = {
            "Authorization": f"Bearer {await self.pub.token()}",
            "Accept": "application/json",
        }
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        request = self.http.build_request(method, path, content=content, headers=headers)
        if method not in {"GET", "HEAD"}:
            request = self.signer.sign(request)
        return await self.http.send(request)


async def put_recipients(run: Run, api: Api, url: str, hook_secrets: list[str]) -> None:
    sem = asyncio.Semaphore(8)

    async def one(index: int, secret: str) -> None:
        endpoint = {"channel": "webhook", "url": f"{url}/hook/{index}", "secret": secret}
        async with sem:
            response = await api.call(
                "PUT", f"/v1/recipients/{recipient_id(index)}", {"endpoints": [endpoint]}
            )
        if response.status_code != 200:
            raise RuntimeError(f"PUT recipient answered {response.status_code}: {response.text}")

    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(one(i, s) for i, s in enumerate(hook_secrets))), run.remaining()
    )
    run.figures["recipients_put_s"] = round(time.monotonic() - started, 3)


def message(seq: int, phase: int, now: float, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "topic": TOPIC,
        "title": f"bench {PHASES[phase]} {seq}",
        "body": BODY,
        "data": {"t": now, "phase": phase, "seq": seq},
        "recipients": [recipient_id(i) for i in recipients_of(seq, args.fanout, args.recipients)],
    }


@dataclass
class Published:
    attempted: int = 0
    accepted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_send: float | None = None
    last_send: float | None = None
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)

    def sent(self, now: float) -> None:
        self.first_send = now if self.first_send is None else min(self.first_send, now)
        self.last_send = now if self.last_send is None else max(self.last_send, now)

    def figures(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "accepted": self.accepted,
            "errors": dict(self.errors),
            "request_latency_ms": distribution(self.latencies, (50, 99)),
            "schedule_lag_max_ms": round(max(self.lags) * 1000, 3) if self.lags else None,
        }


async def publish_burst(run: Run, api: Api) -> Published:
    """``--messages`` messages through ``POST /v1/messages:batch``, as fast as it answers."""
    from herald.client import HeraldClientError, PublishResult

    args, out = run.args, Published()
    sem = asyncio.Semaphore(args.concurrency)

    async def one(first: int) -> None:
        seqs = range(first, min(first + args.batch_size, args.messages))
        async with sem:
            if time.time() >= run.deadline:
                out.errors["not sent: hard timeout"] += len(seqs)
                return
            out.attempted += len(seqs)
            started, now = time.perf_counter(), time.time()
            out.sent(now)
            batch = [message(seq, BURST, now, args) for seq in seqs]
            try:
                results = await asyncio.wait_for(api.pub.publish_batch(batch), run.remaining())
            except (HeraldClientError, TimeoutError) as exc:
                out.errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += len(seqs)
                return
            out.latencies.append(time.perf_counter() - started)
        for result in results:
            if isinstance(result, PublishResult):
                out.accepted += 1
            else:
                out.errors[str(result)[:120]] += 1

    await asyncio.gather(*(one(first) for first in range(0, args.messages, args.batch_size)))
    return out


async def publish_paced(run: Run, api: Api, rate: float) -> Published:
    """``--paced-messages`` single publishes at ``rate``/s, at most ``--concurrency`` in flight."""
    from herald.client import HeraldClientError

    args, out = run.args, Published()
    sem = asyncio.Semaphore(args.concurrency)

    async def one(seq: int) -> None:
        try:
            started, now = time.perf_counter(), time.time()
            out.sent(now)
            m = message(seq, PACED, now, args)
            await asyncio.wait_for(
                api.pub.publish(
                    m["topic"],
                    title=m["title"],
                    body=m["body"],
                    data=m["data"],
                    recipients=m["recipients"],
                ),
                max(run.remaining(), 0.1),
            )
            out.latencies.append(time.perf_counter() - started)
            out.accepted += 1
        except (HeraldClientError, TimeoutError) as exc:
            out.errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1
        finally:
            sem.release()

    tasks: list[asyncio.Task[None]] = []
    t0 = time.monotonic() + 0.01
    for seq in range(args.paced_messages):
        scheduled = t0 + seq / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.time() >= run.deadline:
            run.timed_out = True
            out.errors["not sent: hard timeout"] += args.paced_messages - seq
            break
        await sem.acquire()
        out.lags.append(time.monotonic() - scheduled)
        out.attempted += 1
        tasks.append(asyncio.create_task(one(seq)))
    if tasks:
        await asyncio.gather(*tasks)
    return out


async def await_deliveries(run: Run, phase: int, expected: int, rejected_before: int) -> str:
    """Wait until ``expected`` deliveries of ``phase`` arrived (verified or refused), the
    arrivals stall for ``--stall`` s, the receiver dies, or the hard timeout."""
    shared = run.shared
    assert shared is not None
    last, changed = -1, time.monotonic()
    while True:
        got = shared.verified[phase]
        refused = shared.rejected.value - rejected_before
        if got + refused >= expected:
            return "complete"
        if time.time() >= run.deadline:
            run.timed_out = True
            return "timeout"
        if not run.receiver.is_alive():
            return "receiver died"
        if got + refused != last:
            last, changed = got + refused, time.monotonic()
        elif time.monotonic() - changed > run.args.stall:
            run.notes.append(
                f"{PHASES[phase]}: no delivery arrived for {run.args.stall:g} s; stopped waiting"
            )
            return "stalled"
        await asyncio.sleep(0.05)


async def run_phase(run: Run, api: Api, phase: int, rate: float | None = None) -> dict[str, Any]:
    """Publish one phase's messages and wait for their deliveries; the phase's figures."""
    shared, args = run.shared, run.args
    assert shared is not None
    assert run.server_pid is not None
    run.status = f"{PHASES[phase]} phase"
    rejected_before = shared.rejected.value
    pids = [run.receiver.pid]
    snap0 = CpuSnapshot.take(run.server_pid, pids)
    loop0 = main_thread_cpu_seconds(run.server_pid)
    load_before = [round(x, 2) for x in os.getloadavg()]
    if phase == BURST:
        published = await publish_burst(run, api)
    else:
        assert rate is not None
        published = await publish_paced(run, api, rate)
    publish_done = time.time()
    expected = published.accepted * args.fanout
    outcome = await await_deliveries(run, phase, expected, rejected_before)
    snap1 = CpuSnapshot.take(run.server_pid, pids)
    loop1 = main_thread_cpu_seconds(run.server_pid)
    verified = int(shared.verified[phase])
    last_at = shared.last_at[phase] or None
    first_send = published.first_send
    window = (last_at - first_send) if last_at and first_send else None
    cpu = cpu_between(snap0, snap1)
    if loop0 is not None and loop1 is not None:
        cpu["server_loop_thread"] = round((loop1 - loop0) / max(cpu["wall_s"], 1e-9), 3)
    fig: dict[str, Any] = {
        "outcome": outcome,
        "publish": published.figures(),
        "publish_span_s": round(publish_done - first_send, 3) if first_send else None,
        "deliveries_expected": expected,
        "deliveries_verified": verified,
        "deliveries_missing": max(0, expected - verified),
        "refused_by_receiver": int(shared.rejected.value - rejected_before),
        "delivery_window_s": round(window, 3) if window else None,
        "deliveries_per_s": round(verified / window, 1) if window and verified else None,
        "cpu": cpu,
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if rate is not None:
        span = (published.last_send or 0.0) - (first_send or 0.0)
        fig["rate_target"] = rate
        fig["rate_achieved"] = (
            round(published.attempted / (span + 1.0 / rate), 2) if first_send else None
        )
        fig["deliveries_per_s_target"] = round(rate * args.fanout, 1)
    if cpu.get("server") is not None and verified:
        per_delivery = cpu["server"] * cpu["wall_s"] / verified
        fig["server_cpu_us_per_delivery"] = round(per_delivery * 1e6, 1)
        fig["server_deliveries_per_cpu_s"] = round(1.0 / per_delivery)
    return fig


def paced_rate(run: Run) -> tuple[float, str]:
    """``--rate``, or half of what the burst delivered, in messages/s."""
    args = run.args
    if args.rate > 0:
        return args.rate, "--rate"
    burst = run.figures.get("burst", {}).get("deliveries_per_s")
    if burst:
        rate = max(0.5, round(burst / 2 / args.fanout, 1))
        return rate, f"auto: half the burst's {burst:g} deliveries/s ÷ fan-out {args.fanout}"
    return 5.0, "auto: no burst figure, 5 msgs/s"


async def undelivered(api: Api) -> dict[str, Any]:
    """The webhook deliveries in each state other than ``delivered`` (bounded paging)."""
    counts: dict[str, int] = {}
    errors: Counter[str] = Counter()
    for state in STATES_NOT_DELIVERED:
        params = f"state={state}&limit={PAGE}"
        counts[state] = 0
        for _ in range(PAGES_MAX):
            response = await api.call("GET", f"/v1/deliveries?{params}")
            if response.status_code != 200:
                raise RuntimeError(f"GET /v1/deliveries answered {response.status_code}")
            page = response.json()
            for delivery in page["deliveries"]:
                if delivery["channel"] == "webhook":
                    counts[state] += 1
                    errors[f"{state}: {delivery.get('last_error')}"[:160]] += 1
            if not page["next"] or len(page["deliveries"]) < PAGE:
                break
            params = f"state={state}&limit={PAGE}&after={page['next']}"
    return {"by_state": counts, "last_errors": dict(errors.most_common(5))}


_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def delivery_counters(api: Api) -> dict[str, int]:
    """The server's ``herald_deliveries_total`` for the webhook channel, by state."""
    response = await api.http.get("/metrics")
    counters: dict[str, int] = {}
    for line in response.text.splitlines():
        if line.startswith("herald_deliveries_total{"):
            labels_text, _, value = line.rpartition(" ")
            labels = dict(_LABEL.findall(labels_text))
            if labels.get("channel") == "webhook":
                counters[labels.get("state", "?")] = int(float(value))
    return counters


async def settled_counters(run: Run, api: Api, expected: int) -> dict[str, int]:
    """The server's webhook counters once ``expected`` deliveries reached a final state.

    The receiver counts a delivery before the server commits ``delivered``: give the server
    up to ``--stall`` seconds to record the last outcomes before listing what is left.
    """
    give_up = min(run.deadline, time.time() + run.args.stall)
    while True:
        counters = await delivery_counters(api)
        if sum(counters.get(s, 0) for s in FINAL_STATES) >= expected or time.time() >= give_up:
            return counters
        await asyncio.sleep(0.2)


async def run_bench(
    run: Run, init: dict[str, Any], app: dict[str, Any], port: int, hook_secrets: list[str]
) -> None:
    import httpx

    from herald.client import AsyncPublisher, RequestSigner

    args, fig = run.args, run.figures
    signer = RequestSigner.from_key_file(app["signing_keyid"], app["signing_key_file"])
    fig["request_signatures"] = f"on (admin app, Ed25519 key {app['signing_keyid']})"
    verify = ssl.create_default_context(cafile=init["ca_cert"])
    async with (
        AsyncPublisher(
            init["url"],
            app["client_id"],
            app["client_secret"],
            ca=init["ca_cert"],
            max_retries=0,
            signer=signer,
        ) as pub,
        httpx.AsyncClient(
            base_url=init["url"], verify=verify, trust_env=False, timeout=HTTP_TIMEOUT
        ) as http,
    ):
        api = Api(pub, http, signer)
        run.status = "creating recipients"
        await put_recipients(run, api, f"https://{HOST}:{port}", hook_secrets)
        # Open the publisher's connection (and fetch its token) outside the measured window.
        await asyncio.gather(
            *(pub.publish(WARMUP_TOPIC, body=BODY) for _ in range(args.concurrency))
        )
        await asyncio.sleep(0.5)
        if args.messages:
            fig["burst"] = await run_phase(run, api, BURST)
        if args.paced_messages and time.time() < run.deadline:
            rate, how = paced_rate(run)
            fig["paced_rate_source"] = how
            fig["paced"] = await run_phase(run, api, PACED, rate)
        run.status = "waiting for the server to record the outcomes"
        expected = sum(fig.get(name, {}).get("deliveries_expected", 0) for name in PHASES)
        with contextlib.suppress(httpx.HTTPError):
            fig["server_delivery_counters"] = await settled_counters(run, api, expected)
        run.status = "listing undelivered deliveries"
        fig["undelivered"] = await asyncio.wait_for(undelivered(api), max(run.remaining(), 10))


def summarise(run: Run) -> None:
    """Merge the receiver's own figures (latencies, failures, duplicates) into the phases."""
    if run.receiver_result is None:
        return
    result, raw = run.receiver_result
    run.figures["receiver_totals"] = result
    for phase, name in enumerate(PHASES):
        if name not in run.figures:
            continue
        latencies: array.array[float] = array.array("d")
        latencies.frombytes(raw[phase])
        run.figures[name]["latency_ms"] = distribution(latencies, QUANTILES)


# -- report ----------------------------------------------------------------------------------


def quantiles(dist: dict[str, Any] | None) -> str:
    dist = dist or {}
    keys = [f"p{q:g}" for q in QUANTILES] + ["max"]
    return " / ".join(fmt(dist.get(k)) for k in keys) + " ms"


def cpu_text(cpu: dict[str, Any] | None) -> str:
    if not cpu:
        return "n/a"
    receiver = (cpu.get("clients") or [None])[0]
    flag = "  RECEIVER SATURATED" if receiver is not None and receiver > SATURATED else ""
    return (
        f"server {fmt(cpu.get('server'))} (loop thread {fmt(cpu.get('server_loop_thread'))}), "
        f"receiver {fmt(receiver)}, publisher {fmt(cpu.get('publisher'))}, other processes "
        f"{fmt(cpu.get('other_processes'))}; machine busy {fmt(cpu.get('machine_busy'))} cores "
        f"over {fmt(cpu.get('wall_s'), ' s')}{flag}"
    )


def phase_rows(run: Run, phase: int) -> list[tuple[str, str]]:
    args, name = run.args, PHASES[phase]
    fig = run.figures.get(name)
    if fig is None:
        return []
    pub = fig["publish"]
    rows = [(f"── {name}", "")]
    if phase == BURST:
        how = (
            f"POST /v1/messages:batch, {args.batch_size} per request, {args.concurrency} in flight"
        )
        rows.append(
            ("messages requested / accepted", f"{args.messages:,} / {pub['accepted']:,} ({how})")
        )
        rows.append(("publish span (first → last answer)", fmt(fig.get("publish_span_s"), " s")))
    else:
        rows += [
            ("messages requested / accepted", f"{args.paced_messages:,} / {pub['accepted']:,}"),
            (
                "publish rate target / achieved",
                (
                    f"{fmt(fig.get('rate_target'))} / {fmt(fig.get('rate_achieved'))} msgs/s "
                    f"({run.figures.get('paced_rate_source')}; ≤ {args.concurrency} in flight)"
                ),
            ),
            ("deliveries/s target (rate × fan-out)", fmt(fig.get("deliveries_per_s_target"))),
            ("publish schedule lag max", fmt(pub.get("schedule_lag_max_ms"), " ms")),
        ]
    request = pub.get("request_latency_ms", {})
    rows += [
        ("publish request p50 / p99", f"{fmt(request.get('p50'))} / {fmt(request.get('p99'))} ms"),
        (
            "deliveries expected / verified / missing",
            (
                f"{fig['deliveries_expected']:,} / {fig['deliveries_verified']:,} / "
                f"{fig['deliveries_missing']:,}  ({fig['outcome']})"
            ),
        ),
        ("deliveries/s (first publish → last receipt)", fmt(fig.get("deliveries_per_s"))),
        ("delivery window", fmt(fig.get("delivery_window_s"), " s")),
        ("latency publish→received p50/p90/p99/p99.9/max", quantiles(fig.get("latency_ms"))),
        (
            "server CPU per delivery (incl. publishes)",
            (
                f"{fmt(fig.get('server_cpu_us_per_delivery'))} µs (⇒ at most "
                f"{fmt(fig.get('server_deliveries_per_cpu_s'))} deliveries per CPU-second)"
            ),
        ),
        ("CPU/wall", cpu_text(fig.get("cpu"))),
        (
            "load average before → after",
            f"{fig['load_average_before']} → {fig['load_average_after']}",
        ),
    ]
    return rows


def table(run: Run) -> str:
    args, fig = run.args, run.figures
    facts = fig.get("machine", {})
    receiver = fig.get("receiver_totals", {})
    status = run.status + ("  (TIMED OUT: figures cover what arrived)" if run.timed_out else "")
    rows: list[tuple[str, str]] = [
        ("status", status),
        (
            "recipients / fan-out per message",
            f"{args.recipients:,} webhook endpoints (one whsec_ secret each) / {args.fanout}",
        ),
        ("receiver", fig.get("receiver_stack", "n/a")),
        ("request signatures", fmt(fig.get("request_signatures"))),
        ("recipients PUT", fmt(fig.get("recipients_put_s"), " s")),
        *phase_rows(run, BURST),
        *phase_rows(run, PACED),
        ("── totals", ""),
        (
            "receiver: requests / verified / duplicates",
            (
                f"{fmt(receiver.get('requests'))} / {fmt(receiver.get('verified_unique'))} / "
                f"{fmt(receiver.get('duplicates'))} "
                f"(avg body {fmt(receiver.get('body_bytes_avg'), ' B')})"
            ),
        ),
        ("receiver: verification failures", json.dumps(receiver.get("failures", "n/a"))),
        (
            "webhook deliveries not delivered at the end",
            json.dumps(fig.get("undelivered", {}).get("by_state", "n/a")),
        ),
        (
            "server herald_deliveries_total{webhook}",
            json.dumps(fig.get("server_delivery_counters", "n/a")),
        ),
        ("cpu_count / platform", f"{facts.get('cpu_count')} / {facts.get('platform')}"),
        ("python / herald", f"{facts.get('python')} / {facts.get('herald')}"),
    ]
    errors = fig.get("undelivered", {}).get("last_errors")
    if errors:
        rows.append(("last errors of undelivered", json.dumps(errors)))
    for name in PHASES:
        errs = fig.get(name, {}).get("publish", {}).get("errors")
        if errs:
            rows.append((f"{name}: publish errors", json.dumps(errs)))
    levels = fig.get("server_log", {}).get("levels")
    if levels:
        rows.append(("server log records by level", json.dumps(levels)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" if v else k for k, v in rows]
    rule = "-" * min(100, max(len(line) for line in lines))
    return "\n".join(
        ["webhook delivery benchmark (Standard Webhooks over HTTPS)", rule, *lines, rule]
    )


def problems(run: Run) -> bool:
    fig = run.figures
    receiver = fig.get("receiver_totals", {})
    levels = fig.get("server_log", {}).get("levels", {})
    stuck = sum(fig.get("undelivered", {}).get("by_state", {}).values())
    return (
        run.timed_out
        or run.receiver_result is None
        or stuck > 0
        or bool(receiver.get("failures"))
        or any(fig.get(n, {}).get("deliveries_missing") for n in PHASES)
        or any(fig.get(n, {}).get("publish", {}).get("errors") for n in PHASES)
        or any(level in levels for level in ("error", "critical", "exception"))
    )


def report(run: Run, *, failed: bool) -> None:
    """Print the table (plus notes and server log excerpts) and write the JSON file."""
    summarise(run)
    failed = failed or problems(run)
    log = run.figures.get("server_log", {"problems": [], "tail": []})
    if not failed:
        log.pop("tail", None)  # kept (and printed) only when something failed
    print(table(run))
    for note in run.notes:
        print("note:", note)
    if log.get("problems"):
        print(f"server log warnings and errors (last {LOG_TAIL_LINES}; full lines in the JSON):")
        for line in log["problems"]:
            print("  " + line[:400])
    if failed and log.get("tail"):
        print("last lines of the server log:")
        for line in log["tail"][-10:]:
            print("  " + line[:400])
    path = common_write_results(
        "webhook",
        status=run.status,
        timed_out=run.timed_out,
        args=run.args,
        notes=run.notes,
        **run.figures,
    )
    print(f"results: {path}")


# -- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--recipients", type=int, default=50, help="webhook endpoints (50)")
    parser.add_argument("--fanout", type=int, default=2, help="recipients per message (2)")
    parser.add_argument("--messages", type=int, default=1000, help="burst messages (1000; 0: skip)")
    parser.add_argument("--batch-size", type=int, default=100, help="burst messages per request")
    parser.add_argument(
        "--paced-messages", type=int, default=300, help="paced messages (300; 0: skip)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="paced msgs/s (default 0: half the burst's rate)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="publish requests in flight")
    parser.add_argument(
        "--stall", type=float, default=20.0, help="stop waiting after this long without arrivals"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit for the run (s)")
    parser.add_argument(
        "--quick", action="store_true", help="10 recipients, fan-out 2, 100 + 40 messages"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.fanout, args.messages, args.paced_messages = 10, 2, 100, 40
    for name in ("recipients", "fanout", "batch_size", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.messages < 0 or args.paced_messages < 0 or args.messages + args.paced_messages == 0:
        parser.error("--messages and --paced-messages must not be negative, nor both 0")
    if args.fanout > args.recipients:
        parser.error("--fanout cannot exceed --recipients")
    if args.rate < 0 or args.stall <= 0 or args.timeout <= 0:
        parser.error("--rate must not be negative; --stall and --timeout must be positive")
    args.batch_size = min(args.batch_size, 1000)  # the server's batch limit
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    run = Run(args=args, deadline=time.time() + args.timeout)
    run.figures["machine"] = machine_facts()
    run.figures["receiver_stack"] = (
        f"uvicorn {version('uvicorn')} + httptools, TLS (trustme CA), verifies with "
        f"standardwebhooks {version('standardwebhooks')}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-webhook-"))
    data_dir = tmp / "data"
    server: subprocess.Popen[bytes] | None = None
    failed = False
    try:
        run.status = "starting the receiver"
        pki = make_pki(tmp / "pki")
        hook_secrets = [new_secret() for _ in range(args.recipients)]
        port = start_receiver(run, pki, hook_secrets)
        run.status = "starting the server"
        env = server_env(data_dir, free_port())
        # The receiver is on loopback, which the SSRF guard refuses unless allow-listed, and
        # its certificate comes from the trustme CA, which egress trusts only when told to.
        env.update(HERALD_EGRESS_ALLOW=f"{HOST}/32", HERALD_EGRESS_CA_FILE=str(pki.ca_file))
        init = herald_init(env)
        scopes = ("--scope", "admin", "--scope", f"publish:{TOPIC.partition('.')[0]}.>")
        app = herald_json(env, "app", "create", "--tenant", init["tenant"], *scopes)
        server = start_server(env, init["url"], init["ca_cert"], run.deadline)
        run.server_pid = server.pid
        # The server refuses signatures whose whole-second ``created`` precedes its start.
        time.sleep(1.1)
        asyncio.run(run_bench(run, init, app, port, hook_secrets))
        run.status = "finished"
    except KeyboardInterrupt:
        run.status = f"interrupted during {run.status}"
        failed = True
    except Exception as exc:
        run.status = f"failed during {run.status}: {type(exc).__name__}: {exc}"
        run.notes.append(traceback.format_exc())
        failed = True
    finally:
        # Clean-up is bounded; a second Ctrl-C must not leave the processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_receiver(run)
        if server is not None:
            stop_server(server)
        run.figures["server_log"] = log_summary(data_dir / "serve.log")
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    report(run, failed=failed)
    return 0 if run.status == "finished" and not problems(run) else 1


if __name__ == "__main__":
    sys.exit(main())
