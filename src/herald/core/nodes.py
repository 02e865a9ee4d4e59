"""Cluster nodes as ``herald cluster status`` sees them: heartbeats, lease owners, lag.

Pure: no clock, no Redis, no database. A node writes a :class:`Heartbeat` to Redis every
:data:`~herald.limits.NODE_HEARTBEAT_INTERVAL` seconds under :func:`node_key`, with a TTL
of :data:`~herald.limits.NODE_HEARTBEAT_TTL`; the status command reads them back and puts
them next to what the database says (:func:`status_document`, :func:`render_status`).

Lease owners (``lease_owner`` of deliveries and scheduled messages) are
``<node name>/<incarnation>``: the node's name shows whose leases they are, the
incarnation (random per process start) keeps two processes that were given the same name
(or a node restarted after a crash) from finishing each other's attempts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "NODE_KEY_PREFIX",
    "BusCounters",
    "Heartbeat",
    "QueueTotals",
    "decode_heartbeat",
    "encode_heartbeat",
    "lease_owner",
    "node_key",
    "owner_node",
    "render_status",
    "status_document",
]

#: Redis key prefix of the heartbeats; the node's name follows.
NODE_KEY_PREFIX = "herald:node:"


def node_key(name: str) -> str:
    """The Redis key of a node's heartbeat."""
    return NODE_KEY_PREFIX + name


def lease_owner(node: str, incarnation: str) -> str:
    """The ``lease_owner`` this process writes: ``<node>/<incarnation>``."""
    return f"{node}/{incarnation}"


def owner_node(owner: str) -> str:
    """The node name of a lease owner (owners written before names were used: as is)."""
    node, slash, _ = owner.rpartition("/")
    return node if slash else owner


class BusCounters(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster bus of one node: its cursor (last seq handed to its sessions) and counts."""

    cursor: int
    published: int = 0
    publish_failures: int = 0
    loaded: int = 0


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """What a node tells the others about itself (JSON in Redis, ``herald:node:<node>``).

    Times are Unix seconds (floats); ``leases`` counts the delivery leases it holds.
    """

    node: str
    incarnation: str
    version: str
    public_url: str
    listen_url: str
    pid: int
    started_at: float
    last_seen: float
    streams: int
    leases: int
    lease_owner: str
    bus: BusCounters


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Heartbeat)


def encode_heartbeat(beat: Heartbeat) -> bytes:
    """The heartbeat as compact JSON."""
    return _encoder.encode(beat)


def decode_heartbeat(raw: bytes | str) -> Heartbeat | None:
    """A heartbeat read back, or None when it is not one (another version, garbage)."""
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """The delivery work queue as the database has it, at one instant.

    Attributes:
        pending: Channel deliveries waiting for their first attempt.
        retrying: Channel deliveries waiting for another attempt.
        sending: Channel deliveries leased by a node right now.
        expired_leases: ``sending`` deliveries whose lease ran out: their node died (or
            stalled); any node reclaims them on its next claim.
        leases_by_owner: Live (unexpired) leases per ``lease_owner``.
    """

    pending: int
    retrying: int
    sending: int
    expired_leases: int
    leases_by_owner: Mapping[str, int]


def status_document(
    *,
    cluster: bool,
    local_node: str,
    beats: Sequence[Heartbeat],
    lags: Mapping[str, int],
    totals: QueueTotals,
    latest_seq: int,
    now: float,
) -> dict[str, Any]:
    """The status as one JSON-ready object (``herald cluster status --json``).

    Args:
        cluster: Whether the configuration is cluster mode (else: one embedded node).
        local_node: This configuration's node name (the embedded node's name).
        beats: The heartbeats found in Redis (empty without cluster mode).
        lags: Messages committed above each node's bus cursor, by node name.
        totals: The work queue.
        latest_seq: The highest committed message ``seq`` (-1 without messages).
        now: Unix seconds, for the heartbeats' ages.
    """
    seen = {beat.node for beat in beats}
    nodes = [
        {
            "name": beat.node,
            "version": beat.version,
            "url": beat.listen_url,
            "public_url": beat.public_url,
            "pid": beat.pid,
            "started_at": beat.started_at,
            "last_seen": beat.last_seen,
            "age": round(max(0.0, now - beat.last_seen), 3),
            "uptime": round(max(0.0, now - beat.started_at), 3),
            "streams": beat.streams,
            "leases": beat.leases,
            "lease_owner": beat.lease_owner,
            "bus": msgspec.structs.asdict(beat.bus),
            "lag": lags.get(beat.node, 0),
        }
        for beat in sorted(beats, key=lambda b: b.node)
    ]
    # Leases of owners no live node answers for: a dead node's, until they run out.
    orphaned = {
        owner: count
        for owner, count in sorted(totals.leases_by_owner.items())
        if owner_node(owner) not in seen
    }
    return {
        "mode": "cluster" if cluster else "embedded",
        "node": local_node,
        "nodes": nodes,
        "deliveries": {
            "pending": totals.pending,
            "retrying": totals.retrying,
            "sending": totals.sending,
            "expired_leases": totals.expired_leases,
        },
        "leases_by_owner": dict(sorted(totals.leases_by_owner.items())),
        "leases_without_node": orphaned,
        "latest_seq": latest_seq,
    }


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def render_status(doc: Mapping[str, Any]) -> str:
    """The status for people: a header, one row per node, the queue totals."""
    lines: list[str] = []
    nodes: list[dict[str, Any]] = list(doc["nodes"])
    if doc["mode"] == "embedded":
        lines.append(
            f"single embedded node ({doc['node']}): no HERALD_REDIS_URL, so no cluster; "
            "showing the local database"
        )
    else:
        lines.append(f"cluster: {len(nodes)} node(s) seen in Redis")
    if nodes:
        header = ("NODE", "VERSION", "URL", "LAST SEEN", "STREAMS", "LEASES", "LAG")
        rows = [
            (
                n["name"],
                n["version"],
                n["url"],
                _age(float(n["age"])),
                str(n["streams"]),
                str(n["leases"]),
                str(n["lag"]),
            )
            for n in nodes
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
    elif doc["mode"] == "cluster":
        lines.append("no node has sent a heartbeat recently")
    d = doc["deliveries"]
    lines.append(
        f"deliveries: {d['pending']} pending, {d['retrying']} retrying, {d['sending']} sending; "
        f"{d['expired_leases']} expired lease(s) waiting to be reclaimed"
    )
    if doc["mode"] == "embedded":
        for owner, count in doc["leases_by_owner"].items():
            lines.append(f"leases held by {owner}: {count}")
    else:
        for owner, count in doc["leases_without_node"].items():
            lines.append(f"leases of {owner} (no heartbeat): {count}")
    return "\n".join(lines)
