"""Encryption at rest, seen from outside (DESIGN §5, docs/security.md "Data at rest").

Content goes in through the public API with unique markers in the title, the body, and the
keys and values of ``data``; then the raw storage is searched for them:

- SQLite: the bytes of ``herald.db`` and its ``-wal``/``-shm`` files;
- PostgreSQL: every value of every column of every table in the ``public`` schema;
- logs and metrics: ``serve.log`` and ``GET /metrics`` after publishing, reading, a
  WebSocket delivery and a request refused for an unknown field.

A marker found anywhere is a leak. Each scan also checks that it sees what it should (the
topic name, which is stored in clear), so that a scan of the wrong bytes cannot pass.

Each test starts its own server (own data dir, own port, own database) and stops it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import asyncpg
import pytest
import tests.conftest as _root
from websockets.asyncio.client import ClientConnection, connect

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

WAIT = 10.0  # seconds: the bound of every single wait in this module


run_async = _root.run_async


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- markers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Markers:
    """Unique strings put into every content field; none may ever be found at rest."""

    topic: str = field(default_factory=lambda: f"atrest.t{secrets.token_hex(6)}")
    title: str = field(default_factory=lambda: f"TitleMark{secrets.token_hex(8)}")
    # Non-ASCII, so that multi-byte UTF-8 and UTF-16 forms are searched too.
    body: str = field(default_factory=lambda: f"BödyMärk€{secrets.token_hex(8)}")
    data_key: str = field(default_factory=lambda: f"DataKeyMark{secrets.token_hex(8)}")
    data_value: str = field(default_factory=lambda: f"DataValueMark{secrets.token_hex(8)}")
    nested: str = field(default_factory=lambda: f"NestedMark{secrets.token_hex(8)}")
    batch: str = field(default_factory=lambda: f"BatchMark{secrets.token_hex(8)}")

    def content(self, n: int = 0) -> dict[str, Any]:
        """A message whose every content field carries markers."""
        return {
            "topic": self.topic,
            "title": f"{self.title} #{n}",
            "body": f"prefix {self.body} suffix #{n}",
            "data": {
                self.data_key: self.data_value,
                "nested": {"list": [1, self.nested, {"deep": self.nested}]},
                "n": n,
            },
        }

    def batch_item(self, n: int) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "title": f"{self.batch} title {n}",
            "body": f"{self.batch} body {n}",
            "data": {f"{self.batch}-key-{n}": f"{self.batch}-value-{n}"},
        }

    def texts(self) -> dict[str, str]:
        """The markers by name (the topic is not a secret and is left out)."""
        return {
            "title": self.title,
            "body": self.body,
            "data key": self.data_key,
            "data value": self.data_value,
            "nested data": self.nested,
            "batch": self.batch,
        }


def needles(texts: dict[str, str], raw: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """The byte strings a scan looks for: each text in UTF-8 and UTF-16-LE, plus raw bytes."""
    found: dict[str, bytes] = {}
    for name, text in texts.items():
        found[f"{name} (utf-8)"] = text.encode("utf-8")
        found[f"{name} (utf-16-le)"] = text.encode("utf-16-le")
    found.update(raw or {})
    return found


def leaks(haystack: bytes, wanted: dict[str, bytes]) -> list[str]:
    """Names of the needles found in ``haystack``."""
    return [name for name, needle in wanted.items() if needle in haystack]


def publish_markers(node: Node, markers: Markers, token: str) -> list[str]:
    """Publish marker content: single messages (one idempotent) and a batch. Returns ids."""
    ids: list[str] = []
    with node.client() as client:
        for n in range(3):
            headers = bearer(token)
            if n == 2:
                headers["Idempotency-Key"] = f"atrest-{secrets.token_hex(8)}"
            response = client.post("/v1/messages", json=markers.content(n), headers=headers)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        batch = {"messages": [markers.batch_item(n) for n in range(5)]}
        response = client.post("/v1/messages:batch", json=batch, headers=bearer(token))
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        assert all("id" in r for r in results), results
        ids.extend(r["id"] for r in results)
        # The content did go in: it reads back (so a clean scan means "encrypted", not "lost").
        first = client.get(f"/v1/messages/{ids[0]}", headers=bearer(token))
        assert first.status_code == 200, first.text
        view = first.json()
        expected = markers.content(0)
        assert (view["title"], view["body"], view["data"]) == (
            expected["title"],
            expected["body"],
            expected["data"],
        )
    return ids


def add_hmac_key(node: Node) -> dict[str, bytes]:
    """Create an HMAC app key with the CLI; the needles of its secret."""
    created = node.cli("app", "key", "add", node.demo.client_id, "--hmac")
    secret_b64 = created["secret"]
    secret = base64.b64decode(secret_b64, validate=True)
    assert len(secret) >= 16
    return {
        "hmac secret (raw bytes)": secret,
        "hmac secret (base64)": secret_b64.encode("ascii"),
        "hmac secret (base64, utf-16-le)": secret_b64.encode("utf-16-le"),
        "hmac secret (base64url)": base64.urlsafe_b64encode(secret).rstrip(b"="),
        "hmac secret (hex)": secret.hex().encode("ascii"),
    }


def sqlite_bytes(data_dir: Path) -> bytes:
    """The raw bytes of the database and its WAL and shared-memory files."""
    files = [data_dir / name for name in ("herald.db", "herald.db-wal", "herald.db-shm")]
    assert files[0].is_file()
    return b"".join(path.read_bytes() for path in files if path.exists())


# -- SQLite -----------------------------------------------------------------------------------
def test_sqlite_files_hold_no_content_or_hmac_secret(node_factory: NodeFactory) -> None:
    markers = Markers()
    with node_factory() as node:
        ids = publish_markers(node, markers, node.token())
        secret_needles = add_hmac_key(node)
        wanted = needles(markers.texts(), secret_needles)

        # While the server runs: recent commits are in the WAL.
        live = sqlite_bytes(node.data_dir)
        assert markers.topic.encode() in live, "the scan does not see the stored rows"
        assert ids[0].encode() in live
        assert leaks(live, wanted) == []

        node.stop()
        # After a clean shutdown (the WAL may have been checkpointed into the main file).
        stopped = sqlite_bytes(node.data_dir)
        assert markers.topic.encode() in stopped
        assert leaks(stopped, wanted) == []


# -- PostgreSQL -------------------------------------------------------------------------------
async def _dump_public_schema(dsn: str) -> dict[str, list[bytes]]:
    """Every value of every column of every table in ``public``, as bytes, by table."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        dump: dict[str, list[bytes]] = {}
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            values: list[bytes] = []
            for row in await conn.fetch(f"SELECT * FROM {quoted}"):  # noqa: S608
                for value in row.values():
                    if value is None:
                        continue
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        values.append(bytes(value))
                    elif isinstance(value, str):
                        values.append(value.encode("utf-8"))
                    else:
                        values.append(str(value).encode("utf-8"))
            dump[table] = values
        return dump
    finally:
        await conn.close()


@pytest.mark.postgres
def test_postgres_columns_hold_no_content_or_hmac_secret(
    node_factory: NodeFactory, pg_fresh_dsn: str
) -> None:
    markers = Markers()
    with node_factory(HERALD_DATABASE_URL=pg_fresh_dsn) as node:
        assert not (node.data_dir / "herald.db").exists()
        publish_markers(node, markers, node.token())
        wanted = needles(markers.texts(), add_hmac_key(node))
        dump = run_async(lambda: _dump_public_schema(pg_fresh_dsn))

    assert {"messages", "app_keys", "audit_entries", "tenant_keys"} <= set(dump)
    assert any(markers.topic.encode() in value for value in dump["messages"]), (
        "the dump does not see the stored messages"
    )
    found = {
        f"{table}: {name}"
        for table, values in dump.items()
        for value in values
        for name in leaks(value, wanted)
    }
    assert found == set()


# -- logs and metrics ---------------------------------------------------------------------------
def ws_connect(node: Node, token: str, **params: str) -> Any:
    url = node.url.replace("https://", "wss://", 1) + "/v1/stream"
    if params:
        url += "?" + urlencode(params)
    return connect(
        url,
        additional_headers=bearer(token),
        ssl=ssl.create_default_context(cafile=str(node.ca)),
        open_timeout=WAIT,
        close_timeout=2,
        compression=None,
    )


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not a heartbeat."""
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") != "heartbeat":
                return dict(frame)


async def test_logs_and_metrics_never_contain_content(node_factory: NodeFactory) -> None:
    markers = Markers()
    unknown_field = f"UnknownFieldMark{secrets.token_hex(8)}"
    unknown_value = f"UnknownValueMark{secrets.token_hex(8)}"
    wanted = needles(
        {**markers.texts(), "unknown field": unknown_field, "unknown value": unknown_value}
    )
    # Debug level: the most the server ever logs.
    node = node_factory(HERALD_LOG_LEVEL="debug")
    try:
        token = node.token()
        async with node.async_client() as client:
            response = await client.post(
                "/v1/subscriber-tokens",
                json={"recipient": "user-1", "topics": [markers.topic]},
                headers=bearer(token),
            )
            assert response.status_code == 201, response.text
            sub_token = response.json()["token"]

            # A live WebSocket delivery of the marker message.
            async with ws_connect(node, sub_token) as ws:
                assert (await next_frame(ws))["type"] == "ready"
                response = await client.post(
                    "/v1/messages", json=markers.content(0), headers=bearer(token)
                )
                assert response.status_code == 202, response.text
                first_id = response.json()["id"]
                frame = await next_frame(ws)
                assert frame["type"] == "message", frame
                assert frame["id"] == first_id
                assert frame["title"] == markers.content(0)["title"]

            # More publishes: a second single one and a batch.
            response = await client.post(
                "/v1/messages", json=markers.content(1), headers=bearer(token)
            )
            assert response.status_code == 202, response.text
            batch = {"messages": [markers.batch_item(n) for n in range(3)]}
            response = await client.post("/v1/messages:batch", json=batch, headers=bearer(token))
            assert response.status_code == 202, response.text

            # A catch-up delivery from storage (decrypted on the way out).
            async with ws_connect(node, sub_token, since=first_id) as ws:
                frame = await next_frame(ws)
                assert frame["type"] == "message", frame
                assert frame["body"] == markers.content(1)["body"]

            # Reads: the message, and the topic's history.
            response = await client.get(f"/v1/messages/{first_id}", headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json()["data"] == markers.content(0)["data"]
            response = await client.get(
                f"/v1/topics/{markers.topic}/messages", headers=bearer(token)
            )
            assert response.status_code == 200, response.text
            assert len(response.json()["messages"]) == 5

            # A request refused by validation, with a marker inside an unknown field.
            refused = await client.post(
                "/v1/messages",
                json={**markers.content(2), unknown_field: unknown_value},
                headers=bearer(token),
            )
            assert refused.status_code == 400, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")

            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
    finally:
        node.stop()

    metrics_text = metrics.content
    assert b"herald" in metrics_text or b"http" in metrics_text, "metrics look empty"
    assert leaks(metrics_text, wanted) == []

    log = (node.data_dir / "serve.log").read_bytes()
    # The scan reads the right file: the server logged its start, our streams, and (at
    # debug level) the frames it sent, which name the topic.
    assert b"herald ready" in log
    assert b"/v1/stream" in log
    assert markers.topic.encode() in log
    assert leaks(log, wanted) == []
