"""Cost of the security pipeline: POST /v1/messages with and without request signatures.

Run it from the repository root::

    python -m bench.publish_security            # 3,000 publishes x 3 runs per configuration
    python -m bench.publish_security --quick    # 500 publishes x 1 run (smoke test)

Four server configurations, measured in one run on one machine with the same workload:

1. ``bearer``: bearer token only; the server runs with ``HERALD_REQUIRE_SIGNATURES=false``
   and the requests are not signed;
2. ``ed25519``: bearer + RFC 9421 Ed25519 signature + nonce, embedded (memory) nonce store
   (the default server);
3. ``hmac``: bearer + HMAC-SHA256 signature + nonce, embedded nonce store (the key comes from
   ``herald app key add <client_id> --hmac --json``);
4. ``ed25519-redis``: as 2, with the Redis nonce store (``HERALD_REDIS_URL``); skipped with a
   note when Redis does not answer. The ``herald:nonce:<tenant>:*`` keys the run created are
   deleted afterwards.

Each configuration gets its own throw-away server (``herald init --json`` + ``herald serve``
in a temporary directory, TLS with the dev CA, a free port on 127.0.0.1). The servers are
started together and the runs are interleaved round by round (the order rotates each round),
so slow drift of the machine spreads over every configuration instead of favouring one.

A run: ``--client-procs`` processes open ``--concurrency`` keep-alive HTTPS connections in
total (one ``httpx.AsyncClient`` per connection), send the ``--warmup`` publishes, then, on a
common start signal, ``--messages`` publishes as fast as the server answers (closed loop: each
connection sends its next request when the previous one is answered). Every request carries
a 1 KiB JSON body, a bearer token and an ``Idempotency-Key``, and, in the signed
configurations, ``Content-Digest``, ``Signature-Input`` and ``Signature`` made by the SDK's
``RequestSigner`` (a fresh ``created`` and nonce per request). Latency is measured per request
from before it is built and signed until its answer is read.

Every run is bounded by ``--timeout`` (the whole benchmark), every request by a 10 s HTTP
timeout. The servers are always stopped and the directories removed, also on Ctrl-C and
SIGTERM. Nothing asserts on timings: it measures, prints a table and writes the same figures
to ``bench/results/publish_security-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ipaddress
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._common import (
    HERALD,
    LOG_TAIL_LINES,
    SATURATED,
    fmt,
    free_port,
    herald_init,
    log_summary,
    machine_busy_seconds,
    machine_facts,
    metric_samples,
    ms,
    percentile,
    proc_cpu_seconds,
    raise_keyboard_interrupt,
    raise_nofile,
    server_env,
    start_server,
    stop_server,
    tree_cpu_seconds,
    uvloop_factory,
)
from bench._common import (
    write_results as common_write_results,
)

TOPIC = "bench.security"
BODY_BYTES = 1024  # size of the JSON request body
HTTP_TIMEOUT = 10.0  # seconds per request (connect included)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def request_body(batch: int = 0) -> bytes:
    """A publish request body of exactly BODY_BYTES bytes (title + padded text body).

    With ``batch`` > 0, a ``/v1/messages:batch`` body of that many such messages.
    """
    empty = json.dumps(
        {"topic": TOPIC, "title": "security bench", "body": ""}, separators=(",", ":")
    )
    filler = ("Herald security pipeline benchmark payload. " * 40)[: BODY_BYTES - len(empty)]
    one = json.dumps(
        {"topic": TOPIC, "title": "security bench", "body": filler}, separators=(",", ":")
    )
    assert len(one) == BODY_BYTES, len(one)
    if batch:
        return ('{"messages":[' + ",".join([one] * batch) + "]}").encode("ascii")
    return one.encode("ascii")


def accepted_in(batch: int, status: int, body: bytes) -> int:
    """Messages an answer accepted: 1 for a 2xx single publish, the ids of a batch's."""
    if not 200 <= status < 300:
        return 0
    if not batch:
        return 1
    return sum(1 for item in json.loads(body).get("results", ()) if "id" in item)


# -- configurations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    signing: str | None  # None (unsigned), "ed25519" or "hmac"
    redis: bool = False
    workers: int = 1  # herald serve --workers (more than one needs Redis)


CONFIGS = (
    Config("bearer", "bearer only (signatures off, unsigned)", None),
    Config("ed25519", "bearer + Ed25519 sig + nonce (memory)", "ed25519"),
    Config("hmac", "bearer + HMAC-SHA256 sig + nonce (memory)", "hmac"),
    Config("ed25519-redis", "bearer + Ed25519 sig + nonce (Redis)", "ed25519", redis=True),
    Config(
        "ed25519-workers",
        "as ed25519-redis, 2 worker processes",
        "ed25519",
        redis=True,
        workers=2,
    ),
    Config("hmac-workers", "HMAC sig + nonce (Redis), 2 worker processes", "hmac", True, 2),
)
BASELINE = "bearer"


@dataclass
class Server:
    """One configuration's throw-away server."""

    config: Config
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    init: dict[str, Any] = field(default_factory=dict)
    signer_spec: dict[str, str] | None = None  # what a client process needs to sign
    process: subprocess.Popen[bytes] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    log: dict[str, Any] = field(default_factory=dict)
    redis_cleanup: dict[str, Any] | None = None


# -- client processes ----------------------------------------------------------------------


@dataclass
class ChildConfig:
    index: int
    url: str
    ca: str
    token: str
    signer_spec: dict[str, str] | None
    connections: int
    warmup: int
    messages: int
    deadline: float  # time.time() after which the process stops sending, whatever happened
    client: str = "raw"  # "raw" (lean HTTP/1.1 over asyncio streams) or "httpx"
    batch: int = 0  # messages per /v1/messages:batch request; 0: POST /v1/messages


def make_signer(spec: dict[str, str] | None) -> Any:
    from herald.client import RequestSigner

    if spec is None:
        return None
    if spec["alg"] == "hmac":
        return RequestSigner.from_hmac_secret(spec["keyid"], spec["secret"])
    return RequestSigner.from_key_file(spec["keyid"], spec["key_file"])


def child_main(cfg: ChildConfig, out: Any, go: Any) -> None:
    """Entry point of one client process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    raise_nofile(cfg.connections + 64)
    try:
        loop_factory = uvloop_factory()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(child_run(cfg, out, go, uvloop_used=loop_factory is not None))
    except BaseException:
        out.put(("error", cfg.index, traceback.format_exc()))


@dataclass
class Load:
    """Shared state of one process's connections during one phase."""

    total: int
    deadline: float
    started: int = 0
    accepted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    first_start: float | None = None
    last_end: float | None = None
    requests_accepted: int = 0

    def answered(self, status: int, content: bytes, elapsed: float, batch: int) -> None:
        """Count one answer: accepted messages and the latency, or the refusal's slug."""
        if 200 <= status < 300:
            self.accepted += accepted_in(batch, status, content)
            self.requests_accepted += 1
            self.latencies.append(elapsed)
            return
        slug = ""
        with contextlib.suppress(ValueError, AttributeError):
            slug = " " + str(json.loads(content).get("type", "")).rsplit(":", 1)[-1]
        self.statuses[f"HTTP {status}{slug}"] += 1


def _path(batch: int) -> str:
    return "/v1/messages:batch" if batch else "/v1/messages"


class RawConnection:
    """A lean keep-alive HTTP/1.1 client over one TLS connection (asyncio streams).

    The load generator must not be the bottleneck: httpx costs ~0.7 ms of client CPU per
    request here, this ~0.15 ms. Requests are still built and signed by the SDK's
    ``RequestSigner`` on an ``httpx.Request`` (the same signing code), then written raw.
    """

    def __init__(self, url: str, ctx: Any) -> None:
        parts = urlsplit(url)
        self.url, self.host, self.port, self.ctx = url, parts.hostname, parts.port, ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, request: Any) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ctx
            )
        assert self.reader is not None
        head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1"]
        head.extend(f"{k}: {v}" for k, v in request.headers.items())
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + request.content)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def aclose(self) -> None:
        """Close the connection; the next request opens a new one."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    reset = aclose  # after a failed request: start afresh


class HttpxConnection:
    """The same interface over one ``httpx.AsyncClient`` (``--client httpx``: the SDK's stack)."""

    def __init__(self, url: str, ctx: Any) -> None:
        import httpx

        self.url = url
        self.client = httpx.AsyncClient(
            verify=ctx,
            trust_env=False,
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def request(self, request: Any) -> tuple[int, bytes]:
        response = await self.client.send(request)
        return response.status_code, response.content

    async def reset(self) -> None:
        """Nothing to do: httpx reconnects by itself."""

    async def aclose(self) -> None:
        await self.client.aclose()


async def send_loop(
    conn: RawConnection | HttpxConnection,
    signer: Any,
    headers: dict[str, str],
    load: Load,
    batch: int,
) -> None:
    """One keep-alive connection: send publishes back to back until the phase is done."""
    import httpx

    body = request_body(batch)
    url = conn.url.rstrip("/") + _path(batch)
    perf = time.perf_counter
    while load.started < load.total and time.time() < load.deadline:
        load.started += 1
        t0 = perf()
        if load.first_start is None:
            load.first_start = time.monotonic()
        try:
            request = httpx.Request(
                "POST",
                url,
                content=body,
                headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            )
            if signer is not None:
                signer.sign(request)
            status, content = await asyncio.wait_for(conn.request(request), HTTP_TIMEOUT)
            elapsed = perf() - t0
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            load.statuses[type(exc).__name__] += 1  # TimeoutError is an OSError
            await conn.reset()
            continue
        finally:
            load.last_end = time.monotonic()
        load.answered(status, content, elapsed, batch)


async def run_phase(
    clients: Sequence[RawConnection | HttpxConnection],
    signer: Any,
    token: str,
    total: int,
    deadline: float,
    *,
    batch: int,
) -> Load:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, application/problem+json",
        "User-Agent": "herald-bench",
    }
    load = Load(total=total, deadline=deadline)
    await asyncio.gather(*(send_loop(c, signer, headers, load, batch) for c in clients))
    return load


async def child_run(cfg: ChildConfig, out: Any, go: Any, *, uvloop_used: bool) -> None:
    from herald.client import make_ssl_context

    signer = make_signer(cfg.signer_spec)
    ctx = make_ssl_context(cfg.ca)
    kind = RawConnection if cfg.client == "raw" else HttpxConnection
    clients = [kind(cfg.url, ctx) for _ in range(cfg.connections)]
    per = max(cfg.batch, 1)
    requests, warm_requests = -(-cfg.messages // per), -(-cfg.warmup // per)
    try:
        # Warm-up: every connection opens its TLS session and sends at least one publish.
        warm = await run_phase(
            clients,
            signer,
            cfg.token,
            max(warm_requests, cfg.connections),
            cfg.deadline,
            batch=cfg.batch,
        )
        out.put(("ready", cfg.index, {"accepted": warm.accepted, "errors": dict(warm.statuses)}))
        # The parent takes its CPU snapshot, then sets ``go``; nothing else runs meanwhile.
        if not go.wait(timeout=max(0.1, cfg.deadline - time.time())):
            out.put(("result", cfg.index, {"outcome": "no start signal"}, b""))
            return
        wall0, cpu0 = time.monotonic(), time.process_time()
        load = await run_phase(clients, signer, cfg.token, requests, cfg.deadline, batch=cfg.batch)
        wall1, cpu1 = time.monotonic(), time.process_time()
        result = {
            "outcome": "complete" if load.started >= requests else "timeout",
            "connections": cfg.connections,
            "sent": load.started,
            "accepted": load.accepted,
            "errors": dict(load.statuses),
            "first_start": load.first_start,
            "last_end": load.last_end,
            "wall_s": wall1 - wall0,
            "cpu_s": cpu1 - cpu0,
            "uvloop": uvloop_used,
        }
        out.put(("result", cfg.index, result, load.latencies.tobytes()))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.aclose() for c in clients)), 5)


# -- servers -------------------------------------------------------------------------------


def loopback_redis(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if urlsplit(url).scheme != "redis" or not loopback:
        raise SystemExit(f"--redis-url must be a redis:// URL on the loopback interface: {url}")
    return url


def redis_unreachable(url: str) -> str | None:
    """Why Redis at ``url`` cannot be used, or ``None`` when it answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def delete_redis_keys(url: str, server: Server, budget_s: float = 30.0) -> dict[str, Any]:
    """Delete what this run's server wrote to Redis; bounded.

    Its nonces (``herald:nonce:<tenant>:*``), its app's rate-limit bucket and its nodes'
    heartbeats (``herald:node:<node id>*``; they would expire anyway).
    """
    import redis

    from herald.state.ratelimit import bucket_key

    patterns = [
        f"herald:nonce:{server.init['tenant']}:*",
        f"herald:node:{server.env.get('HERALD_NODE_ID', '-')}*",
    ]
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    deleted, give_up = 0, time.monotonic() + budget_s
    try:
        deleted += int(client.unlink(f"herald:rl:{bucket_key('app', server.init['client_id'])}"))
        for pattern in patterns:
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(client.unlink(*batch))
                    batch = []
                if time.monotonic() > give_up:
                    break
            if batch:
                deleted += int(client.unlink(*batch))
        left = sum(1 for p in patterns for _ in client.scan_iter(match=p, count=1000))
    except (redis.RedisError, OSError) as exc:
        return {"patterns": patterns, "deleted": deleted, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()
    return {"patterns": patterns, "deleted": deleted, "left": left}


def hmac_key(env: dict[str, str], client_id: str) -> dict[str, str]:
    done = subprocess.run(
        [*HERALD, "app", "key", "add", client_id, "--hmac", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"herald app key add --hmac failed: {done.stderr.strip()}")
    made = json.loads(done.stdout)
    return {"alg": "hmac", "keyid": str(made["keyid"]), "secret": str(made["secret"])}


def prepare_server(server: Server, bench: Bench) -> None:
    """``herald init``, keys and environment for one configuration, then ``herald serve``."""
    cfg = server.config
    data_dir = server.tmp / "data"
    server.env = server_env(data_dir, free_port())
    if cfg.redis:
        server.env["HERALD_REDIS_URL"] = bench.args.redis_url
        # A name of its own, so that its node heartbeats can be deleted afterwards.
        server.env["HERALD_NODE_ID"] = f"bench-{cfg.key}-{os.getpid()}"
    if cfg.workers > 1:
        server.env["HERALD_WORKERS"] = str(cfg.workers)
    # The app's rate limit (1,000 requests/s by default) would cap the load, not the
    # pipeline: raised for these throw-away servers only.
    server.env["HERALD_RATE_LIMIT_APP_RATE"] = "1000000"
    server.env["HERALD_RATE_LIMIT_APP_BURST"] = "1000000"
    if cfg.signing is None:
        # Only for this throw-away server: the bearer-only baseline.
        server.env["HERALD_REQUIRE_SIGNATURES"] = "false"
    server.init = herald_init(server.env)
    if cfg.signing == "ed25519":
        keyid, path = server.init.get("signing_keyid"), server.init.get("signing_key_file")
        if not isinstance(keyid, str) or not isinstance(path, str):
            raise RuntimeError("`herald init --json` reported no Ed25519 signing key")
        server.signer_spec = {"alg": "ed25519", "keyid": keyid, "key_file": path}
    elif cfg.signing == "hmac":
        server.signer_spec = hmac_key(server.env, server.init["client_id"])
    server.process = start_server(
        server.env, server.init["url"], server.init["ca_cert"], bench.deadline
    )


async def fetch_token(server: Server) -> str:
    """An access token for the server's demo app (the token request is signed when needed)."""
    from herald.client import AsyncPublisher

    async with AsyncPublisher(
        server.init["url"],
        server.init["client_id"],
        server.init["client_secret"],
        ca=server.init["ca_cert"],
        max_retries=2,
        signer=make_signer(server.signer_spec),
    ) as pub:
        return await asyncio.wait_for(pub.token(), 30)


# -- one run -------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    deadline: float
    status: str = "starting"
    notes: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    procs: list[Any] = field(default_factory=list)
    queue: Any = None
    go: Any = None
    timed_out: bool = False
    figures: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())


@dataclass
class Snapshot:
    """CPU seconds used so far by the machine, the server, the client processes and us."""

    wall: float
    machine: float | None
    server: float | None
    server_main: float | None
    clients: list[float | None]
    parent: float

    @classmethod
    def take(cls, server_pid: int, client_pids: list[int]) -> Snapshot:
        return cls(
            wall=time.monotonic(),
            machine=machine_busy_seconds(),
            # With --workers the server is a supervisor and its worker processes.
            server=tree_cpu_seconds(server_pid),
            server_main=tree_cpu_seconds(server_pid, main_threads=True),
            clients=[proc_cpu_seconds(pid) for pid in client_pids],
            parent=time.process_time(),
        )


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def collect(bench: Bench, kind: str, count: int, until: float) -> list[Any]:
    """``count`` messages of ``kind`` from the client processes, until wall time ``until``."""
    got: list[Any] = []
    while len(got) < count and time.time() < until:
        try:
            item = bench.queue.get(timeout=0.05)
        except queue.Empty:
            if not any(p.is_alive() for p in bench.procs):
                with contextlib.suppress(queue.Empty):
                    while len(got) < count:
                        item = bench.queue.get(timeout=0.2)
                        if item[0] == kind:
                            got.append(item)
                break
            continue
        if item[0] == "error":
            bench.notes.append(f"client process {item[1]} failed:\n{item[2]}")
        elif item[0] == kind:
            got.append(item)
    return got


def stop_children(bench: Bench) -> None:
    """Let the client processes finish (they stop at the deadline), then terminate, kill."""
    if bench.go is not None:
        bench.go.set()  # a child still waiting for the start signal would otherwise idle
    give_up = time.monotonic() + 10
    while any(p.is_alive() for p in bench.procs) and time.monotonic() < give_up:
        with contextlib.suppress(queue.Empty, OSError, EOFError, ValueError):
            while True:  # a child cannot exit while its queue feeder holds unread data
                bench.queue.get_nowait()
        time.sleep(0.05)
    for proc in bench.procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    bench.procs = []


def group_commits(server: Server) -> tuple[float, float] | None:
    """The server's publish transactions and the requests they committed (``/metrics``)."""
    import httpx

    try:
        text = httpx.get(
            server.init["url"] + "/metrics", verify=server.init["ca_cert"], timeout=5.0
        ).text
    except httpx.HTTPError:
        return None
    found = {name: value for name, _, value in metric_samples(text)}
    commits = found.get("herald_publish_commits_total")
    requests = found.get("herald_publish_requests_committed_total")
    return None if commits is None or requests is None else (commits, requests)


def one_run(bench: Bench, server: Server, round_no: int) -> None:
    run, _ = measured_run(bench, server, round_no)
    run["order"] = sum(len(s.runs) for s in bench.servers)  # position in the whole sequence
    server.runs.append(run)


def measured_run(
    bench: Bench,
    server: Server,
    round_no: int,
    window: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[dict[str, Any], tuple[Snapshot, Snapshot]]:
    """One run: client processes, warm-up, then the measured publishes.

    ``window()`` is entered just before the start signal and left once the last answer is
    in (bench.breakdown samples the server there). Returns the run's figures and the CPU
    snapshots that bound it.
    """
    args = bench.args
    assert server.process is not None
    token = asyncio.run(fetch_token(server))
    ctx = mp.get_context("spawn")
    bench.queue, bench.go = ctx.Queue(), ctx.Event()
    procs = min(args.client_procs, args.concurrency)
    for index, (conns, warm, msgs) in enumerate(
        zip(
            shares(args.concurrency, procs),
            shares(args.warmup, procs),
            shares(args.messages, procs),
            strict=True,
        )
    ):
        child = ChildConfig(
            index=index,
            url=server.init["url"],
            ca=server.init["ca_cert"],
            token=token,
            signer_spec=server.signer_spec,
            connections=conns,
            warmup=warm,
            messages=msgs,
            deadline=bench.deadline,
            client=args.client,
            batch=args.batch,
        )
        proc = ctx.Process(
            target=child_main, args=(child, bench.queue, bench.go), name=f"bench-client-{index}"
        )
        proc.start()
        bench.procs.append(proc)
    try:
        ready = collect(bench, "ready", procs, bench.deadline)
        if len(ready) < procs:
            raise RuntimeError(f"only {len(ready)} of {procs} client processes got ready")
        warm_errors = sum((Counter(r[2]["errors"]) for r in ready), Counter())
        time.sleep(0.2)  # let the warm-up's last answers settle before the snapshot
        pids = [p.pid for p in bench.procs]
        load0 = os.getloadavg()[0]
        commits0 = group_commits(server)
        with window():
            snap0 = Snapshot.take(server.process.pid, pids)
            bench.go.set()
            results = collect(bench, "result", procs, bench.deadline + 15)
            snap1 = Snapshot.take(server.process.pid, pids)
        commits1 = group_commits(server)
    finally:
        stop_children(bench)
    run = summarise_run(bench, round_no, results, (snap0, snap1))
    if commits0 is not None and commits1 is not None and commits1[0] > commits0[0]:
        transactions = commits1[0] - commits0[0]
        run["requests_per_commit"] = round((commits1[1] - commits0[1]) / transactions, 2)
    run["warmup_errors"] = dict(warm_errors)
    run["load_average_1m_before"] = round(load0, 2)
    return run, (snap0, snap1)


def summarise_run(
    bench: Bench, round_no: int, results: list[Any], snaps: tuple[Snapshot, Snapshot]
) -> dict[str, Any]:
    latencies: array.array[float] = array.array("d")
    children = []
    for _, _, result, raw in sorted(results, key=lambda r: r[1]):
        chunk: array.array[float] = array.array("d")
        chunk.frombytes(raw)
        latencies.extend(chunk)
        children.append(result)
    ordered = sorted(latencies)
    starts = [c["first_start"] for c in children if c.get("first_start")]
    ends = [c["last_end"] for c in children if c.get("last_end")]
    window = (max(ends) - min(starts)) if starts and ends else None
    accepted = sum(c.get("accepted", 0) for c in children)
    errors = sum((Counter(c.get("errors", {})) for c in children), Counter())
    outcomes = Counter(c.get("outcome", "?") for c in children)
    if len(children) < bench.args.client_procs or outcomes.get("complete", 0) < len(children):
        bench.timed_out = bench.timed_out or time.time() >= bench.deadline
    snap0, snap1 = snaps
    wall = max(snap1.wall - snap0.wall, 1e-9)

    def per_wall(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) / wall, 3)

    server_cpu = (
        None if snap0.server is None or snap1.server is None else snap1.server - snap0.server
    )
    clients = [round(c["cpu_s"] / c["wall_s"], 3) if c.get("wall_s") else None for c in children]
    client_procs_cpu = [per_wall(a, b) for a, b in zip(snap0.clients, snap1.clients, strict=True)]
    machine = per_wall(snap0.machine, snap1.machine)
    ours = [per_wall(snap0.server, snap1.server), *client_procs_cpu]
    ours.append(per_wall(snap0.parent, snap1.parent))
    other = (
        round(max(0.0, machine - sum(v for v in ours if v is not None)), 3)
        if machine is not None and None not in ours
        else None
    )
    return {
        "round": round_no,
        "outcomes": dict(outcomes),
        "sent": sum(c.get("sent", 0) for c in children),
        "accepted": accepted,
        "errors": dict(errors),
        "window_s": round(window, 3) if window else None,
        "publishes_per_s": round(accepted / window, 1) if window else None,
        "latency_ms": {
            "p50": ms(percentile(ordered, 50)),
            "p90": ms(percentile(ordered, 90)),
            "p99": ms(percentile(ordered, 99)),
            "max": ms(ordered[-1] if ordered else None),
            "samples": len(ordered),
        },
        "server_cpu_per_wall": round(server_cpu / wall, 3) if server_cpu is not None else None,
        "server_main_thread_cpu_per_wall": per_wall(snap0.server_main, snap1.server_main),
        "server_cpu_us_per_publish": (
            round(server_cpu / accepted * 1e6, 1) if server_cpu is not None and accepted else None
        ),
        "client_cpu_per_wall": clients,
        "machine_busy": machine,
        "other_processes": other,
        "cpu_wall_s": round(wall, 3),
    }


# -- summary and report --------------------------------------------------------------------


def spread(values: list[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(known), 3),
        "min": round(min(known), 3),
        "max": round(max(known), 3),
    }


def summarise_config(server: Server) -> dict[str, Any]:
    runs = server.runs
    return {
        "runs": len(runs),
        "publishes_per_s": spread([r["publishes_per_s"] for r in runs]),
        "p50_ms": spread([r["latency_ms"]["p50"] for r in runs]),
        "p99_ms": spread([r["latency_ms"]["p99"] for r in runs]),
        "server_cpu_per_wall": spread([r["server_cpu_per_wall"] for r in runs]),
        "server_main_thread_cpu_per_wall": spread(
            [r["server_main_thread_cpu_per_wall"] for r in runs]
        ),
        "server_cpu_us_per_publish": spread([r["server_cpu_us_per_publish"] for r in runs]),
        "client_cpu_per_wall_max": spread(
            [
                max((c for c in r["client_cpu_per_wall"] if c is not None), default=None)
                for r in runs
            ]
        ),
        "other_processes": spread([r["other_processes"] for r in runs]),
        "requests_per_commit": spread([r.get("requests_per_commit") for r in runs]),
        "errors": dict(sum((Counter(r["errors"]) for r in runs), Counter())),
    }


def comparisons(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    base = summaries.get(BASELINE)
    if not base or not base["runs"]:
        return {}
    out = {}
    for key, summary in summaries.items():
        if key == BASELINE or not summary["runs"]:
            continue

        def diff(name: str, s: dict[str, Any] = summary) -> float | None:
            a, b = s[name]["median"], base[name]["median"]
            return None if a is None or b is None else round(a - b, 3)

        thr, base_thr = summary["publishes_per_s"]["median"], base["publishes_per_s"]["median"]
        out[key] = {
            "throughput_ratio": round(thr / base_thr, 3) if thr and base_thr else None,
            "added_p50_ms": diff("p50_ms"),
            "added_p99_ms": diff("p99_ms"),
            "added_server_cpu_us_per_publish": diff("server_cpu_us_per_publish"),
        }
    return out


def med_range(s: dict[str, Any], unit: str = "") -> str:
    if s["median"] is None:
        return "n/a"
    if s["min"] == s["max"]:
        return fmt(s["median"], unit)
    return f"{fmt(s['median'], unit)} [{fmt(s['min'])}–{fmt(s['max'])}]"


def render(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def table(bench: Bench) -> str:
    args, fig = bench.args, bench.figures
    facts = fig.get("machine", {})
    summaries = fig.get("configs", {})
    route = f"POST /v1/messages:batch, {args.batch} messages" if args.batch else "POST /v1/messages"
    head = [
        f"cost of the security pipeline — {route} (publishes/s counts messages)",
        (
            f"{BODY_BYTES} B JSON message, {args.concurrency} keep-alive TLS connections in "
            f"{args.client_procs} client process(es) ({args.client} client), closed loop; "
            f"{args.messages:,} publishes "
            f"× {args.runs} run(s) per configuration after {args.warmup} warm-up publishes each; "
            "median [min–max] over runs"
        ),
        f"status: {bench.status}"
        + ("  (TIMED OUT: figures cover what finished)" if bench.timed_out else ""),
        "",
    ]
    rows = [
        [
            "configuration",
            "publishes/s",
            "p50 ms",
            "p99 ms",
            "srv CPU/wall (loop)",
            "srv CPU µs/publish",
            "client CPU/wall",
            "other procs",
            "requests/commit",
            "errors",
        ]
    ]
    for n, server in enumerate(bench.servers, 1):
        name = f"{n} {server.config.key}: {server.config.label}"
        if server.skipped:
            rows.append([name, "skipped", "", "", "", "", "", "", "", ""])
            continue
        s = summaries.get(server.config.key)
        if not s or not s["runs"]:
            rows.append([name, "no runs", "", "", "", "", "", "", "", ""])
            continue
        errors = sum(s["errors"].values())
        client = s["client_cpu_per_wall_max"]
        flag = " SAT" if (client["max"] or 0.0) > SATURATED else ""
        rows.append(
            [
                name,
                med_range(s["publishes_per_s"]),
                med_range(s["p50_ms"]),
                med_range(s["p99_ms"]),
                cpu_split(s),
                med_range(s["server_cpu_us_per_publish"]),
                fmt(client["median"]) + flag,
                fmt(s["other_processes"]["median"]),
                fmt(s["requests_per_commit"]["median"]),
                fmt(errors),
            ]
        )
    lines = head + render(rows)
    comp = fig.get("vs_bearer", {})
    if comp:
        crow = [
            [
                "vs bearer only (medians)",
                "throughput ratio",
                "added p50 ms",
                "added p99 ms",
                "added srv CPU µs/publish",
            ]
        ]
        for n, server in enumerate(bench.servers, 1):
            c = comp.get(server.config.key)
            if c is None:
                continue
            crow.append(
                [
                    f"{n} {server.config.key}",
                    fmt(c["throughput_ratio"], "×"),
                    signed(c["added_p50_ms"]),
                    signed(c["added_p99_ms"]),
                    signed(c["added_server_cpu_us_per_publish"]),
                ]
            )
        lines += ["", *render(crow)]
    lines += ["", *render(run_rows(bench)), ""]
    lines += bottleneck_lines(bench)
    lines.append(
        f"cores {facts.get('cpu_count')} / python {facts.get('python')} / herald "
        f"{facts.get('herald')} / {facts.get('platform')}"
    )
    return "\n".join(lines)


def run_rows(bench: Bench) -> list[list[str]]:
    """One row per run, in the order they ran."""
    rows = [
        [
            "run (round: configuration)",
            "publishes/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "srv CPU/wall (loop)",
            "client CPU/wall",
            "other procs",
            "load 1m",
        ]
    ]
    runs = sorted(
        ((r["round"], r["order"], s.config.key, r) for s in bench.servers for r in s.runs),
        key=lambda t: (t[0], t[1]),
    )
    for round_no, _, key, r in runs:
        lat = r["latency_ms"]
        rows.append(
            [
                f"{round_no}: {key}",
                fmt(r["publishes_per_s"]),
                fmt(lat["p50"]),
                fmt(lat["p99"]),
                fmt(lat["max"]),
                f"{fmt(r['server_cpu_per_wall'])} ({fmt(r['server_main_thread_cpu_per_wall'])})",
                " + ".join(fmt(c) for c in r["client_cpu_per_wall"]),
                fmt(r["other_processes"]),
                fmt(r["load_average_1m_before"]),
            ]
        )
    return rows


def bottleneck_lines(bench: Bench) -> list[str]:
    """Say which side limited the runs, from the CPU figures."""
    runs = [r for s in bench.servers for r in s.runs]
    if not runs:
        return []
    client = max((c for r in runs for c in r["client_cpu_per_wall"] if c is not None), default=None)
    loop = max((r["server_main_thread_cpu_per_wall"] or 0.0 for r in runs), default=0.0)
    other = max((r["other_processes"] or 0.0 for r in runs), default=0.0)
    lines = []
    if client is not None:
        verdict = (
            "SATURATED: the load generator may be the limit; use --client-procs"
            if client > SATURATED
            else "not saturated: the clients are not the limit"
        )
        lines.append(f"client processes: highest CPU/wall of any run {fmt(client)} — {verdict}")
    lines.append(
        f"server event-loop thread: highest CPU/wall of any run {fmt(loop)} (1.0 = one core; "
        "the other server threads are SQLite's)"
    )
    if other > 0.1:
        lines.append(
            f"other processes used up to {fmt(other)} cores during a run: the machine was "
            "shared, figures are pessimistic and noisier"
        )
    return lines


def cpu_split(summary: dict[str, Any]) -> str:
    whole = fmt(summary["server_cpu_per_wall"]["median"])
    return f"{whole} ({fmt(summary['server_main_thread_cpu_per_wall']['median'])})"


def signed(value: float | None) -> str:
    if value is None:
        return "n/a"
    return ("+" if value >= 0 else "") + fmt(value)


def write_results(bench: Bench) -> Path:
    servers = {
        s.config.key: {
            "label": s.config.label,
            "skipped": s.skipped,
            "signing": s.config.signing,
            "nonce_store": "redis" if s.config.redis else "memory",
            "runs": s.runs,
            "server_log": s.log,
            "redis_cleanup": s.redis_cleanup,
        }
        for s in bench.servers
    }
    return common_write_results(
        "publish_security",
        status=bench.status,
        timed_out=bench.timed_out,
        args=bench.args,
        notes=bench.notes,
        **bench.figures,
        servers=servers,
    )


def report(bench: Bench, *, failed: bool) -> None:
    summaries = {s.config.key: summarise_config(s) for s in bench.servers if not s.skipped}
    bench.figures["configs"] = summaries
    bench.figures["vs_bearer"] = comparisons(summaries)
    errors = any(summary["errors"] for summary in summaries.values())
    print(table(bench))
    for note in bench.notes:
        print("note:", note)
    for server in bench.servers:
        if server.redis_cleanup is not None:
            print(f"note: {server.config.key}: Redis cleanup {json.dumps(server.redis_cleanup)}")
        expected = ["require_signatures is off"] if server.config.signing is None else []
        problems = [
            line for line in server.log.get("problems", []) if not any(e in line for e in expected)
        ]
        if problems:
            print(f"server log warnings and errors, {server.config.key} (last {LOG_TAIL_LINES}):")
            for line in problems:
                print("  " + line[:400])
        if not (failed or errors or bench.timed_out):
            server.log.pop("tail", None)
    print(f"results: {write_results(bench)}")


# -- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.publish_security", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--messages", type=int, default=3000, help="per run (default: 3000)")
    parser.add_argument("--runs", type=int, default=3, help="per configuration (default: 3)")
    parser.add_argument("--warmup", type=int, default=200, help="per run (default: 200)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="keep-alive connections (default: 64)"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="load-generating processes sharing the connections (default: 1)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(c.key for c in CONFIGS),
        help="comma-separated subset of: " + ", ".join(c.key for c in CONFIGS),
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="loopback Redis only")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="hard limit for the whole benchmark (s)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="messages per POST /v1/messages:batch request (default 0: single publishes)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: lean HTTP/1.1 over asyncio streams (default) or httpx",
    )
    parser.add_argument("--quick", action="store_true", help="500 publishes, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.runs = 500, 1
    for name in ("messages", "runs", "concurrency", "client_procs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.batch <= 1000:
        parser.error("--batch must be between 0 and 1000 (the batch route's limit)")
    if args.warmup < 0 or args.timeout <= 0:
        parser.error("--warmup must not be negative, --timeout must be positive")
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    unknown = set(keys) - {c.key for c in CONFIGS}
    if unknown or not keys:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown)) or '(none)'}")
    args.configs = [c.key for c in CONFIGS if c.key in keys]
    args.client_procs = min(args.client_procs, args.concurrency)
    args.redis_url = loopback_redis(args.redis_url)
    return args


def start_servers(bench: Bench, tmp: Path) -> None:
    """One server per selected configuration (the Redis one only when Redis answers)."""
    for cfg in CONFIGS:
        if cfg.key not in bench.args.configs:
            continue
        server = Server(config=cfg, tmp=tmp / cfg.key)
        bench.servers.append(server)
        if cfg.redis:
            why = redis_unreachable(bench.args.redis_url)
            if why is not None:
                server.skipped = f"Redis at {bench.args.redis_url} is unreachable ({why})"
                bench.notes.append(f"{cfg.key} skipped: {server.skipped}")
                continue
        bench.status = f"starting the {cfg.key} server"
        prepare_server(server, bench)
    # The memory nonce store refuses requests signed (whole seconds) before the server started.
    time.sleep(1.1)


def run_rounds(bench: Bench) -> None:
    """``--runs`` rounds; each runs every configuration once, in an order rotating per round."""
    live = [s for s in bench.servers if not s.skipped]
    for round_no in range(1, bench.args.runs + 1):
        shift = (round_no - 1) % max(1, len(live))
        for server in live[shift:] + live[:shift]:
            bench.status = f"round {round_no}/{bench.args.runs}: {server.config.key}"
            if bench.remaining() <= 0:
                bench.timed_out = True
            else:
                one_run(bench, server, round_no)
            if bench.timed_out:
                bench.status = f"timed out (--timeout) during {bench.status}"
                return
    bench.status = "finished"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    bench = Bench(args=args, deadline=time.time() + args.timeout)
    bench.figures["machine"] = machine_facts()
    bench.figures["request_body_bytes"] = BODY_BYTES
    raise_nofile(args.concurrency * 2 + 256)
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-security-"))
    failed = False
    try:
        start_servers(bench, tmp)
        run_rounds(bench)
    except KeyboardInterrupt:
        bench.status = f"interrupted during {bench.status}"
        failed = True
    except Exception as exc:
        bench.status = f"failed during {bench.status}: {type(exc).__name__}: {exc}"
        bench.notes.append(traceback.format_exc())
        failed = True
    finally:
        stop_children(bench)
        for server in bench.servers:
            if server.process is not None:
                stop_server(server.process)
            server.log = log_summary(server.tmp / "data" / "serve.log")
            if server.config.redis and not server.skipped and server.init.get("tenant"):
                server.redis_cleanup = delete_redis_keys(args.redis_url, server)
        shutil.rmtree(tmp, ignore_errors=True)
    report(bench, failed=failed or bench.timed_out)
    return 0 if bench.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
