"""Offline verification of the audit log (DESIGN §6): ``herald audit verify``'s core.

Pure and streaming: the input is the entries *as stored* (``(stored index, entry bytes,
stored leaf hash)`` in storage order), the checkpoint notes the store kept, the witness's
copies and the trusted verifier key. Nothing the server derived is trusted: leaf hashes are
recomputed from the entry bytes and the RFC 9162 tree head is recomputed incrementally with
a stack of perfect subtrees (O(log n) memory), so the stored ``audit_nodes`` are never
read. At every size some checkpoint names, the recomputed head is compared with the signed
one.

The first failure wins and is reported as a :class:`VerifyFailure` ``(index, reason,
detail)``. Reasons:

``modified``
    An entry's bytes do not match its stored leaf hash, or are not a canonical JSON audit
    entry, or its row carries another index. When the attacker also recomputed the stored
    leaf hash, only the next signed head can tell: the failure then names the range
    ``[previous verified size, this size)`` and its first index.
``missing`` / ``inserted`` / ``reordered``
    Told from the index each entry claims in its own JSON (``"index"``), which is covered by
    its leaf hash: a claim above the position means entries are missing (or one was moved
    forward), a claim already made means one was inserted.
``truncated``
    A valid checkpoint (stored or witnessed) is larger than the log: the tail was deleted or
    the database rolled back to an earlier copy. The index is the log's size.
``bad-signature``
    A checkpoint note (stored or witnessed) does not verify with the key and origin; the
    index is its size.
``witness-mismatch``
    A witness copy disagrees with the recomputed head, or differs from the stored note of
    the same size.
``inconsistent``
    Stored checkpoint metadata contradicts its signed note (the size column), or two valid
    stored checkpoints give one size two heads.

Failures found at a checkpoint are held back for one more entry: an entry inserted just
before a checkpoint changes that head but is only recognised (by its duplicate claim) at
the next position, and the failure with the smaller index wins.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from herald.audit.merkle import EMPTY_ROOT, leaf_hash, node_hash
from herald.audit.note import Checkpoint, NoteInvalid, NoteVerifier, open_checkpoint

__all__ = [
    "REASONS",
    "EntryRow",
    "VerifyFailure",
    "VerifyReport",
    "verify_log",
]

#: Every reason a :class:`VerifyFailure` can give.
REASONS = (
    "modified",
    "missing",
    "inserted",
    "reordered",
    "truncated",
    "bad-signature",
    "witness-mismatch",
    "inconsistent",
)

#: One stored entry: ``(stored index, canonical JSON entry, stored leaf hash)``.
EntryRow = tuple[int, bytes, bytes]


@dataclass(frozen=True, slots=True)
class VerifyFailure:
    """Why the log does not verify.

    Attributes:
        index: The first entry index that fails (or may be wrong), the size of a bad
            checkpoint, or the log size for a truncation; ``None`` when not about one index.
        reason: One of :data:`REASONS`.
        detail: One human sentence.
    """

    index: int | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify_log`.

    Attributes:
        entries: Entries read and verified (up to the failure, if any).
        checkpoints: Stored checkpoint notes given.
        witness: Witness notes given.
        failure: The first failure, or ``None`` when the log is intact.
        witnessed: Stored checkpoints with a byte-identical witness copy (when intact).
        size: The latest signed size (stored or witnessed), or ``entries`` when none.
        root: The recomputed head at ``size``.
    """

    entries: int
    checkpoints: int
    witness: int
    failure: VerifyFailure | None
    witnessed: int = 0
    size: int = 0
    root: bytes = EMPTY_ROOT

    @property
    def ok(self) -> bool:
        """True when the log verified."""
        return self.failure is None


@dataclass(slots=True)
class _Note:
    """A checkpoint note as given, opened (or not) once, before the entries stream."""

    source: str  # "checkpoint" (stored) or "witness"
    size: int  # where it is checked: its signed size, else its claimed or stored size
    note: str
    checkpoint: Checkpoint | None
    problem: VerifyFailure | None = None


class _Tree:
    """RFC 9162 tree head of a growing list of leaves: a stack of perfect subtrees."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[bytes] = []  # one hash per one-bit of size, largest first
        self.size = 0

    def push(self, leaf: bytes) -> None:
        digest, n = leaf, self.size
        # Each trailing one-bit of the old size is a perfect subtree the new leaf completes.
        while n & 1:
            digest = node_hash(self._stack.pop(), digest)
            n >>= 1
        self._stack.append(digest)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        digest = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def _claimed_size(note: str) -> int | None:
    """The size an (unverified) checkpoint note claims, to place a failure; None if none."""
    split = note.rfind("\n\n")
    if split < 0:
        return None
    try:
        return Checkpoint.parse(note[: split + 1]).size
    except NoteInvalid:
        return None


def _claim(entry: bytes) -> int | None:
    """The index an entry claims in its JSON, or None when it has no integer one."""
    try:
        value = json.loads(entry)
    except (ValueError, RecursionError):
        return None
    return _index_of(value)


def _index_of(value: object) -> int | None:
    if not isinstance(value, dict):
        return None
    index = value.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


def _canonical(value: object) -> bytes:
    """:func:`herald.audit.entry.canonical_json` of a value decoded from JSON.

    The same encoding without its value check (a third of the verifier's time): a value
    that check would refuse (a float) was never written by Herald, so the signed heads
    catch it anyway.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _entries(count: int) -> str:
    return "1 entry" if count == 1 else f"{count} entries"


class _Run:
    """One verification pass (the state of :func:`verify_log`)."""

    def __init__(
        self,
        entries: Iterable[EntryRow],
        stored: list[_Note],
        witness: list[_Note],
        *,
        expected_size: int | None,
        progress: Callable[[int], None] | None,
        progress_every: int,
    ) -> None:
        self._it: Iterator[EntryRow] = iter(entries)
        self._stored: dict[int, list[_Note]] = {}
        for item in stored:
            self._stored.setdefault(item.size, []).append(item)
        self._witness: dict[int, list[_Note]] = {}
        for item in witness:
            self._witness.setdefault(item.size, []).append(item)
        self._sizes = set(self._stored) | set(self._witness)
        self._counts = (len(stored), len(witness))
        self._expected_size = expected_size
        self._progress = progress
        self._every = max(1, progress_every)
        self._tree = _Tree()
        self._verified = 0  # the largest size whose head matched every note of that size
        self._witnessed = 0
        self._previous: bytes | None = None  # bytes of the previous entry
        self._latest: tuple[int, bytes] | None = None  # latest signed (size, root) checked

    # -- the pass ------------------------------------------------------------------------
    def run(self) -> VerifyReport:
        # A failure found at a checkpoint is held until the next entry has been checked.
        pending = self._at_size() if 0 in self._sizes else None
        position = 0
        for stored_index, entry, stored_leaf in self._it:
            local, leaf = self._check_entry(position, stored_index, entry, stored_leaf)
            failure = _earliest(pending, position, local)
            if failure is not None:
                return self._failed(position, failure)
            self._tree.push(leaf)
            self._previous = entry
            position += 1
            if self._progress is not None and position % self._every == 0:
                self._progress(position)
            if position in self._sizes:
                pending = self._at_size()
        if self._progress is not None:
            self._progress(position)
        failure = pending or self._beyond(position) or self._expected(position)
        if failure is not None:
            return self._failed(position, failure)
        size, root = self._latest if self._latest is not None else (position, self._tree.root())
        return VerifyReport(
            entries=position,
            checkpoints=self._counts[0],
            witness=self._counts[1],
            failure=None,
            witnessed=self._witnessed,
            size=size,
            root=root,
        )

    def _failed(self, position: int, failure: VerifyFailure) -> VerifyReport:
        return VerifyReport(
            entries=position,
            checkpoints=self._counts[0],
            witness=self._counts[1],
            failure=failure,
            witnessed=self._witnessed,
        )

    # -- one entry -----------------------------------------------------------------------
    def _check_entry(
        self, position: int, stored_index: int, entry: bytes, stored_leaf: bytes
    ) -> tuple[VerifyFailure | None, bytes]:
        leaf = leaf_hash(entry)
        if not hmac.compare_digest(leaf, stored_leaf):
            return VerifyFailure(
                position, "modified", f"entry {position} does not match its stored leaf hash"
            ), leaf
        try:
            value = json.loads(entry)
            claim = _index_of(value) if _canonical(value) == entry else None
        except (ValueError, TypeError, RecursionError):
            claim = None
        if claim is None:
            return VerifyFailure(
                position,
                "modified",
                f"entry {position} is not a canonical JSON audit entry with an index",
            ), leaf
        if claim != position:
            return self._misplaced(position, claim, entry), leaf
        if stored_index != position:
            return VerifyFailure(
                position,
                "modified",
                f"entry {position} is stored under index {stored_index}",
            ), leaf
        return None, leaf

    def _misplaced(self, position: int, claim: int, entry: bytes) -> VerifyFailure:
        """Classify an entry whose claimed index is not its position (reads ahead)."""
        here = f"position {position} holds the entry that claims index {claim}"
        if claim < position:
            # Positions below hold their own claims, so `claim` is claimed twice.
            if entry == self._previous:
                return VerifyFailure(
                    position, "inserted", f"{here}: a second copy of entry {position - 1}"
                )
            following = next(self._it, None)
            next_claim = _claim(following[1]) if following is not None else None
            continues = next_claim == claim + 1 if following is not None else claim == position - 1
            if continues:
                # The original sequence resumes here: positions [claim, position) are extra.
                extra = (
                    f"the entry at position {claim} was inserted"
                    if position - claim == 1
                    else f"the entries at positions {claim} to {position - 1} were inserted"
                )
                return VerifyFailure(
                    claim, "inserted", f"{here} and the entries after it follow on: {extra}"
                )
            return VerifyFailure(position, "inserted", f"{here}, which entry {claim} already holds")
        # claim > position: the entry claiming `position` is missing or further on.
        found_at: int | None = None
        duplicate = False
        later = position
        for _, other, _ in self._it:
            later += 1
            other_claim = _claim(other)
            if other_claim == position and found_at is None:
                found_at = later
            elif other_claim == claim:
                duplicate = True
        size = later + 1
        if found_at is None:
            gap = f"entries {position} to {claim - 1} are" if claim - position > 1 else ""
            return VerifyFailure(
                position,
                "missing",
                f"no entry claims index {position}: {here}"
                + (f" ({gap} missing)" if gap else f" (entry {position} is missing)"),
            )
        if duplicate or claim >= size:
            return VerifyFailure(
                position,
                "inserted",
                f"{here}, a copy or a foreign entry (the entry that claims index {position} "
                f"follows at position {found_at})",
            )
        return VerifyFailure(
            position,
            "reordered",
            f"{here}; the entry that claims index {position} is at position {found_at}",
        )

    # -- checkpoints ---------------------------------------------------------------------
    def _at_size(self) -> VerifyFailure | None:
        """Check every note of the current size against the recomputed head."""
        size = self._tree.size
        root = self._tree.root()
        failure = self._check_stored(size, root) or self._check_witness(size, root)
        if failure is None:
            self._verified = size
            self._latest = (size, root)
        return failure

    def _check_stored(self, size: int, root: bytes) -> VerifyFailure | None:
        stored = self._stored.get(size, [])
        for item in stored:
            if item.problem is not None:
                return item.problem
        heads = {item.checkpoint.root for item in stored if item.checkpoint is not None}
        if len(heads) > 1:
            return VerifyFailure(
                size, "inconsistent", f"two stored checkpoints of size {size} differ in root"
            )
        since = self._verified
        if heads and heads != {root}:
            return VerifyFailure(
                since,
                "modified",
                f"the entries do not hash to the root signed at size {size}: an entry in "
                f"[{since}, {size}) was changed together with its stored leaf hash; "
                f"{since} is the first index that may be wrong",
            )
        return None

    def _check_witness(self, size: int, root: bytes) -> VerifyFailure | None:
        stored = self._stored.get(size, [])
        since = self._verified
        for item in self._witness.get(size, []):
            if item.problem is not None:
                return item.problem
            if item.checkpoint is not None and item.checkpoint.root != root:
                return VerifyFailure(
                    since,
                    "witness-mismatch",
                    f"the witness copy of size {size} has another root than the entries: "
                    f"an entry in [{since}, {size}) differs from what the witness saw; "
                    f"{since} is the first index that may be wrong",
                )
            for kept in stored:
                if kept.note != item.note:
                    return VerifyFailure(
                        size,
                        "witness-mismatch",
                        f"the stored checkpoint of size {size} differs from the witness copy",
                    )
            self._witnessed += len(stored)
        return None

    def _beyond(self, size: int) -> VerifyFailure | None:
        """Notes larger than the log: truncation if any is valid, else a bad signature."""
        later = sorted(s for s in self._sizes if s > size)
        for source in ("checkpoint", "witness"):
            notes = self._stored if source == "checkpoint" else self._witness
            for larger in later:
                if any(n.problem is None for n in notes.get(larger, [])):
                    if source == "checkpoint":
                        detail = (
                            f"a checkpoint of size {larger} was signed but the log has only "
                            f"{size} entries: the tail was deleted"
                        )
                    else:
                        detail = (
                            f"the witness holds a checkpoint of size {larger} but the log has "
                            f"only {size} entries: it was truncated or rolled back"
                        )
                    return VerifyFailure(size, "truncated", detail)
        for larger in later:
            for item in self._stored.get(larger, []) + self._witness.get(larger, []):
                if item.problem is not None:
                    return item.problem
        return None

    def _expected(self, size: int) -> VerifyFailure | None:
        expected = self._expected_size
        if expected is None or expected == size:
            return None
        if size < expected:
            return VerifyFailure(size, "truncated", f"{_entries(expected)} expected, {size} found")
        return VerifyFailure(expected, "inserted", f"{_entries(expected)} expected, {size} found")


def _earliest(
    held: VerifyFailure | None, size: int, local: VerifyFailure | None
) -> VerifyFailure | None:
    """Choose between a failure held at checkpoint ``size`` and the next entry's own.

    The entry's failure wins when it names an index below ``size`` (it explains the head
    that did not match, more precisely) or not above the held one.
    """
    if held is None or local is None:
        return held or local
    if local.index is not None and (
        local.index < size or held.index is None or local.index <= held.index
    ):
        return local
    return held


def _open_notes(
    items: Iterable[tuple[int | None, str]],
    source: str,
    verifier: NoteVerifier,
    origin: str | None,
) -> list[_Note]:
    what = "checkpoint" if source == "checkpoint" else "witness copy"
    opened: list[_Note] = []
    for stored_size, note in items:
        try:
            checkpoint = open_checkpoint(verifier, note, origin=origin)
        except NoteInvalid as exc:
            claimed = _claimed_size(note)
            where = claimed if claimed is not None else stored_size or 0
            problem = VerifyFailure(where, "bad-signature", f"the {what} of size {where}: {exc}")
            opened.append(_Note(source, where, note, None, problem))
            continue
        item = _Note(source, checkpoint.size, note, checkpoint)
        if stored_size is not None and stored_size != checkpoint.size:
            reason = "inconsistent" if source == "checkpoint" else "witness-mismatch"
            item.problem = VerifyFailure(
                min(stored_size, checkpoint.size),
                reason,
                f"the {what} stored as size {stored_size} is signed for size {checkpoint.size}",
            )
        opened.append(item)
    return opened


def _pairs(notes: Iterable[str | tuple[int, str]]) -> list[tuple[int | None, str]]:
    return [(None, note) if isinstance(note, str) else (note[0], note[1]) for note in notes]


def verify_log(
    entries: Iterable[EntryRow],
    checkpoints: Iterable[str | tuple[int, str]],
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    witness: Mapping[int, str] | None = None,
    expected_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
) -> VerifyReport:
    """Verify an audit log from its stored entries, checkpoints and witness copies.

    Args:
        entries: ``(stored index, entry bytes, stored leaf hash)`` in storage order
            (``ORDER BY idx``); read once, lazily.
        checkpoints: The stored checkpoint notes, bare or as ``(stored size, note)``; the
            stored size must agree with the signed one.
        verifier: The trusted audit key (an auditor gets it out of band).
        origin: The log's origin; when given every note must carry it. The audit key's name
            is the origin, so the key alone already binds it.
        witness: The witness's copies by size (file name).
        expected_size: The number of entries the source announced (a bundle header); any
            other count fails.
        progress: Called with the number of entries verified so far, every
            ``progress_every`` entries and at the end.
        progress_every: See ``progress``.

    Returns:
        The report; ``report.failure`` is the first failure or ``None``.
    """
    # Successive checkpoints need no RFC 9162 consistency proof here: every head is
    # recomputed from one and the same stream of entries, so the tree at a larger size
    # extends the tree at a smaller one by construction, and each signed head is compared
    # with that recomputation. A proof built from our own incremental state could only
    # restate this.
    stored = _open_notes(_pairs(checkpoints), "checkpoint", verifier, origin)
    copies = _open_notes(sorted((witness or {}).items()), "witness", verifier, origin)
    return _Run(
        entries,
        stored,
        copies,
        expected_size=expected_size,
        progress=progress,
        progress_every=progress_every,
    ).run()
