"""herald.audit.merkle: RFC 6962 / RFC 9162 vectors and exhaustive checks on small trees.

Proofs are generated from a node store filled by ``append_nodes`` / ``new_node_hashes`` and
checked twice: by merkle.py's verifiers and by an independent verifier written here from the
RFC 9162 §2.1.3.2 / §2.1.4.2 pseudo-code. Proof *generation* is also compared with the
RFC's recursive ``PATH`` / ``PROOF`` definitions evaluated directly over the leaf list.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from herald.audit import merkle
from herald.audit.merkle import (
    EMPTY_ROOT,
    Node,
    ProofInvalid,
    append_nodes,
    append_requires,
    consistency_proof,
    consistency_proof_nodes,
    consistency_requires,
    inclusion_proof,
    inclusion_proof_nodes,
    inclusion_requires,
    leaf_hash,
    new_node_hashes,
    range_hash,
    range_nodes,
    range_requires,
    root_from,
    root_hash,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from herald.errors import HeraldError

# --- RFC 6962 test data (certificate-transparency / transparency-dev merkle test suites) ---

RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC6962_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# (0-based index, size) -> path; the Go suite numbers these leaves 1, 6, 3 and 2.
RFC6962_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (0, 1): [],
}
RFC6962_CONSISTENCY = {
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


# --- an independent reference, straight from RFC 9162 ------------------------------------


POWERS_OF_TWO = frozenset(2**i for i in range(64))


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_verify_inclusion(
    hash_: bytes, leaf_index: int, tree_size: int, inclusion_path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, line by line."""
    # 1. If leaf_index is greater than or equal to tree_size, then fail.
    if leaf_index >= tree_size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. Set r to hash.
    r = hash_
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn % 2 == 1 or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = _h(b"\x01" + p + r)
            # ii. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #     either LSB(fn) is set or fn is 0.
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        # Otherwise: i. Set r to HASH(0x01 || r || p).
        else:
            r = _h(b"\x01" + r + p)
        # c. Finally, right-shift both fn and sn one time.
        fn //= 2
        sn //= 2
    # 5. Compare sn to 0. Compare r against the root_hash.
    return sn == 0 and r == root


def ref_verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> bool:
    """RFC 9162 §2.1.4.2, line by line (plus first == second from §2.1.4.1's empty proof)."""
    if first == second:
        return not consistency_path and first_hash == second_hash
    if not 0 < first < second:
        return False
    path = list(consistency_path)
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not path:
        return False
    # 2. If first is an exact power of 2, then prepend first_hash to the consistency_path.
    if first in POWERS_OF_TWO:
        path = [first_hash, *path]
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn % 2 == 1 or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr).  ii. Set sr to HASH(0x01 || c || sr).
            fr = _h(b"\x01" + c + fr)
            sr = _h(b"\x01" + c + sr)
            # iii. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #      either LSB(fn) is set or fn is 0.
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        # Otherwise: i. Set sr to HASH(0x01 || sr || c).
        else:
            sr = _h(b"\x01" + sr + c)
        # c. Finally, right-shift both fn and sn one time.
        fn //= 2
        sn //= 2
    # 7. Verify fr == first_hash, sr == second_hash and sn == 0.
    return fr == first_hash and sr == second_hash and sn == 0


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class RefTree:
    """RFC 9162 §2.1.1 MTH, §2.1.3.1 PATH and §2.1.4.1 PROOF over a leaf-hash list."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = tuple(leaves)
        self.mth = functools.cache(self._mth)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return _h(b"")
        if n == 1:
            return self.leaves[lo]
        k = _k(n)
        return _h(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


# --- fixtures ----------------------------------------------------------------------------


class Recording(dict[Node, bytes]):
    """A lookup that records which nodes were read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[Node] = set()

    def __getitem__(self, key: Node) -> bytes:
        self.read.add(key)
        return super().__getitem__(key)


def build(leaves: Sequence[bytes]) -> dict[Node, bytes]:
    """The node store after appending ``leaves`` one by one, as a log would."""
    store: dict[Node, bytes] = {}
    for size, leaf in enumerate(leaves):
        needed = {node: store[node] for node in append_requires(size)}
        new = new_node_hashes(size, leaf, needed)
        assert list(new) == append_nodes(size)
        assert not set(new) & set(store)  # nodes are written once, never rewritten
        store.update(new)
    return store


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos % len(out)] ^= mask
    return bytes(out)


N = 64
_rng = random.Random(9162)
LEAVES = [_rng.randbytes(32) for _ in range(N)]
STORE = build(LEAVES)
REF = RefTree(LEAVES)
ROOTS = [root_hash(LEAVES[:n]) for n in range(N + 1)]


def refused(verify: Callable[..., None], *args: Any) -> bool:
    try:
        verify(*args)
    except ProofInvalid:
        return True
    return False


def inclusion_ok(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """Both verifiers agree, and return whether the proof verified."""
    ours = not refused(verify_inclusion, leaf, index, size, proof, root)
    assert ours == ref_verify_inclusion(leaf, index, size, proof, root)
    return ours


def consistency_ok(a: int, b: int, ra: bytes, rb: bytes, proof: list[bytes]) -> bool:
    ours = not refused(verify_consistency, a, b, ra, rb, proof)
    assert ours == ref_verify_consistency(a, b, ra, rb, proof)
    return ours


# --- the public surface ------------------------------------------------------------------


def test_exports() -> None:
    assert set(merkle.__all__) == {
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
    }
    for name in merkle.__all__:
        assert hasattr(merkle, name)


def test_proof_invalid_is_a_herald_error() -> None:
    assert issubclass(ProofInvalid, HeraldError)


# --- RFC 6962 vectors --------------------------------------------------------------------


def test_rfc6962_leaf_hashes_and_empty_root() -> None:
    assert leaf_hash(b"").hex() == RFC6962_ROOTS[1]
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    assert root_from(0, {}) == EMPTY_ROOT


def test_rfc6962_roots() -> None:
    hashes = [leaf_hash(leaf) for leaf in RFC6962_LEAVES]
    store = build(hashes)
    for size, expected in RFC6962_ROOTS.items():
        assert root_hash(hashes[:size]).hex() == expected
        assert RefTree(hashes).mth(0, size).hex() == expected
        assert root_from(size, store).hex() == expected


@pytest.mark.parametrize(("index", "size"), sorted(RFC6962_INCLUSION))
def test_rfc6962_inclusion(index: int, size: int) -> None:
    hashes = [leaf_hash(leaf) for leaf in RFC6962_LEAVES]
    proof = inclusion_proof(index, size, build(hashes))
    assert [p.hex() for p in proof] == RFC6962_INCLUSION[(index, size)]
    root = bytes.fromhex(RFC6962_ROOTS[size])
    assert inclusion_ok(hashes[index], index, size, proof, root)


@pytest.mark.parametrize(("first", "second"), sorted(RFC6962_CONSISTENCY))
def test_rfc6962_consistency(first: int, second: int) -> None:
    hashes = [leaf_hash(leaf) for leaf in RFC6962_LEAVES]
    proof = consistency_proof(first, second, build(hashes))
    assert [p.hex() for p in proof] == RFC6962_CONSISTENCY[(first, second)]
    r1, r2 = (bytes.fromhex(RFC6962_ROOTS[n]) for n in (first, second))
    assert consistency_ok(first, second, r1, r2, proof)


# --- appending ---------------------------------------------------------------------------


def test_append_nodes_examples() -> None:
    assert append_nodes(0) == [(0, 0)]
    assert append_nodes(1) == [(0, 1), (1, 0)]
    assert append_nodes(6) == [(0, 6)]
    assert append_nodes(7) == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert append_requires(7) == [(0, 6), (1, 2), (2, 0)]
    assert append_requires(8) == []


def test_store_holds_every_perfect_aligned_subtree_with_its_hash() -> None:
    expected = {
        (level, index)
        for level in range(N.bit_length())
        for index in range(N >> level)
        if (index + 1) << level <= N
    }
    assert set(STORE) == expected
    for (level, index), digest in STORE.items():
        assert digest == root_hash(LEAVES[index << level : (index + 1) << level])


def test_appends_store_fewer_than_two_nodes_on_average() -> None:
    total = 0
    for size in range(1, 5000):
        total += len(append_nodes(size - 1))
        assert total == 2 * size - bin(size).count("1")
        assert total / size < 2


def test_new_node_hashes_reads_exactly_append_requires() -> None:
    for size in range(N):
        lookup = Recording(STORE)
        new_node_hashes(size, LEAVES[size], lookup)
        assert lookup.read == set(append_requires(size))


def test_append_bad_input() -> None:
    with pytest.raises(ValueError, match="size"):
        append_nodes(-1)
    with pytest.raises(ValueError, match="size"):
        append_requires(-1)
    with pytest.raises(ValueError, match="32-byte"):
        new_node_hashes(0, b"short", {})
    with pytest.raises(KeyError):
        new_node_hashes(3, LEAVES[3], {})


# --- ranges and tree heads ---------------------------------------------------------------


def recursion_ranges(lo: int, hi: int) -> set[tuple[int, int]]:
    """Every sub-range RFC 9162 §2.1.1's recursion visits when hashing D[lo:hi]."""
    out = {(lo, hi)}
    if hi - lo > 1:
        k = _k(hi - lo)
        out |= recursion_ranges(lo, lo + k) | recursion_ranges(lo + k, hi)
    return out


ALL_RECURSION_RANGES = sorted(set().union(*(recursion_ranges(0, n) for n in range(1, N + 1))))


def test_range_nodes_is_the_maximal_aligned_decomposition() -> None:
    for start in range(N + 1):
        for end in range(start, N + 1):
            nodes = range_nodes(start, end)
            position = start
            for i, (level, index) in enumerate(nodes):
                assert index << level == position  # contiguous, left to right, aligned
                position += 1 << level
                if i + 1 < len(nodes):
                    # maximal: no two neighbours could merge into one aligned parent
                    assert not (nodes[i + 1][0] == level and index % 2 == 0)
            assert position == end
    assert range_nodes(1, 4) == [(0, 1), (1, 1)]
    assert range_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]


def test_range_hash_on_recursion_ranges_reads_only_range_nodes() -> None:
    assert len(ALL_RECURSION_RANGES) > N
    for start, end in ALL_RECURSION_RANGES:
        lookup = Recording(STORE)
        assert range_hash(start, end, lookup) == root_hash(LEAVES[start:end])
        assert lookup.read == set(range_nodes(start, end)) == range_requires(start, end)
        # ... and on these ranges MTH is the right fold of the decomposition.
        nodes = [STORE[node] for node in range_nodes(start, end)]
        folded = nodes[-1]
        for left in reversed(nodes[:-1]):
            folded = merkle.node_hash(left, folded)
        assert folded == REF.mth(start, end)


def test_range_hash_on_arbitrary_ranges_follows_the_rfc_shape() -> None:
    for start in range(N + 1):
        for end in range(start, N + 1):
            lookup = Recording(STORE)
            assert range_hash(start, end, lookup) == root_hash(LEAVES[start:end])
            assert lookup.read == range_requires(start, end)
    # Not a fold of the decomposition: [1, 4) = (0,1) + (1,1), but MTH splits it 2 + 1.
    fold = merkle.node_hash(STORE[(0, 1)], STORE[(1, 1)])
    assert range_hash(1, 4, STORE) != fold
    assert range_requires(1, 4) == {(0, 1), (0, 2), (0, 3)}
    assert range_hash(5, 5, STORE) == EMPTY_ROOT
    with pytest.raises(ValueError, match="start"):
        range_hash(4, 3, STORE)
    with pytest.raises(ValueError, match="start"):
        range_nodes(-1, 3)


def test_root_from_matches_root_hash_across_powers_of_two() -> None:
    leaves = [_rng.randbytes(32) for _ in range(130)]
    store: dict[Node, bytes] = {}
    for size in range(131):
        # right after `size` appends, as the log computes its head
        assert root_from(size, store) == root_hash(leaves[:size])
        assert set(root_nodes(size)) <= set(store)
        assert len(root_nodes(size)) == bin(size).count("1")
        if size < 130:
            store.update(new_node_hashes(size, leaves[size], store))
    for size in range(131):
        # later appends add nodes but never change an old head
        assert root_from(size, store) == root_hash(leaves[:size])


def test_missing_node_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        root_from(5, {})
    with pytest.raises(KeyError):
        inclusion_proof(0, 5, {})


# --- exhaustive proofs for every size up to 64 -------------------------------------------


INCLUSION_CASES = [(i, n) for n in range(1, N + 1) for i in range(n)]
CONSISTENCY_CASES = [(a, b) for b in range(1, N + 1) for a in range(1, b + 1)]


def test_every_inclusion_proof_up_to_64() -> None:
    for index, size in INCLUSION_CASES:
        lookup = Recording({node: STORE[node] for node in inclusion_requires(index, size)})
        proof = inclusion_proof(index, size, lookup)
        assert lookup.read == inclusion_requires(index, size)  # fetched = needed
        assert proof == REF.path(index, 0, size)  # RFC 9162 §2.1.3.1 PATH(m, D[n])
        nodes = inclusion_proof_nodes(index, size)
        assert len(nodes) == len(proof)
        assert sum(len(element) > 1 for element in nodes) <= 1
        leaf, root = LEAVES[index], ROOTS[size]
        assert inclusion_ok(leaf, index, size, proof, root)


def test_every_tampered_inclusion_proof_up_to_64_is_refused() -> None:
    for index, size in INCLUSION_CASES:
        proof = inclusion_proof(index, size, STORE)
        leaf, root = LEAVES[index], ROOTS[size]
        for i in range(len(proof)):
            for pos in (0, 13 + i, 31):
                bad = [*proof[:i], flip(proof[i], pos), *proof[i + 1 :]]
                assert not inclusion_ok(leaf, index, size, bad, root)
        assert not inclusion_ok(flip(leaf, index), index, size, proof, root)
        assert not inclusion_ok(leaf, index, size, proof, flip(root, size))
        assert not inclusion_ok(leaf, index, size, [*proof, proof[-1] if proof else leaf], root)
        if proof:
            assert not inclusion_ok(leaf, index, size, proof[:-1], root)
        for other in {index - 1, index + 1, size - 1 - index, index ^ 1, size} - {index, -1}:
            assert not inclusion_ok(leaf, other, size, proof, root)
        for other_size in {index + 1, size - 1, size + 1, size + 2, 2 * size - 1, N} - {size}:
            # The proof is not one for another tree head.
            if index < other_size <= N:
                assert not inclusion_ok(leaf, index, other_size, proof, ROOTS[other_size])


def test_inclusion_proofs_do_not_bind_the_size_by_themselves() -> None:
    # RFC 9162 §2.1.3.2 checks r == root and sn == 0 only: the path of leaf 0 in a tree of
    # 3 has the same shape as in a tree of 4, so the size must come from a signed head.
    proof = inclusion_proof(0, 3, STORE)
    assert inclusion_ok(LEAVES[0], 0, 4, proof, ROOTS[3])
    assert not inclusion_ok(LEAVES[0], 0, 4, proof, ROOTS[4])


def test_every_consistency_proof_up_to_64() -> None:
    for first, second in CONSISTENCY_CASES:
        lookup = Recording({node: STORE[node] for node in consistency_requires(first, second)})
        proof = consistency_proof(first, second, lookup)
        assert lookup.read == consistency_requires(first, second)
        assert proof == REF.subproof(first, 0, second, True)  # RFC 9162 §2.1.4.1 PROOF
        assert len(consistency_proof_nodes(first, second)) == len(proof)
        assert consistency_ok(first, second, ROOTS[first], ROOTS[second], proof)


def test_every_tampered_consistency_proof_up_to_64_is_refused() -> None:
    for first, second in CONSISTENCY_CASES:
        proof = consistency_proof(first, second, STORE)
        r1, r2 = ROOTS[first], ROOTS[second]
        for i in range(len(proof)):
            for pos in (0, 7 + i, 31):
                bad = [*proof[:i], flip(proof[i], pos), *proof[i + 1 :]]
                assert not consistency_ok(first, second, r1, r2, bad)
        assert not consistency_ok(first, second, flip(r1, first), r2, proof)
        assert not consistency_ok(first, second, r1, flip(r2, second), proof)
        assert not consistency_ok(first, second, r1, r2, [*proof, r1])
        if proof:
            assert not consistency_ok(first, second, r1, r2, proof[:-1])
        for a, b in {(first - 1, second), (first + 1, second), (first, second + 1)}:
            if 1 <= a <= b <= N and (a, b) != (first, second):
                # Not a proof between the heads of other sizes either.
                assert not consistency_ok(a, b, ROOTS[a], ROOTS[b], proof)


def test_proof_sizes_stay_logarithmic() -> None:
    big = 2**40 + 2**33 + 12345
    for index in (0, 1, big // 2, big - 2, big - 1):
        assert len(inclusion_requires(index, big)) <= 2 * big.bit_length()
    for first in (1, 2**20, 2**40, big - 1, big):
        assert len(consistency_requires(first, big)) <= 2 * big.bit_length()
    assert len(root_nodes(big)) == bin(big).count("1") == 8


# --- edge cases of the RFC algorithms ----------------------------------------------------


def test_inclusion_edge_cases() -> None:
    leaf = LEAVES[0]
    assert inclusion_proof(0, 1, STORE) == []
    assert inclusion_ok(leaf, 0, 1, [], leaf)  # a one-leaf tree's head is its leaf hash
    assert not inclusion_ok(leaf, 0, 0, [], EMPTY_ROOT)  # size 0: index >= size
    assert not inclusion_ok(leaf, 1, 1, [], leaf)  # index == size
    assert refused(verify_inclusion, leaf, -1, 1, [], leaf)
    assert refused(verify_inclusion, leaf, 0, 2, [LEAVES[1][:31]], ROOTS[2])  # short element
    assert refused(verify_inclusion, leaf[:31], 0, 1, [], leaf[:31])
    with pytest.raises(ValueError, match="index"):
        inclusion_proof(3, 3, STORE)
    with pytest.raises(ValueError, match="index"):
        inclusion_requires(0, 0)


def test_consistency_edge_cases() -> None:
    r1, r2, r4 = ROOTS[1], ROOTS[2], ROOTS[4]
    # first == second: the empty proof, equal roots.
    assert consistency_proof(5, 5, STORE) == []
    assert consistency_ok(5, 5, ROOTS[5], ROOTS[5], [])
    assert not consistency_ok(5, 5, ROOTS[5], ROOTS[6], [])
    assert not consistency_ok(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    # first a power of two: its head is implied, not sent.
    assert consistency_proof(2, 4, STORE) == [STORE[(1, 1)]]
    assert consistency_ok(2, 4, r2, r4, [STORE[(1, 1)]])
    assert consistency_ok(1, 2, r1, r2, [LEAVES[1]])
    # 0 < first < second with an empty proof fails (step 1); second < first fails.
    assert not consistency_ok(2, 4, r2, r4, [])
    assert not consistency_ok(4, 2, r4, r2, [STORE[(1, 1)]])
    assert refused(verify_consistency, -1, 2, r1, r2, [])
    # From the empty tree (outside the RFC): the empty proof and the empty root only.
    assert consistency_proof(0, 7, STORE) == []
    assert consistency_requires(0, 7) == set()
    verify_consistency(0, 7, EMPTY_ROOT, ROOTS[7], [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert refused(verify_consistency, 0, 0, ROOTS[3], ROOTS[3], [])
    assert refused(verify_consistency, 0, 7, ROOTS[1], ROOTS[7], [])
    assert refused(verify_consistency, 0, 7, EMPTY_ROOT, ROOTS[7], [ROOTS[7]])
    # Malformed hashes.
    assert refused(verify_consistency, 2, 4, r2, r4, [STORE[(1, 1)] + b"\x00"])
    assert refused(verify_consistency, 2, 4, r2[:16], r4, [STORE[(1, 1)]])
    with pytest.raises(ValueError, match="first"):
        consistency_proof(3, 2, STORE)
    with pytest.raises(ValueError, match="first"):
        consistency_requires(-1, 2)
