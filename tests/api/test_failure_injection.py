"""Failure injection (issue 9): the database going away, a full disk, a subscriber that
stops reading — each against a real ``herald serve`` on loopback.

- **Database unavailable mid-publish**: the node reaches its own PostgreSQL database through
  a loopback TCP proxy of the test. Cutting the proxy makes exactly this test's database
  unreachable: publishes are refused with 503 ``unavailable``, ``/readyz`` says not ready,
  nothing is half-written. Restoring it, the node recovers by itself, and every message
  that got a 202 is stored with its audit entry; ``herald audit verify`` passes.
- **Disk full**: an embedded (SQLite) node whose data dir is a tiny tmpfs. Once a ballast
  file fills it, publishes are refused with 503 ``unavailable`` (docs/api.md, "Behaviour
  under failure"), every message accepted before is still readable, and after the ballast
  is removed the node accepts again.
- **Slow subscriber**: among 20 normal WebSocket subscribers, one that never reads is cut
  off (close code 4408) while the others' publish→receive latency p99 stays within 2× of
  a baseline measured just before, on the same node with the same message size and rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.api.conftest import App, Node, base_env, free_port, run_cli
from tests.api.test_cluster_chaos import audit_verify, pg_count
from tests.api.test_streams import RawWebSocket, ws_connect

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import NodeFactory

PROBLEM = "urn:herald:problem:"
#: Bound (seconds) of every single wait of this module, and of the node's recovery.
WAIT = 10.0
RECOVERY_WAIT = 30.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unavailable(response: httpx.Response) -> None:
    """503 problem+json ``unavailable``."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 503
    assert problem["type"] == PROBLEM + "unavailable", problem


def wait_ready(client: httpx.Client, timeout: float) -> float:
    """Poll ``/readyz`` until it answers 200; the seconds it took (bounded by ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(httpx.TransportError):
            if client.get("/readyz").status_code == 200:
                return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"the node was not ready again within {timeout:.0f} s")


# -- 1. the database goes away mid-publish ------------------------------------------------------


class CuttableProxy:
    """A loopback TCP proxy (threads) between a node and PostgreSQL that can be cut and
    restored. While cut, open connections are reset and new ones closed at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def cut(self) -> None:
        """Refuse new connections and break every open one."""
        with self._lock:
            self._cut = True
            victims = list(self._open)
        for sock in victims:
            self._drop(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._stopped.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def pg_proxy(pg_fresh_dsn: str) -> Iterator[tuple[CuttableProxy, str]]:
    """A proxy to the test's database and the DSN that goes through it."""
    parts = urlsplit(pg_fresh_dsn)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}127.0.0.1:{proxy.port}"
    try:
        yield proxy, urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    finally:
        proxy.close()


def pg_state(dsn: str) -> dict[str, int]:
    """Row counts, and the rows that would be half-written, read directly (not proxied)."""
    queries = {
        "messages": "SELECT count(*) FROM messages",
        "deliveries": "SELECT count(*) FROM deliveries",
        "audit_entries": "SELECT count(*) FROM audit_entries",
        "messages_without_entry": (
            "SELECT count(*) FROM messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM audit_entries a WHERE a.idx = m.seq AND a.leaf_hash = m.leaf_hash)"
        ),
    }
    return {name: pg_count(dsn, query) for name, query in queries.items()}


def publish(client: httpx.Client, token: str, topic: str, **fields: Any) -> httpx.Response:
    return client.post("/v1/messages", json={"topic": topic, **fields}, headers=bearer(token))


#: Publishers sending at once when the database is cut off, and the bound of that phase.
IN_FLIGHT = 4
INFLIGHT_PHASE = 15.0


def publish_while(
    node: Node, token: str, cut: Callable[[], None]
) -> list[tuple[int, dict[str, Any]]]:
    """Publish from IN_FLIGHT threads, call ``cut`` once 20 were answered, and stop each
    thread after its first 503; every ``(status, body)`` answered (bounded in time)."""
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + INFLIGHT_PHASE

    def worker(w: int) -> None:
        with node.client(timeout=WAIT * 2) as client:
            for i in range(10_000):
                if time.monotonic() > deadline:
                    return
                response = publish(client, token, "fail.inflight", title=f"w{w}.{i}")
                body = response.json()
                with lock:
                    answers.append((response.status_code, body))
                if response.status_code != 202:
                    return

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    while time.monotonic() < deadline:
        with lock:
            if len(answers) >= 20:
                break
        time.sleep(0.01)
    cut()
    for thread in threads:
        thread.join(timeout=INFLIGHT_PHASE + WAIT * 2)
    return answers


@pytest.mark.postgres
def test_database_unavailable_mid_publish_is_503_and_recovers(
    node_factory: NodeFactory, pg_fresh_dsn: str, pg_proxy: tuple[CuttableProxy, str]
) -> None:
    proxy, proxied_dsn = pg_proxy
    node = node_factory(name="pgcut", HERALD_DATABASE_URL=proxied_dsn)
    node.reuse_tokens = True
    token = node.token()
    accepted: list[dict[str, Any]] = []
    with node.client(timeout=WAIT * 2) as client:
        for i in range(20):  # before; one of them with a delivery (a recipient)
            extra: dict[str, Any] = {"recipients": ["r1"]} if i == 0 else {}
            response = publish(client, token, "fail.before", title=f"b{i}", **extra)
            assert response.status_code == 202, response.text
            accepted.append(response.json())
        before = pg_state(pg_fresh_dsn)
        assert before["messages"] == 20, before
        assert before["messages_without_entry"] == 0, before

        # mid-publish: cut while IN_FLIGHT publishers are sending; each answer is a 202
        # (kept, checked below) or a 503, never anything else
        inflight = publish_while(node, token, proxy.cut)
        accepted += [body for status, body in inflight if status == 202]
        assert {status for status, _ in inflight} <= {202, 503}, inflight
        assert any(status == 503 for status, _ in inflight), "no publish was cut off"
        before = pg_state(pg_fresh_dsn)
        assert before["messages_without_entry"] == 0, before
        for i in range(10):  # during: refused, none accepted
            response = publish(client, token, "fail.during", title=f"d{i}", recipients=["r1"])
            assert_unavailable(response)
        ready = client.get("/readyz")
        assert_unavailable(ready)
        # regression: the extension "status": "not ready" replaced RFC 9457's status (503)
        assert str(ready.json()["checks"]["database"]).startswith("unavailable")
        assert pg_state(pg_fresh_dsn) == before, "something was written while cut off"

        proxy.restore()
        wait_ready(client, RECOVERY_WAIT)
        for i in range(20):  # after
            response = publish(client, token, "fail.after", title=f"a{i}")
            assert response.status_code == 202, response.text
            accepted.append(response.json())
        for body in accepted:  # every 202 is readable with its audit index
            got = client.get(f"/v1/messages/{body['id']}", headers=bearer(token))
            assert got.status_code == 200, got.text
    after = pg_state(pg_fresh_dsn)
    # a publish whose commit succeeded but whose answer was lost with the connection may
    # be stored without a 202 (its client retries it with its Idempotency-Key)
    assert len(accepted) <= after["messages"] <= len(accepted) + IN_FLIGHT, after
    assert after["messages_without_entry"] == 0, after
    assert after["deliveries"] == before["deliveries"], after
    assert audit_verify(node)  # the log is whole after the outage


# -- 2. the disk is full --------------------------------------------------------------------------

#: The tmpfs holding the embedded node's data dir: room for init and a few messages.
TMPFS_SIZE = "16m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A size-capped tmpfs mounted on ``tmp_path/fs``; unmounted afterwards."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], timeout=30, check=False)


def fill(path: Path, limit: int = 64 * 1024 * 1024) -> int:
    """Write a ballast file until the filesystem is full; the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < limit:
            try:
                written += os.write(fd, chunk)
            except OSError:
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return written


def test_disk_full_is_refused_with_503_and_loses_nothing(
    node_factory: NodeFactory, small_fs: Path
) -> None:
    data_dir = small_fs / "data"
    env = base_env(data_dir, free_port())
    init = json.loads(run_cli(env, "init", "--json").stdout)
    node = Node(
        url=init["url"],
        ca=Path(init["ca_cert"]),
        data_dir=data_dir,
        env=env,
        init=init,
        demo=App.from_cli(init),
        reuse_tokens=True,
    )
    node_factory.nodes.append(node)  # stopped with the others
    node.start()
    token = node.token()
    body = "x" * 4000
    accepted: list[str] = []
    ballast = small_fs / "ballast"
    with node.client(timeout=WAIT * 2) as client:
        for i in range(10):
            response = publish(client, token, "full.before", title=f"b{i}", body=body)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        fill(ballast)
        refused: httpx.Response | None = None
        for i in range(500):  # free pages in the database absorb a few; then it must refuse
            response = publish(client, token, "full.during", title=f"d{i}", body=body)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
                continue
            refused = response
            break
        assert refused is not None, "the node never refused on a full disk"
        assert_unavailable(refused)
        for message_id in accepted:  # nothing accepted is lost
            got = client.get(f"/v1/messages/{message_id}", headers=bearer(token))
            assert got.status_code == 200, got.text

        ballast.unlink()
        deadline = time.monotonic() + RECOVERY_WAIT
        while True:  # accepts again by itself once there is room
            response = publish(client, token, "full.after", title="a", body=body)
            if response.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert response.status_code == 202, response.text
        accepted.append(response.json()["id"])
        for message_id in accepted:
            got = client.get(f"/v1/messages/{message_id}", headers=bearer(token))
            assert got.status_code == 200, got.text
    node.stop()
    assert node.db_count("messages") == len(accepted)
    assert audit_verify(node)


# -- 3. a subscriber that stops reading ---------------------------------------------------------

#: Normal subscribers, messages per phase, publish interval (s) and body size (the slow
#: consumer is cut off once ~64 queued messages plus the socket buffers are full).
SUBSCRIBERS = 20
BASELINE_MESSAGES = 150
SLOW_PHASE_LIMIT = 600
INTERVAL = 0.04
BODY = "y" * 30_000


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def slow_consumer_cutoffs(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("herald_stream_disconnects_total{") and 'reason="slow_consumer"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_slow_subscriber_is_cut_off_without_slowing_the_others(
    node_factory: NodeFactory,
) -> None:
    node = node_factory(name="slowsub")
    node.reuse_tokens = True
    access = node.token()
    sent: dict[str, float] = {}  # message id -> monotonic time before its POST
    received: list[dict[str, float]] = [{} for _ in range(SUBSCRIBERS)]

    async with node.async_client(timeout=WAIT * 2) as client:

        async def sub_token(recipient: str) -> str:
            response = await client.post(
                "/v1/subscriber-tokens",
                json={"recipient": recipient, "topics": ["lat.>"]},
                headers=bearer(access),
            )
            assert response.status_code == 201, response.text
            return str(response.json()["token"])

        async def publish_one(i: int) -> str:
            t0 = time.monotonic()
            response = await client.post(
                "/v1/messages",
                json={"topic": "lat.x", "title": f"m{i}", "body": BODY},
                headers=bearer(access),
            )
            assert response.status_code == 202, response.text
            message_id = str(response.json()["id"])
            sent[message_id] = t0
            return message_id

        async def reader(ws: Any, inbox: dict[str, float]) -> None:
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("type") == "message":
                    inbox[frame["id"]] = time.monotonic()

        async def settle(ids: list[str]) -> None:
            async with asyncio.timeout(WAIT * 3):
                while not all(ids[-1] in inbox for inbox in received):
                    await asyncio.sleep(0.05)

        def latencies(ids: list[str]) -> list[float]:
            return [inbox[i] - sent[i] for inbox in received for i in ids]

        tokens = [await sub_token(f"fast{n}") for n in range(SUBSCRIBERS)]
        slow_token = await sub_token("slow")
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(ws_connect(node, t)) for t in tokens]
            for ws in sockets:  # ready frames
                assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "ready"
            readers = [
                asyncio.create_task(reader(ws, inbox))
                for ws, inbox in zip(sockets, received, strict=True)
            ]
            try:
                baseline_ids: list[str] = []
                for i in range(BASELINE_MESSAGES):
                    baseline_ids.append(await publish_one(i))
                    await asyncio.sleep(INTERVAL)
                await settle(baseline_ids)

                cutoffs = await slow_consumer_cutoffs(client)
                slow = await asyncio.to_thread(RawWebSocket, node, slow_token)
                try:
                    slow_ids: list[str] = []
                    cut = False
                    for i in range(SLOW_PHASE_LIMIT):
                        slow_ids.append(await publish_one(BASELINE_MESSAGES + i))
                        await asyncio.sleep(INTERVAL)
                        if i % 10 == 9 and await slow_consumer_cutoffs(client) > cutoffs:
                            cut = True
                            break
                    await settle(slow_ids)
                    frames, close_code, closed = await asyncio.to_thread(
                        slow.drain, time.monotonic() + WAIT * 3
                    )
                finally:
                    slow.close()
            finally:
                for task in readers:
                    task.cancel()
                for task in readers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    got = [f["id"] for f in frames if f.get("type") == "message"]
    assert cut, f"the slow consumer was not cut off after {len(slow_ids)} messages"
    # Cut off: the server counted a slow-consumer disconnect and closed the connection. The
    # 4408 close frame sits behind the unsent data of a client that reads nothing, so it
    # may be discarded with that data when the server aborts the connection.
    assert closed, "the slow consumer is still connected"
    assert close_code in {None, 4408}, close_code
    assert got == slow_ids[: len(got)]  # what it did get is a gap-free prefix
    assert len(got) < len(slow_ids)
    base, during = latencies(baseline_ids), latencies(slow_ids)
    base_p99, during_p99 = p99(base), p99(during)
    report = (
        f"p99 publish->receive: baseline {base_p99 * 1000:.1f} ms over {len(base)} samples, "
        f"with the slow consumer {during_p99 * 1000:.1f} ms over {len(during)} samples"
    )
    print(report)  # shown with -s: the figures of this run
    assert during_p99 <= 2 * base_p99, report
