"""The pure side of ``herald cluster status``: heartbeats, lease owners, the document."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from herald.core.nodes import (
    BusCounters,
    Heartbeat,
    QueueTotals,
    decode_heartbeat,
    encode_heartbeat,
    lease_owner,
    node_key,
    owner_node,
    render_status,
    status_document,
)


def beat(node: str, *, last_seen: float = 100.0, leases: int = 0, cursor: int = 7) -> Heartbeat:
    return Heartbeat(
        node=node,
        incarnation="0a1b2c3d",
        version="1.2.3",
        public_url="https://push.example",
        listen_url=f"https://127.0.0.1:{8443 + ord(node[0]) - ord('a')}",
        pid=4242,
        started_at=10.0,
        last_seen=last_seen,
        streams=3,
        leases=leases,
        lease_owner=lease_owner(node, "0a1b2c3d"),
        bus=BusCounters(cursor=cursor, published=5),
    )


TOTALS = QueueTotals(
    pending=4, retrying=2, sending=3, expired_leases=1, leases_by_owner={"a/0a1b2c3d": 2, "z/9": 1}
)


def test_a_heartbeat_round_trips_and_garbage_is_none() -> None:
    original = beat("a")
    assert decode_heartbeat(encode_heartbeat(original)) == original
    assert json.loads(encode_heartbeat(original))["bus"]["cursor"] == 7
    assert decode_heartbeat(b"{not json") is None
    assert decode_heartbeat(b'{"node": "a"}') is None  # another version's heartbeat


@given(node=st.text(min_size=1, max_size=40), incarnation=st.text("0123456789abcdef", min_size=1))
def test_the_node_of_a_lease_owner(node: str, incarnation: str) -> None:
    assert owner_node(lease_owner(node, incarnation)) == node


def test_owners_from_before_node_names_are_their_own_node() -> None:
    assert owner_node("node-3f2a") == "node-3f2a"
    assert node_key("a") == "herald:node:a"


def test_the_status_document() -> None:
    doc = status_document(
        cluster=True,
        local_node="cli:8443",
        beats=[beat("b", last_seen=98.0), beat("a", leases=2, last_seen=101.0)],
        lags={"b": 4},
        totals=TOTALS,
        latest_seq=11,
        now=100.0,
    )
    assert [n["name"] for n in doc["nodes"]] == ["a", "b"]
    a, b = doc["nodes"]
    assert (a["age"], a["lag"], a["leases"], a["uptime"]) == (0.0, 0, 2, 90.0)  # clock skew: 0
    assert (b["age"], b["lag"], b["bus"]["cursor"]) == (2.0, 4, 7)
    assert doc["deliveries"] == {"pending": 4, "retrying": 2, "sending": 3, "expired_leases": 1}
    assert doc["leases_without_node"] == {"z/9": 1}
    assert doc["mode"] == "cluster"
    assert doc["latest_seq"] == 11
    json.dumps(doc)  # JSON-ready

    text = render_status(doc)
    lines = text.splitlines()
    assert lines[0] == "cluster: 2 node(s) seen in Redis"
    assert lines[1].split() == [
        "NODE",
        "VERSION",
        "URL",
        "LAST",
        "SEEN",
        "STREAMS",
        "LEASES",
        "LAG",
    ]
    assert lines[3].split()[:3] == ["b", "1.2.3", "https://127.0.0.1:8444"]
    assert "2.0s ago" in lines[3]
    assert "1 expired lease(s) waiting to be reclaimed" in text
    assert "leases of z/9 (no heartbeat): 1" in text
    assert all(line == line.rstrip() for line in lines)


def test_an_embedded_node_says_so() -> None:
    empty = QueueTotals(0, 0, 1, 0, {"host:8443/ab": 1})
    doc = status_document(
        cluster=False,
        local_node="host:8443",
        beats=[],
        lags={},
        totals=empty,
        latest_seq=-1,
        now=0.0,
    )
    text = render_status(doc)
    assert text.startswith("single embedded node (host:8443)")
    assert "leases held by host:8443/ab: 1" in text
    assert "no node has sent a heartbeat" not in text


def test_a_cluster_without_heartbeats_says_so() -> None:
    doc = status_document(
        cluster=True, local_node="x", beats=[], lags={}, totals=TOTALS, latest_seq=3, now=0.0
    )
    assert "no node has sent a heartbeat recently" in render_status(doc)
    assert doc["leases_without_node"] == dict(TOTALS.leases_by_owner)


def test_old_heartbeats_show_minutes() -> None:
    doc = status_document(
        cluster=True,
        local_node="x",
        beats=[beat("a", last_seen=0.0)],
        lags={},
        totals=TOTALS,
        latest_seq=3,
        now=600.0,
    )
    assert "10m ago" in render_status(doc)
