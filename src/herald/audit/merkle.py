"""RFC 9162 §2.1 Merkle tree hashing (pure functions, no I/O)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["EMPTY_ROOT", "leaf_hash", "node_hash", "root_hash"]

#: RFC 9162 §2.1.1: the hash of an empty list is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()


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
