"""The audit log over the store: tree heads, proofs, signed checkpoints, witness copies.

The witness sink keeps a copy of every checkpoint outside the main database.

A checkpoint is produced every N entries or T seconds (the server's checkpointer task),
signed as a C2SP signed note with the audit key, stored, and written to the witness. Before
signing, the new tree is proven consistent with the previous checkpoint from stored hashes:
Herald never signs two inconsistent checkpoints.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from herald.audit.merkle import (
    consistency_proof,
    consistency_requires,
    inclusion_proof,
    inclusion_requires,
    root_from,
    root_nodes,
    verify_consistency,
)
from herald.audit.note import Checkpoint, NoteSigner, open_checkpoint, sign_checkpoint
from herald.errors import BadRequest, HeraldError
from herald.storage.base import CheckpointRecord, Store

__all__ = ["AuditLog", "DirectoryWitness", "WitnessConflict"]


class WitnessConflict(HeraldError):
    """The witness already holds a different checkpoint for the same size."""


class DirectoryWitness:
    """An append-only directory of checkpoint notes, one file per size, never rewritten.

    It belongs outside the data directory (ideally on another volume or host mount) so that
    rolling the database back cannot roll the witness back with it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, size: int, note: str) -> None:
        """Store ``note`` for ``size`` once; an identical rewrite is a no-op."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path / f"{size:020d}.checkpoint"
        data = note.encode("utf-8")
        # Written whole to a private temporary name, then linked into place: a crash never
        # leaves a partial copy under the final name, and an existing one is never replaced.
        temporary = self.path / f".{size:020d}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, target)
        except FileExistsError:
            if target.read_bytes() != data:
                raise WitnessConflict(
                    f"the witness holds another checkpoint of size {size}"
                ) from None
        finally:
            temporary.unlink()
        directory = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def notes(self) -> dict[int, str]:
        """Every stored note by size."""
        if not self.path.is_dir():
            return {}
        found = {}
        for item in sorted(self.path.glob("*.checkpoint")):
            stem = item.name.removesuffix(".checkpoint")
            if stem.isdigit():
                found[int(stem)] = item.read_text(encoding="utf-8")
        return found


@dataclass
class AuditLog:
    """Tree heads, proofs and checkpoints of the audit log in ``store``."""

    store: Store
    signer: NoteSigner
    origin: str
    witness: DirectoryWitness | None = None

    async def root(self, size: int) -> bytes:
        """The RFC 9162 tree head of the first ``size`` entries."""
        nodes = await self.store.audit_nodes(set(root_nodes(size)))
        return root_from(size, nodes)

    async def _check_size(self, size: int) -> int:
        current = await self.store.audit_size()
        if size < 0 or size > current:
            raise BadRequest(f"size must be between 0 and the log size ({current})")
        return current

    async def inclusion(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3 inclusion proof of entry ``index`` in the tree of ``size``."""
        await self._check_size(size)
        if not 0 <= index < size:
            raise BadRequest("index must be below size")
        nodes = await self.store.audit_nodes(set(inclusion_requires(index, size)))
        return inclusion_proof(index, size, nodes)

    async def consistency(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 §2.1.4 consistency proof between two tree sizes."""
        await self._check_size(second)
        if not 0 < first <= second:
            raise BadRequest("need 0 < first <= second")
        nodes = await self.store.audit_nodes(set(consistency_requires(first, second)))
        return consistency_proof(first, second, nodes)

    async def checkpoint(self, now: datetime) -> CheckpointRecord | None:
        """Sign and store a checkpoint of the current size (None when nothing is new)."""
        size = await self.store.audit_size()
        latest = await self.store.latest_checkpoint()
        if size == 0 or (latest is not None and latest.size >= size):
            return None
        root = await self.root(size)
        if latest is not None:
            # Never sign a head that is not an extension of the previous *signed* one (the
            # note, not the unsigned root column, is what others rely on).
            previous = self.open(latest.note)
            proof = await self.consistency(previous.size, size)
            verify_consistency(previous.size, size, previous.root, root, proof)
        note = sign_checkpoint(self.signer, Checkpoint(self.origin, size, root))
        record = CheckpointRecord(size=size, root=root, note=note, created_at=now)
        # Witness first: a checkpoint that exists only in the main store is the weaker copy.
        if self.witness is not None:
            self.witness.write(size, note)
        await self.store.add_checkpoint(record)
        return record

    def verifier_key(self) -> str:
        """The signed-note verifier key of the audit key."""
        return self.signer.verifier_key()

    def open(self, note: str) -> Checkpoint:
        """Verify a checkpoint note signed by this log's key."""
        return open_checkpoint(self.signer.verifier(), note, origin=self.origin)
