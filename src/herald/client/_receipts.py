"""Verifiable delivery receipts: prove that a received message is in the audit log.

Every message Herald delivers carries the index and the RFC 9162 leaf hash of its
``message.published`` audit entry. :func:`verify_receipt` checks, against a signed
checkpoint and with the audit key the caller pinned, that this entry is in the log — so the
platform cannot deliver a message that it did not log (or log it under another id).

Trust comes only from the pinned key: the checkpoint note must be signed by it, and every
other answer of the server (the entry, the inclusion proof) is checked against the signed
tree head, never taken on trust.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from herald.audit.merkle import HASH_SIZE, ProofInvalid, leaf_hash, verify_inclusion
from herald.audit.note import Checkpoint, NoteInvalid, NoteVerifier, open_checkpoint
from herald.client._errors import HeraldClientError, ProblemError, problem_from_http
from herald.client._transport import connection_failed, is_certificate_error

__all__ = ["CHECKPOINT_POLL_INTERVAL", "Receipt", "ReceiptInvalid", "verify_receipt"]

#: Seconds between two reads of the latest checkpoint while waiting for one that covers
#: the message's entry (Herald signs one every few seconds).
CHECKPOINT_POLL_INTERVAL = 0.5

_NOT_FOUND = 404
_TOO_MANY_REQUESTS = 429
_NOT_IMPLEMENTED = 501
_PUBLISHED = "message.published"


class ReceiptInvalid(HeraldClientError):
    """A delivery receipt could not be verified.

    Raised for every way verification fails, whether the evidence is wrong (the checkpoint
    is not signed by the pinned key, the entry is not the message's, the inclusion proof does
    not verify) or could not be obtained (no checkpoint covering the entry within ``wait``,
    the server unreachable or refusing): a receipt that was not verified is not trusted. The
    underlying error, if any, is chained as ``__cause__``.
    """


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that a delivered message is entry ``index`` of the audit log.

    Keep it: it can be shown to anyone holding the audit key, offline, and later signed
    checkpoints can be checked to extend ``note`` (consistency proofs).

    Attributes:
        index: The index of the message's ``message.published`` audit entry.
        leaf_hash: Hex RFC 9162 leaf hash of that entry, ``SHA-256(0x00 ‖ entry)``.
        checkpoint_size: The size of the signed tree the entry was proven to be in.
        root: The 32-byte RFC 9162 root hash of that tree, as signed.
        note: The signed checkpoint note (C2SP signed note) that vouches for ``root``.
    """

    index: int
    leaf_hash: str
    checkpoint_size: int
    root: bytes
    note: str


class Delivered(Protocol):
    """What a receipt is checked for: a message's id and audit reference."""

    @property
    def id(self) -> str:
        """The message id."""
        ...

    @property
    def audit_index(self) -> int | None:
        """Index of the message's audit entry."""
        ...

    @property
    def leaf_hash(self) -> str | None:
        """Hex leaf hash of that entry."""
        ...


def _invalid(reason: str) -> ReceiptInvalid:
    return ReceiptInvalid(f"receipt does not verify: {reason}")


def _parse_verifier(audit_key: str) -> NoteVerifier:
    try:
        return NoteVerifier.from_key(audit_key.strip())
    except NoteInvalid as exc:
        raise _invalid(f"the pinned audit key is not a verifier key ({exc})") from exc


def _message_reference(message: Delivered) -> tuple[int, bytes]:
    index, hex_hash = message.audit_index, message.leaf_hash
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _invalid("the message carries no audit index")
    if not isinstance(hex_hash, str) or len(hex_hash) != 2 * HASH_SIZE:
        raise _invalid("the message carries no 32-byte leaf hash")
    try:
        return index, bytes.fromhex(hex_hash)
    except ValueError:
        raise _invalid("the message's leaf hash is not hex") from None


class _Api:
    """The three audit reads, with the subscriber token and the SDK's error mapping."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self._client = client
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, application/problem+json",
        }

    async def get(self, path: str, params: dict[str, int] | None = None) -> dict[str, Any]:
        """GET ``path``; the JSON object of a 2xx answer.

        Raises:
            ProblemError: A non-2xx answer.
            ConnectionFailed: The server could not be reached.
            ReceiptInvalid: The answer is not a JSON object.
        """
        try:
            response = await self._client.get(path, params=params, headers=self._headers)
        except httpx.TransportError as exc:
            raise connection_failed(str(self._client.base_url), exc) from exc
        if not response.is_success:
            raise problem_from_http(
                response.status_code,
                response.headers.get("content-type"),
                response.content,
                response.reason_phrase,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _invalid(f"GET {path} answered a body that is not a JSON object")
        return body


def _retryable(error: HeraldClientError) -> bool:
    if not isinstance(error, ProblemError):
        # ConnectionFailed: the server may be restarting; an untrusted certificate stays so.
        return not is_certificate_error(error)
    status = error.status
    return status in {_NOT_FOUND, _TOO_MANY_REQUESTS} or (
        status >= 500 and status != _NOT_IMPLEMENTED
    )


def _open_checkpoint(verifier: NoteVerifier, body: dict[str, Any]) -> tuple[Checkpoint, str]:
    """Verify the note of a checkpoint answer; only the signed text is trusted."""
    note = body.get("note")
    if not isinstance(note, str):
        raise _invalid("the checkpoint answer has no note")
    try:
        # Herald names its audit key after the log's origin: a checkpoint of another log
        # signed with the same key is refused too.
        checkpoint = open_checkpoint(verifier, note, origin=verifier.name)
    except NoteInvalid as exc:
        raise _invalid(f"the checkpoint is not signed by the pinned audit key ({exc})") from exc
    # The unsigned JSON members must agree with the note they come with.
    root = body.get("root")
    if body.get("size") != checkpoint.size or (
        root is not None and root != base64.b64encode(checkpoint.root).decode("ascii")
    ):
        raise _invalid("the checkpoint's size or root differs from its signed note")
    return checkpoint, note


async def _covering_checkpoint(
    api: _Api, verifier: NoteVerifier, index: int, wait: float
) -> tuple[Checkpoint, str]:
    """The latest signed checkpoint, once its size exceeds ``index`` (polled up to ``wait``)."""
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            checkpoint, note = _open_checkpoint(verifier, await api.get("/v1/audit/checkpoint"))
        except ReceiptInvalid:
            raise
        except HeraldClientError as exc:
            # 404 (nothing signed yet), 429, 5xx and network errors may pass; others do not.
            if not _retryable(exc) or time.monotonic() >= deadline:
                raise _invalid(f"no signed checkpoint could be read ({exc})") from exc
        else:
            if checkpoint.size > index:
                return checkpoint, note
            if time.monotonic() >= deadline:
                raise _invalid(
                    f"no signed checkpoint covers audit index {index} after {wait:g} s "
                    f"(latest size {checkpoint.size})"
                )
        await asyncio.sleep(max(0.0, min(CHECKPOINT_POLL_INTERVAL, deadline - time.monotonic())))


async def _check_entry(api: _Api, message: Delivered, index: int, leaf: bytes) -> None:
    """The entry at ``index`` hashes to ``leaf`` and records the publication of ``message``."""
    body = await api.get("/v1/audit/entries", {"from": index, "to": index + 1})
    items = body.get("entries")
    found = [
        item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and item.get("index") == index
    ]
    if len(found) != 1 or not isinstance(found[0].get("entry"), str):
        raise _invalid(f"the log has no entry {index} for this subscriber")
    text: str = found[0]["entry"]
    if leaf_hash(text.encode("utf-8")) != leaf:
        raise _invalid(f"entry {index} does not hash to the message's leaf hash")
    try:
        entry = json.loads(text)
    except ValueError:
        raise _invalid(f"entry {index} is not JSON") from None
    if not isinstance(entry, dict):
        raise _invalid(f"entry {index} is not a JSON object")
    if entry.get("index") != index:
        raise _invalid(f"entry {index} names another index")
    if entry.get("action") != _PUBLISHED or entry.get("object") != f"message:{message.id}":
        raise _invalid(f"entry {index} is not the publication of message {message.id}")


async def _check_inclusion(api: _Api, index: int, leaf: bytes, checkpoint: Checkpoint) -> None:
    body = await api.get("/v1/audit/proof/inclusion", {"index": index, "size": checkpoint.size})
    proof = body.get("proof")
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        raise _invalid("the inclusion proof is malformed")
    try:
        path = [bytes.fromhex(p) for p in proof]
    except ValueError:
        raise _invalid("the inclusion proof is not hex") from None
    try:
        verify_inclusion(leaf, index, checkpoint.size, path, checkpoint.root)
    except ProofInvalid as exc:
        raise _invalid(f"the inclusion proof does not verify ({exc})") from exc


async def verify_receipt(
    client: httpx.AsyncClient,
    token: str,
    message: Delivered,
    *,
    audit_key: str,
    wait: float = 15.0,
) -> Receipt:
    """Verify that ``message`` is in the audit log, against a checkpoint signed by ``audit_key``.

    Steps: read the latest checkpoint until its size exceeds ``message.audit_index`` (at
    most ``wait`` seconds) and verify its signed note with the pinned key; read entry
    ``audit_index`` and check that ``SHA-256(0x00 ‖ entry)`` is the message's leaf hash and
    that the entry is ``message.published`` of ``message:<id>``; read the inclusion proof
    of the entry in the checkpoint's tree and verify it against the signed root
    (RFC 9162 §2.1.3.2).

    Args:
        client: The HTTP client for the server (base URL and TLS settings).
        token: A bearer token of the message's tenant (the subscriber token).
        message: The message, with ``id``, ``audit_index`` and ``leaf_hash``.
        audit_key: The audit verifier key the caller pinned (see
            :meth:`AsyncSubscriber.verify_receipt <herald.client.AsyncSubscriber.verify_receipt>`).
        wait: Longest wait, in seconds, for a checkpoint that covers the entry.

    Returns:
        The verified :class:`Receipt`.

    Raises:
        ReceiptInvalid: Any check failed or could not be made.
    """
    verifier = _parse_verifier(audit_key)
    index, leaf = _message_reference(message)
    api = _Api(client, token)
    checkpoint, note = await _covering_checkpoint(api, verifier, index, wait)
    try:
        await _check_entry(api, message, index, leaf)
        await _check_inclusion(api, index, leaf, checkpoint)
    except ReceiptInvalid:
        raise
    except HeraldClientError as exc:
        raise _invalid(str(exc)) from exc
    return Receipt(
        index=index,
        leaf_hash=leaf.hex(),
        checkpoint_size=checkpoint.size,
        root=checkpoint.root,
        note=note,
    )
