"""RFC 9162 §2.1 Merkle tree hashing, proofs and verification (pure functions, no I/O).

The log's storage keeps the hash of every *perfect, aligned* subtree: the node
``(level, index)`` covers leaves ``[index·2^level, (index+1)·2^level)`` and level 0 holds
the leaf hashes. Appending a leaf completes one node per trailing one-bit of its index
plus the leaf itself, so a log of n leaves stores ``2n - popcount(n)`` nodes (fewer than two
per append). Every subtree that RFC 9162's recursive definition of ``MTH`` produces for a
prefix ``D[0:n]`` starts at a multiple of a power of two at least as large as itself, so it
is the concatenation of O(log n) stored nodes: tree heads and proofs read O(log n) nodes.

The functions come in pairs so that a store can fetch everything in one query:

* ``*_requires`` / ``*_nodes`` list the nodes a computation reads;
* the computation takes a ``Mapping[Node, bytes]`` holding (at least) those nodes and raises
  :class:`KeyError` if one is missing, which means the store is incomplete.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step; every way a proof can be
wrong raises the one :class:`ProofInvalid`. Note that an inclusion proof does not bind the
tree size by itself (for some sizes the same path shape serves several sizes): the size is
authenticated by the signed tree head (checkpoint) that carries ``root``, so always verify
against a root whose size you trust.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence

from herald.errors import HeraldError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Node",
    "ProofInvalid",
    "append_nodes",
    "append_requires",
    "consistency_proof",
    "consistency_proof_nodes",
    "consistency_requires",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "inclusion_requires",
    "leaf_hash",
    "new_node_hashes",
    "node_hash",
    "range_hash",
    "range_nodes",
    "range_requires",
    "root_from",
    "root_hash",
    "root_nodes",
    "verify_consistency",
    "verify_inclusion",
]

#: A stored perfect subtree ``(level, index)``: leaves ``[index << level, (index + 1) << level)``.
Node = tuple[int, int]

#: RFC 9162 §2.1: SHA-256 is the log's hash; every node, root and proof element has this size.
HASH_SIZE = 32

#: RFC 9162 §2.1.1: the hash of an empty list is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofInvalid(HeraldError):
    """An inclusion or consistency proof does not verify.

    The one error of :func:`verify_inclusion` and :func:`verify_consistency`, whatever went
    wrong (bad index or size, wrong length, tampered element, root mismatch). Proofs and
    roots are public data, so the message says which check failed; callers should still
    treat every ``ProofInvalid`` alike.
    """


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``MTH({d0}) = SHA-256(0x00 || d0)``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``SHA-256(0x01 || MTH(left) || MTH(right))``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a list of *leaf hashes*.

    Splits at the largest power of two smaller than n (RFC 9162 §2.1.1), computed bottom-up
    with a stack so that it is O(n) time and O(log n) memory.
    """
    if not leaves:
        return EMPTY_ROOT
    # Stack of (subtree hash, subtree size); merging equal-size neighbours reproduces the
    # left-balanced shape of the RFC's recursive definition.
    stack: list[tuple[bytes, int]] = []
    for leaf in leaves:
        stack.append((leaf, 1))
        while len(stack) >= 2 and stack[-1][1] == stack[-2][1]:
            right, size = stack.pop()
            left, _ = stack.pop()
            stack.append((node_hash(left, right), size * 2))
    digest, _ = stack.pop()
    while stack:
        left, _ = stack.pop()
        digest = node_hash(left, digest)
    return digest


# --- helpers -----------------------------------------------------------------------------


def _split(n: int) -> int:
    """RFC 9162 §2.1.1: the largest power of two smaller than ``n`` (for ``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect(start: int, end: int) -> Node | None:
    """The stored node equal to leaves ``[start, end)``, if that range is one."""
    n = end - start
    if n > 0 and n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return (level, start >> level)
    return None


def _check_range(start: int, end: int) -> None:
    if not 0 <= start <= end:
        raise ValueError(f"need 0 <= start <= end, got [{start}, {end})")


# --- appending ---------------------------------------------------------------------------


def append_nodes(size: int) -> list[Node]:
    """The nodes completed by appending the leaf with 0-based index ``size``.

    That is ``(0, size)`` and every ancestor whose last leaf it is, bottom-up. A node at
    level ``l`` completes once per ``2^l`` leaves, so appends store fewer than two nodes on
    average.

    Args:
        size: the tree size before the append (the new leaf's index).

    Returns:
        The new nodes, from the leaf upwards.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    nodes = [(0, size)]
    level, index = 0, size
    # A right child (odd index) completes its parent; keep climbing while that holds.
    while index & 1:
        index >>= 1
        level += 1
        nodes.append((level, index))
    return nodes


def append_requires(size: int) -> list[Node]:
    """The existing nodes :func:`new_node_hashes` reads: the left siblings on the way up.

    Args:
        size: the tree size before the append (the new leaf's index).

    Returns:
        The left siblings, from the leaf level upwards (empty when ``size`` is even).
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    needed: list[Node] = []
    level, index = 0, size
    while index & 1:
        needed.append((level, index - 1))
        index >>= 1
        level += 1
    return needed


def new_node_hashes(size: int, leaf: bytes, lookup: Mapping[Node, bytes]) -> dict[Node, bytes]:
    """The hashes of :func:`append_nodes` ``(size)``, to store alongside the new leaf.

    Args:
        size: the tree size before the append (the new leaf's index).
        leaf: the new leaf's *leaf hash* (``leaf_hash(entry)``), stored as ``(0, size)``.
        lookup: holds at least :func:`append_requires` ``(size)``.

    Returns:
        ``{node: hash}`` for every node completed by the append.

    Raises:
        KeyError: ``lookup`` lacks a required left sibling.
    """
    if len(leaf) != HASH_SIZE:
        raise ValueError("leaf must be a 32-byte leaf hash")
    out = {(0, size): leaf}
    digest = leaf
    for level, left in append_requires(size):
        # RFC 9162 §2.1.1: a perfect subtree's hash is node_hash(left half, right half).
        digest = node_hash(lookup[(level, left)], digest)
        out[(level + 1, left >> 1)] = digest
    return out


# --- ranges and tree heads ---------------------------------------------------------------


def range_nodes(start: int, end: int) -> list[Node]:
    """Split leaves ``[start, end)`` into maximal aligned perfect subtrees, left to right.

    For a range from RFC 9162's recursion (``start`` a multiple of a power of two
    ``>= end - start``, e.g. any prefix ``[0, n)``) this is one node per one-bit of the
    size, largest first, and :func:`range_hash` reads exactly these nodes.
    """
    _check_range(start, end)
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            # The block must also be aligned: at most the lowest set bit of start.
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def _mth(start: int, end: int, get: Callable[[Node], bytes]) -> bytes:
    """RFC 9162 §2.1.1 ``MTH(D[start:end])``, reading stored perfect subtrees via ``get``."""
    node = _perfect(start, end)
    if node is not None:
        return get(node)
    k = _split(end - start)
    return node_hash(_mth(start, start + k, get), _mth(start + k, end, get))


def range_hash(start: int, end: int, lookup: Mapping[Node, bytes]) -> bytes:
    """``MTH(D[start:end])``: the RFC 9162 §2.1.1 hash of leaves ``[start, end)`` as a list.

    Follows the RFC recursion (split at the largest power of two ``k < n``) and takes any
    piece that is a perfect aligned subtree from ``lookup``. This is *not* a fold of
    :func:`range_nodes` in general: ``[1, 4)`` is ``(0, 1) + (1, 1)`` but its hash is
    ``node_hash(node_hash(D1, D2), D3)``. For ranges of the RFC recursion of a prefix it
    reads only :func:`range_nodes` (a right fold); an arbitrary range may need up to
    ``end - start`` nodes — see :func:`range_requires`.

    Raises:
        KeyError: ``lookup`` lacks a node of :func:`range_requires`.
    """
    _check_range(start, end)
    if start == end:
        return EMPTY_ROOT
    return _mth(start, end, lookup.__getitem__)


def range_requires(start: int, end: int) -> set[Node]:
    """The nodes :func:`range_hash` ``(start, end, ·)`` reads."""
    _check_range(start, end)
    needed: set[Node] = set()
    pending = [(start, end)] if start < end else []
    while pending:
        lo, hi = pending.pop()
        node = _perfect(lo, hi)
        if node is not None:
            needed.add(node)
        else:
            k = _split(hi - lo)
            pending += [(lo, lo + k), (lo + k, hi)]
    return needed


def root_nodes(size: int) -> list[Node]:
    """The nodes whose right fold is the tree head of the first ``size`` leaves."""
    return range_nodes(0, size)


def root_from(size: int, lookup: Mapping[Node, bytes]) -> bytes:
    """RFC 9162 §2.1.1 tree head ``MTH(D[0:size])`` from stored nodes (:func:`root_nodes`).

    Raises:
        KeyError: ``lookup`` lacks a node of :func:`root_nodes`.
    """
    return range_hash(0, size, lookup)


# --- inclusion proofs --------------------------------------------------------------------


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.3.1 ``PATH(m, D[n])`` as leaf ranges, leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"need 0 <= index < size, got index {index}, size {size}")
    siblings: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            # m < k: PATH(m, D[0:k]) : MTH(D[k:n])
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            # m >= k: PATH(m - k, D[k:n]) : MTH(D[0:k])
            siblings.append((lo, lo + k))
            lo += k
    # The recursion appends the sibling after the sub-path: the deepest element comes first.
    return siblings[::-1]


def inclusion_proof_nodes(index: int, size: int) -> list[list[Node]]:
    """For each element of the inclusion proof of ``index`` in ``size``, its nodes.

    Each element is the right fold of its nodes. Only the element that reaches the right
    edge of the tree can span several nodes, so the total is O(log size).
    """
    return [range_nodes(lo, hi) for lo, hi in _inclusion_ranges(index, size)]


def inclusion_requires(index: int, size: int) -> set[Node]:
    """All nodes :func:`inclusion_proof` ``(index, size, ·)`` reads, for a single fetch."""
    return {node for nodes in inclusion_proof_nodes(index, size) for node in nodes}


def inclusion_proof(index: int, size: int, lookup: Mapping[Node, bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``.

    Args:
        index: 0-based leaf index, ``0 <= index < size``.
        size: tree size.
        lookup: holds at least :func:`inclusion_requires` ``(index, size)``.

    Returns:
        The proof elements, from the leaf's sibling up to the root's child.

    Raises:
        ValueError: ``index`` is not below ``size``.
        KeyError: ``lookup`` lacks a required node.
    """
    return [range_hash(lo, hi, lookup) for lo, hi in _inclusion_ranges(index, size)]


# --- consistency proofs ------------------------------------------------------------------


def _consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 ``PROOF(m, D[n])`` as leaf ranges, in proof order."""
    if not 0 <= first <= second:
        raise ValueError(f"need 0 <= first <= second, got {first}, {second}")
    if first in (0, second):
        # SUBPROOF(m, D[m], true) = {}; from the empty tree there is nothing to prove.
        return []
    found: list[tuple[int, int]] = []
    lo, hi, complete = 0, second, True
    while hi - lo != first - lo:
        k = _split(hi - lo)
        if first - lo <= k:
            # m <= k: SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            found.append((lo + k, hi))
            hi = lo + k
        else:
            # m > k: SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            found.append((lo, lo + k))
            lo += k
            complete = False
    if not complete:
        # SUBPROOF(m, D[m], false) = {MTH(D[m])}: the old subtree is not a node of the new
        # tree's left edge, so it must be in the proof.
        found.append((lo, hi))
    return found[::-1]


def consistency_proof_nodes(first: int, second: int) -> list[list[Node]]:
    """For each element of the consistency proof ``first`` → ``second``, its nodes."""
    return [range_nodes(lo, hi) for lo, hi in _consistency_ranges(first, second)]


def consistency_requires(first: int, second: int) -> set[Node]:
    """All nodes :func:`consistency_proof` ``(first, second, ·)`` reads, for a single fetch."""
    return {node for nodes in consistency_proof_nodes(first, second) for node in nodes}


def consistency_proof(first: int, second: int, lookup: Mapping[Node, bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between tree sizes ``first`` and ``second``.

    Empty when ``first == second`` (RFC) or ``first == 0`` (every tree extends the empty
    tree; the RFC leaves this case undefined).

    Raises:
        ValueError: unless ``0 <= first <= second``.
        KeyError: ``lookup`` lacks a node of :func:`consistency_requires`.
    """
    return [range_hash(lo, hi, lookup) for lo, hi in _consistency_ranges(first, second)]


# --- verification ------------------------------------------------------------------------


def _check_hashes(*values: bytes) -> None:
    for value in values:
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise ProofInvalid("hashes must be 32 bytes")


def _same(computed: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(computed, expected)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: check that ``leaf_hash`` is leaf ``index`` of the tree ``root``.

    Args:
        leaf_hash: ``leaf_hash(entry)`` of the entry.
        index: its claimed 0-based index.
        size: the size of the tree whose head is ``root`` (authenticate it with the root).
        proof: the inclusion path, leaf to root.
        root: the trusted tree head of ``size`` leaves.

    Raises:
        ProofInvalid: the proof does not verify, including ``index >= size`` (so always
            for ``size == 0``) and elements that are not 32 bytes.
    """
    # Step 1: the index must lie inside the tree.
    if not 0 <= index < size:
        raise ProofInvalid("index is not below size")
    _check_hashes(leaf_hash, root, *proof)
    # Steps 2-3.
    fn, sn, r = index, size - 1, leaf_hash
    # Step 4.
    for p in proof:
        if sn == 0:  # 4a: the path is longer than the tree is deep
            raise ProofInvalid("inclusion proof too long")
        if fn & 1 or fn == sn:  # 4b: p is a left sibling
            r = node_hash(p, r)
            if not fn & 1:
                # Skip levels where the node is the lone right-edge child (no sibling).
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:  # p is a right sibling
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # Step 5.
    if sn != 0 or not _same(r, root):
        raise ProofInvalid("inclusion proof does not verify")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: check that the tree ``second_root`` extends ``first_root``.

    Edge cases: ``first == second`` needs an empty proof and equal roots (§2.1.4.1 gives the
    empty proof); ``first == 0`` needs an empty proof and ``first_root == EMPTY_ROOT`` (the
    RFC requires ``0 < first``; every tree extends the empty one). ``second < first`` or a
    negative size never verifies.

    Args:
        first: the older tree size.
        second: the newer tree size.
        first_root: the trusted tree head of ``first`` leaves.
        second_root: the tree head of ``second`` leaves.
        proof: the consistency proof.

    Raises:
        ProofInvalid: the proof does not verify.
    """
    if not 0 <= first <= second:
        raise ProofInvalid("need 0 <= first <= second")
    _check_hashes(first_root, second_root, *proof)
    if first == 0 and not _same(first_root, EMPTY_ROOT):
        raise ProofInvalid("the empty tree's head is the empty root")
    if first == second:
        if proof or not _same(first_root, second_root):
            raise ProofInvalid("equal sizes need an empty proof and equal roots")
        return
    if first == 0:
        if proof:
            raise ProofInvalid("the empty tree needs an empty proof")
        return
    # Step 1.
    if not proof:
        raise ProofInvalid("empty consistency proof")
    fr, sr, sn = _consistency_walk(first, second, first_root, proof)
    # Step 7.
    if sn != 0 or not _same(fr, first_root) or not _same(sr, second_root):
        raise ProofInvalid("consistency proof does not verify")


def _consistency_walk(
    first: int, second: int, first_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes, int]:
    """RFC 9162 §2.1.4.2 steps 2-6 for ``0 < first < second``: returns ``(fr, sr, sn)``."""
    path = list(proof)
    # Step 2: a power-of-two first tree is a node of the second; its hash is implied.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # Steps 3-4.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr, sr, sn
