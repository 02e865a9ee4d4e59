"""Hypothesis properties of herald.audit.merkle over trees of up to 2,000 leaves.

One log of 2,000 random leaves is built with ``new_node_hashes``; every tree size up to
2,000 is a prefix of it. Proofs must verify, and any single flipped byte, wrong index or
proof checked against another size's head must be refused.
"""

from __future__ import annotations

import hashlib
import random

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from herald.audit.merkle import (
    EMPTY_ROOT,
    Node,
    ProofInvalid,
    consistency_proof,
    consistency_requires,
    inclusion_proof,
    inclusion_requires,
    new_node_hashes,
    range_hash,
    root_from,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

MAX = 2000
_rng = random.Random(6962)
LEAVES = [_rng.randbytes(32) for _ in range(MAX)]
STORE: dict[Node, bytes] = {}
for _size, _leaf in enumerate(LEAVES):
    STORE.update(new_node_hashes(_size, _leaf, STORE))

sizes = st.integers(min_value=1, max_value=MAX)


def _prefix_heads(leaves: list[bytes]) -> list[bytes]:
    """Every prefix's head, independently of the node store: a stack of perfect subtrees
    (RFC 9162 §2.1.1's left-balanced shape) folded from the right after each leaf.
    """
    heads = [hashlib.sha256(b"").digest()]
    stack: list[tuple[bytes, int]] = []
    for leaf in leaves:
        stack.append((leaf, 1))
        while len(stack) > 1 and stack[-1][1] == stack[-2][1]:
            (left, n), (right, _) = stack[-2], stack[-1]
            stack[-2:] = [(hashlib.sha256(b"\x01" + left + right).digest(), 2 * n)]
        head = stack[-1][0]
        for left, _ in reversed(stack[:-1]):
            head = hashlib.sha256(b"\x01" + left + head).digest()
        heads.append(head)
    return heads


HEADS = _prefix_heads(LEAVES)


def root(size: int) -> bytes:
    """The reference head of ``size`` leaves (not read from the node store)."""
    return HEADS[size]


def refused_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], head: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, head)
    except ProofInvalid:
        return True
    return False


def refused_consistency(a: int, b: int, ra: bytes, rb: bytes, proof: list[bytes]) -> bool:
    try:
        verify_consistency(a, b, ra, rb, proof)
    except ProofInvalid:
        return True
    return False


def fetched(needed: set[Node]) -> dict[Node, bytes]:
    """What a store returns for one query of exactly the required nodes."""
    return {node: STORE[node] for node in needed}


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(min_value=0, max_value=size - 1)), size


@st.composite
def first_and_second(draw: st.DrawFn) -> tuple[int, int]:
    second = draw(sizes)
    return draw(st.integers(min_value=1, max_value=second)), second


@settings(max_examples=200)
@given(case=index_and_size())
def test_inclusion_proofs_verify(case: tuple[int, int]) -> None:
    index, size = case
    proof = inclusion_proof(index, size, fetched(inclusion_requires(index, size)))
    head = root_from(size, STORE)
    assert head == root(size) == root_hash(LEAVES[:size])
    verify_inclusion(LEAVES[index], index, size, proof, head)


@settings(max_examples=200)
@given(case=index_and_size(), data=st.data())
def test_flipped_inclusion_byte_is_refused(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    proof = inclusion_proof(index, size, STORE)
    head = root(size)
    target = data.draw(st.integers(min_value=-2, max_value=len(proof) - 1), label="target")
    pos = data.draw(st.integers(min_value=0, max_value=31), label="pos")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    leaf = LEAVES[index]
    if target == -2:
        head = head[:pos] + bytes([head[pos] ^ mask]) + head[pos + 1 :]
    elif target == -1:
        leaf = leaf[:pos] + bytes([leaf[pos] ^ mask]) + leaf[pos + 1 :]
    else:
        element = proof[target]
        proof[target] = element[:pos] + bytes([element[pos] ^ mask]) + element[pos + 1 :]
    assert refused_inclusion(leaf, index, size, proof, head)


@settings(max_examples=200)
@given(case=index_and_size(), data=st.data())
def test_wrong_index_or_size_is_refused(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    proof = inclusion_proof(index, size, STORE)
    head = root(size)
    other = data.draw(st.integers(min_value=0, max_value=MAX), label="other index")
    assume(other != index)
    # A wrong index never verifies (at or past size included) ...
    assert refused_inclusion(LEAVES[index], other, size, proof, head)
    # ... nor does the proof against the head of another size.
    other_size = data.draw(st.integers(min_value=index + 1, max_value=MAX), label="other size")
    assume(other_size != size)
    assert refused_inclusion(LEAVES[index], index, other_size, proof, root(other_size))


@settings(max_examples=200)
@given(case=first_and_second())
def test_consistency_proofs_verify(case: tuple[int, int]) -> None:
    first, second = case
    proof = consistency_proof(first, second, fetched(consistency_requires(first, second)))
    verify_consistency(first, second, root(first), root(second), proof)
    verify_consistency(0, second, EMPTY_ROOT, root(second), [])


@settings(max_examples=200)
@given(case=first_and_second(), data=st.data())
def test_flipped_consistency_byte_is_refused(case: tuple[int, int], data: st.DataObject) -> None:
    first, second = case
    proof = consistency_proof(first, second, STORE)
    heads = [root(first), root(second)]
    target = data.draw(st.integers(min_value=-2, max_value=len(proof) - 1), label="target")
    pos = data.draw(st.integers(min_value=0, max_value=31), label="pos")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    if target < 0:
        head = heads[target]
        heads[target] = head[:pos] + bytes([head[pos] ^ mask]) + head[pos + 1 :]
    else:
        element = proof[target]
        proof[target] = element[:pos] + bytes([element[pos] ^ mask]) + element[pos + 1 :]
    assert refused_consistency(first, second, heads[0], heads[1], proof)


@settings(max_examples=200)
@given(case=first_and_second(), data=st.data())
def test_wrong_sizes_are_refused(case: tuple[int, int], data: st.DataObject) -> None:
    first, second = case
    assume(first < second)  # equal sizes have the empty proof, valid for any (n, n)
    proof = consistency_proof(first, second, STORE)
    a = data.draw(st.integers(min_value=1, max_value=MAX), label="first'")
    b = data.draw(st.integers(min_value=a, max_value=MAX), label="second'")
    assume((a, b) != (first, second))
    assert refused_consistency(a, b, root(a), root(b), proof)
    # A shrunken or grown proof never verifies either.
    assert refused_consistency(first, second, root(first), root(second), proof[:-1])
    assert refused_consistency(first, second, root(first), root(second), [*proof, proof[0]])


@settings(max_examples=100)
@given(case=first_and_second())
def test_range_hash_of_arbitrary_ranges(case: tuple[int, int]) -> None:
    # [first, second) is an arbitrary range here: MTH still follows the RFC recursion.
    first, second = case
    assert range_hash(first - 1, second, STORE) == root_hash(LEAVES[first - 1 : second])
