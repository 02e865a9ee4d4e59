"""Cluster benchmark: one node vs three nodes on PostgreSQL + Redis (issue 8).

Run it from the repository root::

    python -m bench.cluster            # 3,000 messages per phase, 24 subscribers, 200 paced
    python -m bench.cluster --quick    # 600 messages per phase, 12 subscribers, 60 paced

It needs PostgreSQL (``HERALD_BENCH_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``: a maintenance database where it may
``CREATE DATABASE``) and Redis (``HERALD_BENCH_REDIS_URL``, default
``redis://127.0.0.1:6379/0``). Without either it prints why and exits 0 (skipped), so that
``make bench`` goes on.

What it does, always on 127.0.0.1 only:

1. creates a throw-away database and data dir (``herald init --json``) and starts node a
   with ``HERALD_DATABASE_URL``, ``HERALD_REDIS_URL`` and ``HERALD_PUBLIC_URL`` (its own
   URL: the cluster's public URL, as behind a load balancer);
2. **1 node**: ``--subscribers`` WebSocket subscribers (raw ``websockets``, bearer
   subscriber token) on node a; ``--messages`` messages published through
   ``POST /v1/messages:batch`` (``--batch-size`` per request, ``--concurrency`` in flight),
   every request signed (RFC 9421, Ed25519) for the public URL. Publishes/s is accepted
   messages over the publishing time; fan-out deliveries/s is frames received by all
   subscribers over the time from the first publish to the last frame;
3. starts nodes b and c (same data dir, database and Redis; other ports) and repeats
   step 2 with the subscribers spread over the three nodes and the batches sent
   round-robin to them;
4. **latency across nodes**: ``--paced`` single messages (``POST /v1/messages``) at
   ``--rate`` per second published on node a, read by one subscriber on node b;
   publish→deliver is from just before the request is sent to the frame's arrival;
5. prints a table, writes ``bench/results/cluster-<UTC>.json``, stops every node and drops
   the database (also on Ctrl-C and SIGTERM).

The publisher and the subscribers share this one process (asyncio), so client CPU is part
of the machine's load: on two cores, three nodes plus the clients measure the cluster's
*overhead*, not its scaling. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench._common import (
    distribution,
    fmt,
    free_port,
    herald_init,
    machine_facts,
    raise_keyboard_interrupt,
    server_env,
    start_server,
    stop_server,
    write_results,
)

PG_DSN = os.environ.get("HERALD_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Node settings: limits out of the way (one client address, one app, many requests).
NODE_SETTINGS = {
    "HERALD_RATE_LIMIT_APP_RATE": "100000",
    "HERALD_RATE_LIMIT_APP_BURST": "1000000",
    "HERALD_RATE_LIMIT_SUBSCRIBER_RATE": "100000",
    "HERALD_RATE_LIMIT_SUBSCRIBER_BURST": "1000000",
    "HERALD_LOCKOUT_THRESHOLD": "1000",
    "HERALD_LOCKOUT_ADDRESS_THRESHOLD": "1000000",
    "HERALD_STREAM_QUEUE_SIZE": "4096",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument("--messages", type=int, default=3000, help="messages per phase")
    parser.add_argument("--subscribers", type=int, default=24, help="subscribers per phase")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=6, help="batch requests in flight")
    parser.add_argument("--paced", type=int, default=200, help="messages of the latency phase")
    parser.add_argument("--rate", type=float, default=20.0, help="paced messages per second")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of the whole run")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.subscribers, args.paced = 600, 12, 60
    return args


# -- services -----------------------------------------------------------------------------------


async def services_available() -> str | None:
    """None when PostgreSQL and Redis answer, else why not (the benchmark is skipped)."""
    try:
        import asyncpg  # type: ignore[import-untyped]
        import redis.asyncio as redis
    except ImportError as exc:
        return f"missing client library: {exc.name}"
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"PostgreSQL not reachable ({type(exc).__name__}); set HERALD_BENCH_PG_DSN"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis not reachable ({type(exc).__name__}); set HERALD_BENCH_REDIS_URL"
    finally:
        await client.aclose()
    return None


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


async def pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# -- the cluster --------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Nodes of one data dir, database and Redis, behind node a's (public) URL."""

    data_dir: Path
    env: dict[str, str]
    init: dict[str, Any]
    deadline: float
    processes: list[Any] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def public(self) -> str:
        return self.urls[0]

    @property
    def ca(self) -> str:
        return str(self.init["ca_cert"])

    def start_node(self, name: str) -> str:
        port = int(self.env["HERALD_PORT"]) if not self.urls else free_port()
        env = {**self.env, "HERALD_PORT": str(port), "HERALD_NODE_ID": name}
        url = f"https://127.0.0.1:{port}"
        self.processes.append(start_server(env, url, self.ca, self.deadline))
        self.urls.append(url)
        return url

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_server(process)
        self.processes.clear()


def routed(request: Any, base_url: str) -> Any:
    """The same signed bytes sent to another node (as a load balancer forwards them)."""
    import httpx

    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    url = httpx.URL(base_url).copy_with(raw_path=request.url.raw_path)
    return httpx.Request(request.method, url, headers=headers, content=request.content)


@dataclass
class Client:
    """The demo app: signs for the public URL, sends to any node."""

    cluster: Cluster
    http: Any
    signer: Any
    token: str = ""

    async def send(self, node: str, method: str, path: str, **kwargs: Any) -> Any:
        request = self.http.build_request(method, self.cluster.public + path, **kwargs)
        return await self.http.send(routed(self.signer.sign(request), node))

    async def login(self) -> None:
        init = self.cluster.init
        basic = base64.b64encode(f"{init['client_id']}:{init['client_secret']}".encode()).decode()
        response = await self.send(
            self.cluster.public,
            "POST",
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}"},
        )
        response.raise_for_status()
        self.token = str(response.json()["access_token"])

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def subscriber_token(self, pattern: str) -> str:
        response = await self.send(
            self.cluster.public,
            "POST",
            "/v1/subscriber-tokens",
            json={"recipient": "bench", "topics": [pattern]},
            headers=self.bearer(),
        )
        response.raise_for_status()
        return str(response.json()["token"])


@dataclass
class Inbox:
    """Frames one subscriber read: count, and arrival times of the paced messages."""

    frames: int = 0
    last: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def subscribe(url: str, token: str, ca: str, inbox: Inbox, ready: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    context = ssl.create_default_context(cafile=ca)
    ws_url = url.replace("https://", "wss://") + "/v1/stream"
    async with connect(
        ws_url,
        ssl=context,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=1 << 20,
        compression=None,
        proxy=None,
    ) as ws:
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "ready":
                ready.set()
            elif kind == "message":
                now = time.time()
                inbox.frames += 1
                inbox.last = time.monotonic()
                sent = (frame.get("data") or {}).get("t")
                if sent is not None:
                    inbox.latencies.append(now - float(sent))


async def fan_out_phase(
    client: Client, nodes: list[str], args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """Publish ``--messages`` in batches round-robin over ``nodes``, subscribers spread
    over them; publishes/s and fan-out deliveries/s."""
    topic = f"bench.cluster.{secrets.token_hex(4)}"
    token = await client.subscriber_token(topic)
    inboxes = [Inbox() for _ in range(args.subscribers)]
    readies = [asyncio.Event() for _ in inboxes]
    readers = [
        asyncio.create_task(
            subscribe(nodes[i % len(nodes)], token, client.cluster.ca, inbox, ready)
        )
        for i, (inbox, ready) in enumerate(zip(inboxes, readies, strict=True))
    ]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(ready.wait() for ready in readies))
        batches = [
            [
                {"topic": topic, "title": f"m{n}"}
                for n in range(i, min(i + args.batch_size, args.messages))
            ]
            for i in range(0, args.messages, args.batch_size)
        ]
        queue = list(enumerate(batches))
        accepted = 0
        started = time.monotonic()

        async def worker() -> None:
            nonlocal accepted
            while queue:
                number, batch = queue.pop()
                response = await client.send(
                    nodes[number % len(nodes)],
                    "POST",
                    "/v1/messages:batch",
                    json={"messages": batch},
                    headers=client.bearer(),
                )
                if response.status_code != 202:
                    raise RuntimeError(f"batch answered {response.status_code}: {response.text}")
                accepted += sum(1 for r in response.json()["results"] if "id" in r)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        published = time.monotonic() - started
        expected = accepted * len(inboxes)
        give_up = time.monotonic() + 120
        while sum(i.frames for i in inboxes) < expected and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
        received = sum(i.frames for i in inboxes)
        delivered = max([i.last for i in inboxes] + [started]) - started
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return {
        "phase": label,
        "nodes": len(nodes),
        "messages": accepted,
        "subscribers": len(inboxes),
        "publishes_per_s": round(accepted / published, 1),
        "deliveries": received,
        "lost": expected - received,
        "deliveries_per_s": round(received / max(delivered, 1e-9), 1),
        "publish_s": round(published, 2),
        "deliver_s": round(delivered, 2),
    }


async def latency_phase(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """Paced publishes on node a, one subscriber on node b: publish→deliver latency."""
    publish_on, read_on = client.cluster.urls[0], client.cluster.urls[1]
    topic = f"bench.cluster.lat.{secrets.token_hex(4)}"
    token = await client.subscriber_token(topic)
    inbox, ready = Inbox(), asyncio.Event()
    reader = asyncio.create_task(subscribe(read_on, token, client.cluster.ca, inbox, ready))
    try:
        async with asyncio.timeout(60):
            await ready.wait()
        interval = 1.0 / args.rate
        started = time.monotonic()
        sends = []
        for n in range(args.paced):
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
            body = {"topic": topic, "title": f"p{n}", "data": {"t": time.time(), "seq": n}}
            sends.append(
                asyncio.create_task(
                    client.send(
                        publish_on, "POST", "/v1/messages", json=body, headers=client.bearer()
                    )
                )
            )
        for response in await asyncio.gather(*sends):
            if response.status_code != 202:
                raise RuntimeError(f"publish answered {response.status_code}: {response.text}")
        give_up = time.monotonic() + 60
        while len(inbox.latencies) < args.paced and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return {
        "published_on": "a",
        "read_on": "b",
        "messages": args.paced,
        "rate": args.rate,
        "lost": args.paced - len(inbox.latencies),
        "latency": distribution(inbox.latencies),
    }


async def run(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    import httpx

    from herald.client import RequestSigner

    signer = RequestSigner.from_key_file(
        cluster.init["signing_keyid"], cluster.init["signing_key_file"]
    )
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    verify = ssl.create_default_context(cafile=cluster.ca)
    async with httpx.AsyncClient(
        verify=verify, timeout=60.0, limits=limits, trust_env=False
    ) as http:
        client = Client(cluster, http, signer)
        await client.login()
        one = await fan_out_phase(client, cluster.urls[:1], args, "1 node")
        await asyncio.to_thread(cluster.start_node, "b")
        await asyncio.to_thread(cluster.start_node, "c")
        three = await fan_out_phase(client, cluster.urls, args, "3 nodes")
        latency = await latency_phase(client, args)
    return {"fan_out": [one, three], "cross_node": latency}


def print_table(results: dict[str, Any]) -> None:
    print(f"\ncluster benchmark ({os.cpu_count()} cores)")
    header = ("phase", "messages", "subs", "publishes/s", "deliveries/s", "lost")
    print("{:<9} {:>9} {:>5} {:>12} {:>13} {:>5}".format(*header))
    for row in results["fan_out"]:
        print(
            f"{row['phase']:<9} {fmt(row['messages']):>9} {row['subscribers']:>5} "
            f"{fmt(row['publishes_per_s']):>12} {fmt(row['deliveries_per_s']):>13} {row['lost']:>5}"
        )
    lat = results["cross_node"]
    dist = lat["latency"]
    print(
        f"publish on a -> deliver on b, {lat['messages']} msgs at {fmt(lat['rate'])}/s: "
        f"p50 {fmt(dist['p50'], ' ms')}, p99 {fmt(dist['p99'], ' ms')}, "
        f"max {fmt(dist['max'], ' ms')}, lost {lat['lost']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why = asyncio.run(services_available())
    if why is not None:
        print(f"bench.cluster skipped: {why}")
        return 0
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    deadline = time.time() + args.timeout
    database = f"herald_bench_{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-cluster-"))
    asyncio.run(pg_admin(f'CREATE DATABASE "{database}"'))
    cluster: Cluster | None = None
    try:
        port = free_port()
        env = server_env(workdir / "data", port)
        env.update(
            NODE_SETTINGS,
            HERALD_DATABASE_URL=with_database(PG_DSN, database),
            HERALD_REDIS_URL=REDIS_URL,
            HERALD_PUBLIC_URL=f"https://127.0.0.1:{port}",
        )
        cluster = Cluster(workdir / "data", env, herald_init(env), deadline)
        cluster.start_node("a")
        time.sleep(1.05)  # requests signed in a node's first second are refused by design
        results = asyncio.run(asyncio.wait_for(run(args, cluster), args.timeout))
    finally:
        if cluster is not None:
            cluster.stop()
        with contextlib.suppress(Exception):
            asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    path = write_results("cluster", args=args, machine=machine_facts(), **results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
