"""Cluster operations (issue 8): ``herald cluster status``, graceful stop, ``cluster run``.

Real ``herald serve`` processes on PostgreSQL + Redis. Node names carry a random prefix
so that nodes of other tests sharing the Redis never count here, and every Redis key a
test's nodes wrote is removed at its end.

- ``status`` lists every node with its version and URL and no bus lag once a publish has
  settled; a node stopped gracefully is gone from it at once (it removes its heartbeat),
  a killed one once its heartbeat's TTL has run out.
- A node stopped with SIGTERM gives its delivery leases back: the other node delivers at
  once although the lease (300 s) is far from over. A SIGKILLed node's lease (2 s here)
  runs out and another node reclaims the delivery.
- ``herald cluster run`` starts three healthy nodes and stops them all on SIGINT.
- Unreachable Redis or database: one line, non-zero exit; no cluster: said so, exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from tests.api.conftest import HERALD, NodeFactory, base_env, forget_redis_keys, run_cli
from tests.api.conftest import Node as HeraldNode
from tests.api.peers import (
    DELIVERY_WAIT,
    Node,
    Pki,
    Receiver,
    channel_settings,
    new_secret,
    unique,
    wait_until,
    webhook,
)

import herald
from herald.core.nodes import node_key, owner_node

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT = 30.0  # seconds: the bound of the waits in this module unless said otherwise
HOLD = 60.0  # seconds a held webhook answer waits for the test to let it go
BEAT_GONE = 20.0  # seconds: a killed node's heartbeat (6 s TTL) is gone well within this


def status(node: HeraldNode, **env: str) -> dict[str, Any]:
    """``herald cluster status --json`` with the node's settings."""
    result = run_cli({**node.env, **env}, "cluster", "status", "--json")
    return dict(json.loads(result.stdout))


def listed(doc: dict[str, Any], names: set[str]) -> dict[str, dict[str, Any]]:
    """The status entries of these nodes (other tests' nodes may share the Redis)."""
    return {n["name"]: n for n in doc["nodes"] if n["name"] in names}


def forget_nodes(url: str, names: set[str]) -> None:
    with redis.Redis.from_url(url, socket_timeout=5.0) as r:
        r.delete(*(node_key(name) for name in names))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def held_receiver(pki: Pki) -> Iterator[Receiver]:
    """A webhook receiver that holds every answer until ``release`` is set (or HOLD)."""
    receiver = Receiver(pki.server_context).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def let_go(receiver: Receiver, path: str) -> None:
    """Answer held requests now, and later ones at once."""
    receiver.hooks[path].hold = 0.0
    receiver.release.set()


def delivery_on(node: HeraldNode, token: str, message_id: str) -> dict[str, Any]:
    """The message's webhook delivery, read from ``node`` (GETs are not signed)."""
    response = httpx.get(
        f"{node.url}/v1/messages/{message_id}",
        headers=bearer(token),
        verify=ssl.create_default_context(cafile=str(node.ca)),
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    (found,) = [d for d in response.json()["deliveries"] if d["channel"] == "webhook"]
    return dict(found)


# -- status ---------------------------------------------------------------------------------------


@pytest.fixture
def three(
    redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory
) -> Iterator[list[HeraldNode]]:
    """Nodes <prefix>-a, -b, -c: a on the public URL, b and c peers of its data dir."""
    prefix = "ops" + secrets.token_hex(4)
    names = {f"{prefix}-{x}" for x in "abc"}
    port = node_factory.free_port()
    first = node_factory(
        name="ops3",
        start=False,
        port=port,
        HERALD_DATABASE_URL=pg_fresh_dsn,
        HERALD_REDIS_URL=redis_url,
        HERALD_PUBLIC_URL=f"https://127.0.0.1:{port}",
        HERALD_NODE_ID=f"{prefix}-a",
    )
    try:
        first.start()
        yield [
            first,
            node_factory.peer(first, HERALD_NODE_ID=f"{prefix}-b"),
            node_factory.peer(first, HERALD_NODE_ID=f"{prefix}-c"),
        ]
    finally:
        node_factory.stop_all()
        forget_nodes(redis_url, names)
        forget_redis_keys(redis_url, first.demo.tenant, [first.demo.client_id])


def test_status_lists_every_node_and_no_lag_once_a_publish_settled(
    three: list[HeraldNode],
) -> None:
    first = three[0]
    names = {node.env["HERALD_NODE_ID"] for node in three}
    token = first.token()
    with first.client(headers=bearer(token)) as client:
        response = client.post("/v1/messages", json={"topic": "ops.status", "title": "hello"})
    assert response.status_code == 202, response.text
    seq = response.json()["audit"]["index"]

    def settled() -> dict[str, Any] | None:
        doc = status(first)
        nodes = listed(doc, names)
        done = len(nodes) == 3 and all(
            n["lag"] == 0 and n["bus"]["cursor"] >= seq for n in nodes.values()
        )
        return doc if done else None

    doc = wait_until(settled, lambda: f"three nodes at seq {seq}: {status(first)}", WAIT)
    assert doc["mode"] == "cluster"
    assert doc["latest_seq"] >= seq
    nodes = listed(doc, names)
    for node in three:
        entry = nodes[node.env["HERALD_NODE_ID"]]
        assert entry["version"] == herald.__version__
        assert entry["url"] == node.url
        assert entry["public_url"] == first.url
        assert node.process is not None
        assert entry["pid"] == node.process.pid
        assert entry["lease_owner"].startswith(entry["name"] + "/")
        assert entry["leases"] == 0
    assert sum(n["bus"]["published"] for n in nodes.values()) >= 1
    human = first.run("cluster", "status").stdout
    assert "cluster:" in human
    assert all(name in human for name in names)
    assert "expired lease(s) waiting to be reclaimed" in human

    # A node stopped gracefully removes its heartbeat before it exits.
    three[2].stop()
    after = listed(status(first), names)
    assert set(after) == names - {three[2].env["HERALD_NODE_ID"]}


# -- leases ---------------------------------------------------------------------------------------


def lease_node(
    node_factory: NodeFactory, pki: Pki, *, pg: str, redis_url: str, name: str, lease: str
) -> Node:
    """A node with a webhook channel to the test's receivers and the given lease (s)."""
    port = node_factory.free_port()
    return Node.create(
        node_factory,
        "opslease",
        **channel_settings(pki),
        HERALD_DATABASE_URL=pg,
        HERALD_REDIS_URL=redis_url,
        HERALD_PORT=str(port),
        HERALD_PUBLIC_URL=f"https://127.0.0.1:{port}",
        HERALD_NODE_ID=name,
        HERALD_DELIVERY_LEASE=lease,
    )


def test_a_node_stopped_gracefully_gives_its_leases_back(
    pki: Pki, redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory
) -> None:
    prefix = "opsg" + secrets.token_hex(4)
    a_name, b_name = f"{prefix}-a", f"{prefix}-b"
    # A lease far longer than the test may take: only a release lets the other node take
    # the work over.
    a = lease_node(
        node_factory, pki, pg=pg_fresh_dsn, redis_url=redis_url, name=a_name, lease="300"
    )
    secret = new_secret()
    with held_receiver(pki) as receiver:
        path = receiver.add(secret, hold=HOLD)
        try:
            a.start()
            token = a.herald.token(a.admin)
            recipient = unique("grace")
            a.put_recipient(recipient, webhook(receiver.url(path), secret))
            b = node_factory.peer(a.herald, HERALD_NODE_ID=b_name)
            nodes = {a_name: a.herald, b_name: b}
            message_id = a.publish(recipient, "held")
            wait_until(
                lambda: True if receiver.requests(path) else None,
                lambda: "an attempt at the receiver",
                DELIVERY_WAIT,
            )
            # Whichever node claimed it is stopped at once: well within the channel's 10 s
            # read timeout, so the attempt is still in flight when the stop begins.
            doc = status(b)
            (owner,) = doc["leases_by_owner"]
            assert doc["leases_by_owner"][owner] == 1
            assert doc["deliveries"]["sending"] == 1
            holder = owner_node(owner)
            (survivor,) = set(nodes) - {holder}
            # SIGTERM: stop claiming, give the lease back, leave (a.stop closes a's client).
            (a.stop if holder == a_name else b.stop)()
            assert set(listed(status(nodes[survivor]), set(nodes))) == {survivor}
            let_go(receiver, path)
            done = wait_until(
                lambda: (
                    d
                    if (d := delivery_on(nodes[survivor], token, message_id))["state"]
                    == "delivered"
                    else None
                ),
                lambda: f"{survivor} delivering: {delivery_on(nodes[survivor], token, message_id)}",
                WAIT,
            )
            final = status(nodes[survivor])
        finally:
            a.stop()
            node_factory.stop_all()
            forget_nodes(redis_url, {a_name, b_name})
            forget_redis_keys(redis_url, a.demo.tenant, [a.demo.client_id, a.admin.client_id])
    assert done["attempts"] == 2
    seen = receiver.requests(path)
    assert [s.headers["webhook-id"] for s in seen] == [done["id"], done["id"]]
    assert final["deliveries"] == {"pending": 0, "retrying": 0, "sending": 0, "expired_leases": 0}


def test_a_killed_nodes_lease_is_reclaimed_after_it_runs_out(
    pki: Pki, redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory
) -> None:
    prefix = "opsk" + secrets.token_hex(4)
    a_name, b_name = f"{prefix}-a", f"{prefix}-b"
    a = lease_node(node_factory, pki, pg=pg_fresh_dsn, redis_url=redis_url, name=a_name, lease="2")
    secret = new_secret()
    with held_receiver(pki) as receiver:
        path = receiver.add(secret, hold=HOLD)
        try:
            a.start()
            token = a.herald.token(a.admin)
            recipient = unique("killed")
            a.put_recipient(recipient, webhook(receiver.url(path), secret))
            message_id = a.publish(recipient, "held by a")
            wait_until(
                lambda: True if receiver.requests(path) else None,
                lambda: "a's attempt at the receiver",
                DELIVERY_WAIT,
            )
            a.kill()  # no shutdown: the lease stays until it runs out

            def expired() -> dict[str, Any] | None:
                doc = status(a.herald)
                return doc if doc["deliveries"]["expired_leases"] == 1 else None

            wait_until(expired, lambda: f"a's lease expired: {status(a.herald)}", WAIT)
            # Its heartbeat outlives it by at most the TTL.
            wait_until(
                lambda: True if not listed(status(a.herald), {a_name}) else None,
                lambda: "a's heartbeat running out",
                BEAT_GONE,
            )
            let_go(receiver, path)
            b = node_factory.peer(a.herald, HERALD_NODE_ID=b_name)
            done = wait_until(
                lambda: (
                    d if (d := delivery_on(b, token, message_id))["state"] == "delivered" else None
                ),
                lambda: f"b reclaiming: {delivery_on(b, token, message_id)}",
                WAIT,
            )
            final = status(b)
        finally:
            a.stop()
            node_factory.stop_all()
            forget_nodes(redis_url, {a_name, b_name})
            forget_redis_keys(redis_url, a.demo.tenant, [a.demo.client_id, a.admin.client_id])
    assert done["attempts"] >= 2
    assert {s.headers["webhook-id"] for s in receiver.requests(path)} == {done["id"]}
    assert final["deliveries"]["expired_leases"] == 0
    assert final["deliveries"]["sending"] == 0


# -- herald cluster run ---------------------------------------------------------------------------


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (bounded attempts)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        free = True
        for port in range(base, base + count):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise AssertionError("no run of free ports found")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_cluster_run_starts_three_nodes_and_stops_them_all(
    tmp_path: Path, redis_url: str, pg_fresh_dsn: str
) -> None:
    prefix = "opsrun" + secrets.token_hex(4) + "-"
    names = {prefix + x for x in "abc"}
    base = consecutive_free_ports(3)
    data_dir = tmp_path / "data"
    env = base_env(data_dir, base, HERALD_DATABASE_URL=pg_fresh_dsn, HERALD_REDIS_URL=redis_url)
    out = tmp_path / "run.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [
                *HERALD,
                "cluster",
                "run",
                "--nodes",
                "3",
                "--base-port",
                str(base),
                "--prefix",
                prefix,
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    pids: list[int] = []
    try:
        text = wait_until(
            lambda: t if "Ctrl-C" in (t := out.read_text()) else None,
            lambda: f"cluster run to report its nodes: {out.read_text()}",
            90.0,
        )
        for line in text.splitlines():
            if line.startswith("node ") and "(pid " in line:
                pids.append(int(line.split("(pid ")[1].split(",")[0]))
        assert len(pids) == 3, text
        context = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
        for port in range(base, base + 3):
            health = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=5.0)
            assert health.status_code == 200
        doc = json.loads(run_cli(env, "cluster", "status", "--json").stdout)
        found = {n["name"]: n for n in doc["nodes"] if n["name"] in names}
        wanted = {f"https://127.0.0.1:{base + i}" for i in range(3)}
        assert {n["url"] for n in found.values()} == wanted
        assert {n["public_url"] for n in found.values()} == {f"https://127.0.0.1:{base}"}

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, out.read_text()
        assert all(gone(pid) for pid in pids), out.read_text()
        assert "all nodes stopped" in out.read_text()
        with redis.Redis.from_url(redis_url, socket_timeout=5.0) as r:
            assert r.exists(*(node_key(name) for name in names)) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        forget_nodes(redis_url, names)  # nothing else: no request was made


def test_cluster_run_needs_postgresql_and_redis(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", 8443)
    result = run_cli(env, "cluster", "run", check=False)
    assert result.returncode != 0
    assert "HERALD_DATABASE_URL" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


# -- errors and the embedded node ------------------------------------------------------------------


def test_status_errors_are_one_line(
    redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory
) -> None:
    node = node_factory(name="opserr", start=False, HERALD_DATABASE_URL=pg_fresh_dsn)
    nothing = node_factory.free_port()  # nothing listens here
    cases = {
        "Redis is unreachable": {
            "HERALD_REDIS_URL": f"redis://:pw-{nothing}@127.0.0.1:{nothing}/0"
        },
        "database unavailable": {
            "HERALD_REDIS_URL": redis_url,
            "HERALD_DATABASE_URL": f"postgresql://root:pw-{nothing}@127.0.0.1:{nothing}/x",
        },
    }
    for message, env in cases.items():
        result = run_cli({**node.env, **env}, "cluster", "status", check=False)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert message in lines[0]
        assert f"pw-{nothing}" not in result.stderr + result.stdout  # no credentials


def test_status_of_an_embedded_node_says_so(node_factory: NodeFactory) -> None:
    node = node_factory(name="opsembedded", start=False)
    result = node.run("cluster", "status")
    assert "single embedded node" in result.stdout
    doc = node.cli("cluster", "status")
    assert doc["mode"] == "embedded"
    assert doc["nodes"] == []
    assert doc["deliveries"] == {"pending": 0, "retrying": 0, "sending": 0, "expired_leases": 0}
