"""herald.audit.verify: the offline verifier names the first index that fails, and why.

Logs are built in memory exactly as the store builds them (AuditEvent entries, RFC 9162
leaf hashes, checkpoints signed as C2SP notes) with heads from ``merkle.root_hash``, an
implementation independent of the verifier's incremental stack. Each tamper is applied to
the stored rows, checkpoints or witness copies, and must be reported with its exact index
and reason; a randomised test does the same at random places in a 10,000-entry log.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import Progress, TaskID
from sqlalchemy import create_engine, insert
from typer.testing import CliRunner, Result

from herald.audit.bundle import (
    BundleHeader,
    BundleInvalid,
    BundleReader,
    checkpoint_line,
    entry_line,
)
from herald.audit.entry import AuditEvent, canonical_json
from herald.audit.merkle import EMPTY_ROOT, leaf_hash, root_hash
from herald.audit.note import Checkpoint, NoteSigner, sign_checkpoint, sign_note
from herald.audit.verify import REASONS, EntryRow, VerifyReport, verify_log
from herald.cli import audit as audit_cli_module
from herald.cli.main import cli
from herald.storage import schema

ORIGIN = "herald.test/audit"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SIGNER = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def event(index: int, actor: str = "app-1") -> tuple[bytes, bytes]:
    """The canonical entry and leaf hash of a plausible event at ``index``."""
    return AuditEvent(
        time=T0 + timedelta(milliseconds=index),
        tenant="tenant-1",
        actor=actor,
        action="publish.accepted",
        object=f"msg-{index:06d}",
        details={"topic": "orders.shipped", "commitment": f"{index:064x}"},
    )(index)


def sign(size: int, root: bytes, signer: NoteSigner = SIGNER) -> str:
    return sign_checkpoint(signer, Checkpoint(signer.name, size, root))


@dataclass
class Log:
    """Stored rows and checkpoints plus the witness's copies: what an attacker can edit."""

    rows: list[EntryRow]
    stored: dict[int, str]
    witness: dict[int, str]
    sizes: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, n: int, sizes: list[int]) -> Log:
        rows = [(i, *event(i)) for i in range(n)]
        leaves = [leaf for _, _, leaf in rows]
        notes = {size: sign(size, root_hash(leaves[:size])) for size in sizes}
        return cls(rows, notes, dict(notes), sorted(sizes))

    def copy(self) -> Log:
        return Log(list(self.rows), dict(self.stored), dict(self.witness), list(self.sizes))

    def verify(self, **options: object) -> VerifyReport:
        return verify_log(
            self.rows,
            sorted(self.stored.items()),
            SIGNER.verifier(),
            origin=ORIGIN,
            witness=self.witness,
            **options,  # type: ignore[arg-type]
        )

    def failure(self) -> tuple[int | None, str]:
        report = self.verify()
        assert report.failure is not None, "tampering went unnoticed"
        assert report.failure.reason in REASONS
        return report.failure.index, report.failure.reason

    def before(self, index: int) -> int:
        """The largest checkpoint size at or below ``index`` (0 when none)."""
        return max((s for s in self.sizes if s <= index), default=0)

    # -- tampering ----------------------------------------------------------------------
    def renumber(self) -> None:
        """Give every row its position as stored index (what a careful attacker does)."""
        self.rows = [(p, entry, leaf) for p, (_, entry, leaf) in enumerate(self.rows)]

    def flip_byte(self, index: int, offset: int | None = None) -> None:
        stored, entry, leaf = self.rows[index]
        raw = bytearray(entry)
        raw[len(raw) // 2 if offset is None else offset] ^= 0x01
        self.rows[index] = (stored, bytes(raw), leaf)

    def rehash(self, index: int, *, resign: bool = False) -> None:
        """Change entry ``index`` and recompute its stored leaf hash (and re-sign)."""
        entry, leaf = event(index, "intruder")
        self.rows[index] = (self.rows[index][0], entry, leaf)
        if resign:
            self.resign()

    def delete(self, index: int, *, renumber: bool) -> None:
        del self.rows[index]
        if renumber:
            self.renumber()

    def insert_forged(self, index: int) -> None:
        entry, leaf = event(index, "intruder")
        self.rows.insert(index, (index, entry, leaf))
        self.renumber()

    def insert_copy(self, index: int, source: int) -> None:
        _, entry, leaf = self.rows[source]
        self.rows.insert(index, (index, entry, leaf))
        self.renumber()

    def swap(self, a: int, b: int) -> None:
        self.rows[a], self.rows[b] = self.rows[b], self.rows[a]
        self.renumber()

    def truncate(self, size: int, *, drop_checkpoints: bool = False) -> None:
        del self.rows[size:]
        if drop_checkpoints:
            self.stored = {s: n for s, n in self.stored.items() if s <= size}

    def resign(self) -> None:
        """Re-sign every stored checkpoint over the current rows (an attacker with the key)."""
        leaves = [leaf for _, _, leaf in self.rows]
        self.stored = {s: sign(s, root_hash(leaves[:s])) for s in self.stored}


def break_signature(note: str) -> str:
    """``note`` with one bit of its Ed25519 signature flipped (key id kept)."""
    body, _, last = note.rstrip("\n").rpartition("\n")
    prefix, _, sig64 = last.rpartition(" ")
    raw = bytearray(base64.b64decode(sig64))
    raw[10] ^= 0x01
    return f"{body}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


SIZES = [1, 3, 7, 8, 13, 20, 32, 33, 50]


@pytest.fixture
def log() -> Log:
    return Log.build(50, SIZES)


# -- intact ---------------------------------------------------------------------------------
def test_intact_log_verifies(log: Log) -> None:
    report = log.verify()
    assert report.failure is None
    assert report.ok
    assert (report.entries, report.checkpoints, report.witness, report.witnessed) == (
        50,
        len(SIZES),
        len(SIZES),
        len(SIZES),
    )
    assert report.size == 50
    assert report.root == root_hash([leaf for _, _, leaf in log.rows])


def test_every_size_recomputes_to_the_rfc_head() -> None:
    # A checkpoint at every size 0..300: the incremental head equals MTH at each.
    n = 300
    log = Log.build(n, list(range(n + 1)))
    assert log.verify().failure is None


def test_empty_log_and_no_checkpoints() -> None:
    report = verify_log([], [], SIGNER.verifier())
    assert report.ok
    assert (report.entries, report.size, report.root) == (0, 0, EMPTY_ROOT)


def test_unsigned_tail_after_the_last_checkpoint_is_not_a_failure(log: Log) -> None:
    log.rows.extend((i, *event(i)) for i in range(50, 60))
    report = log.verify()
    assert report.ok
    assert (report.entries, report.size) == (60, 50)


def test_checkpoints_may_be_given_without_their_stored_size(log: Log) -> None:
    report = verify_log(log.rows, list(log.stored.values()), SIGNER.verifier())
    assert report.ok


def test_progress_is_reported() -> None:
    log = Log.build(25, [25])
    seen: list[int] = []
    assert log.verify(progress=seen.append, progress_every=10).ok
    assert seen == [10, 20, 25]


# -- entries ----------------------------------------------------------------------------------
def test_one_changed_byte_is_modified_at_its_index(log: Log) -> None:
    log.flip_byte(17)
    assert log.failure() == (17, "modified")


def test_changed_entry_with_recomputed_leaf_hash_names_the_range(log: Log) -> None:
    log.rehash(25)  # checkpoints 20 and 32 surround it
    report = log.verify()
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (20, "modified")
    assert "[20, 32)" in report.failure.detail
    assert "first index that may be wrong" in report.failure.detail


def test_non_canonical_entry_is_modified_locally(log: Log) -> None:
    stored, entry, _ = log.rows[40]
    spaced = entry.replace(b",", b", ", 1)
    log.rows[40] = (stored, spaced, leaf_hash(spaced))
    assert log.failure() == (40, "modified")


def test_entry_without_an_index_is_modified(log: Log) -> None:
    forged = canonical_json({"hello": "world"})
    log.rows[5] = (5, forged, leaf_hash(forged))
    assert log.failure() == (5, "modified")


def test_stored_index_column_changed_is_modified(log: Log) -> None:
    stored, entry, leaf = log.rows[30]
    log.rows[30] = (stored + 1000, entry, leaf)
    assert log.failure() == (30, "modified")


@pytest.mark.parametrize("renumber", [False, True])
@pytest.mark.parametrize("index", [0, 12, 13, 31, 48])
def test_deleted_entry_is_missing(log: Log, index: int, renumber: bool) -> None:
    log.delete(index, renumber=renumber)
    assert log.failure() == (index, "missing")


def test_deleted_block_is_missing_from_its_first_index(log: Log) -> None:
    del log.rows[10:14]
    index, reason = log.failure()
    assert (index, reason) == (10, "missing")
    assert "entries 10 to 13 are missing" in str(log.verify().failure)


def test_deleting_the_last_entry_is_a_truncation(log: Log) -> None:
    log.delete(49, renumber=False)
    assert log.failure() == (49, "truncated")


@pytest.mark.parametrize("index", [0, 6, 7, 19, 32, 49])
def test_forged_inserted_entry_is_inserted_at_its_position(log: Log, index: int) -> None:
    # 6, 19 and 49 sit just before a checkpoint: its head fails before the duplicate claim
    # is seen, and the insertion must still win.
    log.insert_forged(index)
    assert log.failure() == (index, "inserted")


def test_two_forged_entries_are_inserted_from_the_first(log: Log) -> None:
    log.insert_forged(21)
    log.insert_forged(22)
    assert log.failure() == (21, "inserted")


@pytest.mark.parametrize(("index", "source"), [(10, 3), (10, 9), (10, 40), (10, 11), (0, 49)])
def test_copied_entry_is_inserted_at_its_position(log: Log, index: int, source: int) -> None:
    log.insert_copy(index, source)
    assert log.failure() == (index, "inserted")


def test_copy_of_an_entry_next_to_itself_is_inserted_after_it(log: Log) -> None:
    log.insert_copy(10, 10)  # positions 10 and 11 both hold entry 10: 11 is the extra one
    assert log.failure() == (11, "inserted")


def test_foreign_entry_claiming_an_index_beyond_the_log_is_inserted(log: Log) -> None:
    entry, leaf = event(999)
    log.rows.insert(12, (12, entry, leaf))
    log.renumber()
    assert log.failure() == (12, "inserted")


@pytest.mark.parametrize(("a", "b"), [(0, 1), (4, 5), (10, 40), (7, 8), (31, 32), (0, 49)])
def test_swapped_entries_are_reordered_at_the_first(log: Log, a: int, b: int) -> None:
    log.swap(a, b)
    assert log.failure() == (a, "reordered")


def test_storage_order_swap_without_renumbering_is_reordered(log: Log) -> None:
    log.rows[3], log.rows[9] = log.rows[9], log.rows[3]
    assert log.failure() == (3, "reordered")


def test_moved_entry_is_reordered(log: Log) -> None:
    log.rows.insert(30, log.rows.pop(10))
    log.renumber()
    assert log.failure() == (10, "reordered")


# -- truncation and roll-back ---------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 5, 20, 33, 49])
def test_truncated_tail_is_named_by_the_log_size(log: Log, size: int) -> None:
    log.truncate(size)
    report = log.verify()
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (size, "truncated")
    assert "was signed" in report.failure.detail


@pytest.mark.parametrize("size", [0, 20, 25, 49])
def test_rolled_back_database_is_caught_by_the_witness(log: Log, size: int) -> None:
    log.truncate(size, drop_checkpoints=True)
    report = log.verify()
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (size, "truncated")
    assert "witness" in report.failure.detail


def test_rolled_back_database_without_a_witness_cannot_be_told(log: Log) -> None:
    log.truncate(25, drop_checkpoints=True)
    log.witness = {}
    assert log.verify().ok  # what the witness is for


def test_rolled_back_then_diverged_log_is_a_witness_mismatch(log: Log) -> None:
    log.truncate(25, drop_checkpoints=True)
    log.rows.extend((i, *event(i, "after-rollback")) for i in range(25, 50))
    log.resign()  # the node signs its new history (the witness has the old one)
    log.stored.update({50: sign(50, root_hash([leaf for _, _, leaf in log.rows]))})
    assert log.failure() == (20, "witness-mismatch")


# -- signatures and witness ---------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 13, 50])
def test_replaced_checkpoint_signature_is_bad_signature_at_its_size(log: Log, size: int) -> None:
    log.stored[size] = break_signature(log.stored[size])
    report = log.verify()
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (size, "bad-signature")


def test_bad_witness_signature(log: Log) -> None:
    log.witness[32] = break_signature(log.witness[32])
    report = log.verify()
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (32, "bad-signature")
    assert "witness" in report.failure.detail


def test_checkpoint_signed_by_another_key_is_bad_signature(log: Log) -> None:
    other = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    leaves = [leaf for _, _, leaf in log.rows]
    log.stored[20] = sign(20, root_hash(leaves[:20]), other)
    assert log.failure() == (20, "bad-signature")


def test_checkpoint_of_another_origin_is_bad_signature(log: Log) -> None:
    leaves = [leaf for _, _, leaf in log.rows]
    text = Checkpoint("elsewhere.test/audit", 20, root_hash(leaves[:20])).to_text()
    log.stored[20] = SIGNER.sign(text)
    log.witness.pop(20)
    assert log.failure() == (20, "bad-signature")


def test_garbage_checkpoint_is_bad_signature_at_its_stored_size(log: Log) -> None:
    log.stored[13] = "not a note"
    assert log.failure() == (13, "bad-signature")


def test_forged_checkpoint_beyond_the_log_is_bad_signature(log: Log) -> None:
    log.stored[80] = break_signature(sign(80, b"\x01" * 32))
    assert log.failure() == (80, "bad-signature")


def test_entries_resigned_with_the_key_are_caught_by_the_witness(log: Log) -> None:
    log.rehash(25, resign=True)
    report = log.verify()
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (20, "witness-mismatch")


def test_stored_checkpoint_must_equal_the_witness_copy_byte_for_byte(log: Log) -> None:
    cosigner = NoteSigner("witness.test", Ed25519PrivateKey.generate())
    text = SIGNER.verifier().verify(log.witness[33])
    log.witness[33] = sign_note(text, [SIGNER, cosigner])  # still verifies, other bytes
    assert log.failure() == (33, "witness-mismatch")


def test_witness_file_named_for_another_size(log: Log) -> None:
    log.witness[21] = log.witness.pop(20)
    assert log.failure() == (20, "witness-mismatch")


def test_witness_only_checkpoints_count(log: Log) -> None:
    log.stored = {}
    report = log.verify()
    assert report.ok
    assert (report.checkpoints, report.witness, report.witnessed) == (0, len(SIZES), 0)


def test_stored_size_column_contradicting_the_note_is_inconsistent(log: Log) -> None:
    log.stored[21] = log.stored.pop(20)
    assert log.failure() == (20, "inconsistent")


def test_two_valid_stored_heads_for_one_size_are_inconsistent(log: Log) -> None:
    checkpoints = [*log.stored.values(), sign(20, b"\x02" * 32)]
    report = verify_log(log.rows, checkpoints, SIGNER.verifier(), witness=log.witness)
    assert report.failure is not None
    assert (report.failure.index, report.failure.reason) == (20, "inconsistent")


def test_expected_size_from_a_bundle_header(log: Log) -> None:
    assert log.verify(expected_size=50).ok
    short = log.verify(expected_size=51).failure
    assert short is not None
    assert (short.index, short.reason) == (50, "truncated")
    extra = log.verify(expected_size=49).failure
    assert extra is not None
    assert (extra.index, extra.reason) == (49, "inserted")


# -- bundles ---------------------------------------------------------------------------------
def write_bundle(path: Path, log: Log, size: int | None = None) -> None:
    out = io.StringIO()
    header = BundleHeader(ORIGIN, SIGNER.verifier_key(), len(log.rows) if size is None else size)
    out.write(header.to_line())
    for index, entry, leaf in log.rows:
        out.write(entry_line(index, entry, leaf))
    for _, note in sorted(log.stored.items()):
        out.write(checkpoint_line(note))
    path.write_text(out.getvalue(), encoding="utf-8")


def verify_bundle(path: Path, log: Log) -> VerifyReport:
    reader = BundleReader(path)
    return verify_log(
        reader.entries(),
        reader.checkpoints(),
        SIGNER.verifier(),
        origin=reader.header.origin,
        witness=log.witness,
        expected_size=reader.header.size,
    )


def test_bundle_round_trip(tmp_path: Path, log: Log) -> None:
    path = tmp_path / "audit.jsonl"
    write_bundle(path, log)
    reader = BundleReader(path)
    assert reader.header == BundleHeader(ORIGIN, SIGNER.verifier_key(), 50)
    assert list(reader.entries()) == log.rows
    assert reader.checkpoints() == [n for _, n in sorted(log.stored.items())]
    assert verify_bundle(path, log).ok


def test_malformed_bundle_line_is_modified_at_its_position(tmp_path: Path, log: Log) -> None:
    path = tmp_path / "audit.jsonl"
    write_bundle(path, log)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1 + 7] = "{not json\n"
    path.write_text("".join(lines), encoding="utf-8")
    failure = verify_bundle(path, log).failure
    assert failure is not None
    assert (failure.index, failure.reason) == (7, "modified")


def test_bundle_cut_short_is_truncated_without_a_witness(tmp_path: Path, log: Log) -> None:
    path = tmp_path / "audit.jsonl"
    write_bundle(path, log)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + 30]), encoding="utf-8")  # header + 30 entries
    log.witness = {}
    failure = verify_bundle(path, log).failure
    assert failure is not None
    assert (failure.index, failure.reason) == (30, "truncated")


@pytest.mark.parametrize(
    "first",
    ["", "[]\n", '{"format": "other/1"}\n', '{"format": "herald-audit-bundle/1", "size": -1}\n'],
)
def test_file_without_a_bundle_header_is_refused(tmp_path: Path, first: str) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(first, encoding="utf-8")
    with pytest.raises(BundleInvalid):
        BundleReader(path)


# -- randomised ------------------------------------------------------------------------------
BIG = 10_000
BIG_SIZES = [*range(997, BIG, 997), BIG]  # irregular sizes, and the whole log signed


@pytest.fixture(scope="module")
def big() -> Log:
    return Log.build(BIG, BIG_SIZES)


Tamper = Callable[[Log, random.Random], tuple[int, str]]


def _flip(log: Log, rng: random.Random) -> tuple[int, str]:
    i = rng.randrange(BIG)
    log.flip_byte(i, rng.randrange(len(log.rows[i][1])))
    return i, "modified"


def _rehash(log: Log, rng: random.Random) -> tuple[int, str]:
    i = rng.randrange(BIG)
    log.rehash(i)
    return log.before(i), "modified"


def _delete(log: Log, rng: random.Random) -> tuple[int, str]:
    i = rng.randrange(BIG)
    log.delete(i, renumber=rng.random() < 0.5)
    return i, "missing" if i < BIG - 1 else "truncated"


def _insert(log: Log, rng: random.Random) -> tuple[int, str]:
    k = rng.randrange(BIG)
    log.insert_forged(k)
    return k, "inserted"


def _copy(log: Log, rng: random.Random) -> tuple[int, str]:
    k, j = rng.randrange(BIG), rng.randrange(BIG)
    log.insert_copy(k, j)
    return (k + 1 if j == k else k), "inserted"


def _swap(log: Log, rng: random.Random) -> tuple[int, str]:
    a, b = sorted(rng.sample(range(BIG), 2))
    log.swap(a, b)
    return a, "reordered"


def _truncate(log: Log, rng: random.Random) -> tuple[int, str]:
    k = rng.randrange(BIG)
    log.truncate(k)
    return k, "truncated"


def _rollback(log: Log, rng: random.Random) -> tuple[int, str]:
    k = rng.randrange(BIG)
    log.truncate(k, drop_checkpoints=True)
    return k, "truncated"


def _signature(log: Log, rng: random.Random) -> tuple[int, str]:
    size = rng.choice(BIG_SIZES)
    copies = log.stored if rng.random() < 0.5 else log.witness
    copies[size] = break_signature(copies[size])
    return size, "bad-signature"


def _resign(log: Log, rng: random.Random) -> tuple[int, str]:
    i = rng.randrange(BIG)
    log.rehash(i, resign=True)
    return log.before(i), "witness-mismatch"


TAMPERS: list[Tamper] = [
    _flip,
    _rehash,
    _delete,
    _insert,
    _copy,
    _swap,
    _truncate,
    _rollback,
    _signature,
    _resign,
]


def test_random_tampering_of_a_large_log_is_always_detected(big: Log) -> None:
    assert big.verify().ok
    seed = int(os.environ.get("HERALD_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    misses = []
    for trial in range(120):
        tamper = TAMPERS[trial % len(TAMPERS)] if trial < len(TAMPERS) else rng.choice(TAMPERS)
        log = big.copy()
        expected = tamper(log, rng)
        report = log.verify()
        found = (report.failure.index, report.failure.reason) if report.failure else None
        if found != expected:
            misses.append((trial, tamper.__name__, expected, found))
    assert misses == [], f"HERALD_TEST_SEED={seed}"


SMALL = 24
SMALL_SIZES = [1, 2, 3, 5, 8, 13, 16, 21, 24]


def _small_edit(kind: str, log: Log, i: int, j: int) -> tuple[int, str]:
    """Apply tamper ``kind`` at ``i`` (and ``j``) to ``log``; the expected failure."""
    before = log.before(i)
    gone = "missing" if i < SMALL - 1 else "truncated"
    edits: dict[str, tuple[Callable[[], object], tuple[int, str]]] = {
        "flip": (lambda: log.flip_byte(i), (i, "modified")),
        "rehash": (lambda: log.rehash(i), (before, "modified")),
        "delete": (lambda: log.delete(i, renumber=False), (i, gone)),
        "delete+renumber": (lambda: log.delete(i, renumber=True), (i, gone)),
        "insert": (lambda: log.insert_forged(i), (i, "inserted")),
        "truncate": (lambda: log.truncate(i), (i, "truncated")),
        "rollback": (lambda: log.truncate(i, drop_checkpoints=True), (i, "truncated")),
        "resign": (lambda: log.rehash(i, resign=True), (before, "witness-mismatch")),
        "copy": (lambda: log.insert_copy(i, j), (i + 1 if i == j else i, "inserted")),
        "swap": (lambda: log.swap(i, j), (i, "reordered")),
    }
    edit, expected = edits[kind]
    edit()
    return expected


def test_every_tamper_at_every_place_of_a_small_log() -> None:
    base = Log.build(SMALL, SMALL_SIZES)
    single = ["flip", "rehash", "delete", "delete+renumber", "insert", "truncate", "rollback"]
    cases = [(kind, i, 0) for kind in [*single, "resign"] for i in range(SMALL)]
    cases += [("copy", i, j) for i in range(SMALL) for j in range(SMALL)]
    cases += [("swap", i, j) for i in range(SMALL) for j in range(i + 1, SMALL)]
    wrong = []
    for kind, i, j in cases:
        log = base.copy()
        expected = _small_edit(kind, log, i, j)
        if log.failure() != expected:
            wrong.append((kind, i, j, expected, log.failure()))
    assert wrong == []


# -- the command, in process ---------------------------------------------------------------------
def write_database(path: Path, log: Log) -> str:
    """An SQLite database with the audit tables holding ``log``; its URL."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        schema.metadata.create_all(engine, tables=[schema.audit_entries, schema.audit_checkpoints])
        with engine.begin() as conn:
            conn.execute(
                insert(schema.audit_entries),
                [{"idx": i, "entry": e, "leaf_hash": h, "created_at": T0} for i, e, h in log.rows],
            )
            for size, note in log.stored.items():
                text = note[: note.rfind("\n\n") + 1]
                root = Checkpoint.parse(text).root
                conn.execute(
                    insert(schema.audit_checkpoints).values(
                        size=size, root=root, note=note, created_at=T0
                    )
                )
    finally:
        engine.dispose()
    return f"sqlite:///{path}"


def write_witness(directory: Path, log: Log) -> Path:
    directory.mkdir()
    for size, note in log.witness.items():
        (directory / f"{size:020d}.checkpoint").write_text(note, encoding="utf-8")
    return directory


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", "verify", *args])


def test_cli_verifies_a_large_log_with_a_progress_bar(
    tmp_path: Path, big: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = big.copy()
    log.rows.append((BIG, *event(BIG)))  # more than LARGE_LOG entries
    url = write_database(tmp_path / "herald.db", log)
    witness = write_witness(tmp_path / "witness", log)
    updates: list[int] = []

    class Recording(Progress):
        def update(self, task_id: TaskID, **fields: Any) -> None:
            updates.append(fields["completed"])
            super().update(task_id, **fields)

    monkeypatch.setattr(audit_cli_module, "Progress", Recording)
    result = invoke(
        "--database-url", url, "--key", SIGNER.verifier_key(), "--witness", str(witness)
    )
    assert result.exit_code == 0, result.output
    root = base64.b64encode(root_hash([leaf for _, _, leaf in big.rows])).decode()
    assert result.stdout == (
        f"audit log intact: {BIG + 1} entries, {len(BIG_SIZES)} checkpoints "
        f"({len(BIG_SIZES)} witnessed), root {root} at size {BIG}\n"
    )
    assert updates[-1] == BIG + 1
    assert len(updates) > 10


def test_cli_reports_the_first_failure_in_one_line(tmp_path: Path, log: Log) -> None:
    log.swap(4, 9)
    url = write_database(tmp_path / "herald.db", log)
    key_file = tmp_path / "audit.key"
    key_file.write_text(SIGNER.verifier_key() + "\n", encoding="utf-8")
    witness = write_witness(tmp_path / "witness", log)
    result = invoke("--database-url", url, "--key", str(key_file), "--witness", str(witness))
    assert result.exit_code == 1
    assert result.stdout.startswith("audit log FAILED at index 4: reordered — ")
    assert result.stdout.count("\n") == 1
    as_json = invoke("--database-url", url, "--key", str(key_file), "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["index"], report["reason"]) == (False, 4, "reordered")


def test_cli_origin_must_match(tmp_path: Path, log: Log) -> None:
    url = write_database(tmp_path / "herald.db", log)
    key = SIGNER.verifier_key()
    assert invoke("--database-url", url, "--key", key, "--origin", ORIGIN).exit_code == 0
    result = invoke("--database-url", url, "--key", key, "--origin", "other.test/log", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["reason"] == "bad-signature"


@pytest.mark.parametrize(
    "args",
    [
        ["--database-url", "{url}", "--bundle", "{tmp}/b.jsonl", "--key", "{key}"],
        ["--database-url", "{url}", "--key", "not-a-key+00000000+AAAA"],
        ["--database-url", "{url}", "--key", "{tmp}/no-such-key-file"],
        ["--database-url", "{url}", "--key", "{key}", "--witness", "{tmp}/no-witness"],
        ["--database-url", "sqlite:///{tmp}/missing.db", "--key", "{key}"],
        ["--database-url", "mysql://db/herald", "--key", "{key}"],
        ["--bundle", "{tmp}/missing.jsonl", "--key", "{key}"],
        ["--bundle", "{url_file}", "--key", "{key}"],
    ],
)
def test_cli_cannot_run_exits_2(tmp_path: Path, log: Log, args: list[str]) -> None:
    url = write_database(tmp_path / "herald.db", log)
    values = {
        "url": url,
        "url_file": str(tmp_path / "herald.db"),  # a file that is not a bundle
        "key": SIGNER.verifier_key(),
        "tmp": str(tmp_path),
    }
    result = invoke(*[arg.format(**values) for arg in args])
    assert result.exit_code == 2, result.output
    assert "cannot verify" in result.stderr
    assert not (tmp_path / "missing.db").exists()  # verification never creates a database
