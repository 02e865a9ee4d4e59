"""Hypothesis properties of herald.audit.note: sign/verify round trips, tamper detection,
and parsers that only ever refuse with NoteInvalid."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.audit.note import (
    MAX_TREE_SIZE,
    Checkpoint,
    NoteInvalid,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
    sign_note,
)

# signed-note §Format: any Unicode scalar value but ASCII controls (newline separates lines).
line_chars = st.characters(min_codepoint=0x20, exclude_categories=["Cs"])
lines = st.text(alphabet=line_chars, max_size=40)
texts = st.lists(lines, min_size=1, max_size=8).map(lambda ls: "\n".join(ls) + "\n")
names = st.text(
    alphabet=st.characters(min_codepoint=0x21, exclude_categories=["Cs"]),
    min_size=1,
    max_size=24,
).filter(lambda n: "+" not in n and not any(c.isspace() for c in n))
seeds = st.binary(min_size=32, max_size=32)


def signer_of(name: str, seed: bytes) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(seed))


@given(text=texts, name=names, seed=seeds)
def test_sign_verify_round_trip(text: str, name: str, seed: bytes) -> None:
    signer = signer_of(name, seed)
    note = signer.sign(text)
    verifier = NoteVerifier.from_key(signer.verifier_key())
    assert verifier.key_id == signer.key_id
    assert verifier.verify(note) == text
    assert verifier.verify(note.encode("utf-8")) == text


@given(text=texts, seeds_=st.lists(seeds, min_size=2, max_size=4, unique=True))
def test_every_cosigner_verifies(text: str, seeds_: list[bytes]) -> None:
    signers = [signer_of(f"key{i}.test", seed) for i, seed in enumerate(seeds_)]
    note = sign_note(text, signers)
    for signer in signers:
        assert signer.verifier().verify(note) == text


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Apply one to three random edits (flip, delete, insert) that change ``data``."""
    out = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["flip", "delete", "insert"]))
        if kind == "insert" or not out:
            at = draw(st.integers(min_value=0, max_value=len(out)))
            out.insert(at, draw(st.integers(min_value=0, max_value=255)))
        elif kind == "delete":
            del out[draw(st.integers(min_value=0, max_value=len(out) - 1))]
        else:
            at = draw(st.integers(min_value=0, max_value=len(out) - 1))
            out[at] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(out)


@settings(max_examples=300)
@given(text=texts, name=names, seed=seeds, data=st.data())
def test_mutated_note_never_verifies(
    text: str, name: str, seed: bytes, data: st.DataObject
) -> None:
    signer = signer_of(name, seed)
    note = signer.sign(text).encode("utf-8")
    mutated = data.draw(mutations(note))
    if mutated == note:
        return
    verifier = signer.verifier()
    for candidate in (mutated, mutated.decode("utf-8", "surrogateescape")):
        try:
            verifier.verify(candidate)
        except NoteInvalid:
            continue
        raise AssertionError(f"mutated note verified: {mutated!r}")


@given(note=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_verify_of_random_input_only_raises_note_invalid(note: str | bytes) -> None:
    verifier = signer_of("k", b"\x07" * 32).verifier()
    try:
        verifier.verify(note)
    except NoteInvalid:
        return
    raise AssertionError("random input verified")


checkpoint_lines = st.text(alphabet=line_chars, min_size=1, max_size=30)
checkpoints = st.builds(
    Checkpoint,
    origin=checkpoint_lines,
    size=st.integers(min_value=0, max_value=MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(checkpoint_lines, max_size=3).map(tuple),
)


@given(checkpoint=checkpoints, seed=seeds)
def test_checkpoint_round_trip(checkpoint: Checkpoint, seed: bytes) -> None:
    text = checkpoint.to_text()
    assert Checkpoint.parse(text) == checkpoint
    signer = signer_of("log.test", seed)
    note = sign_checkpoint(signer, checkpoint)
    assert open_checkpoint(signer.verifier(), note, origin=checkpoint.origin) == checkpoint


def _parse_or_refuse(text: str) -> None:
    try:
        checkpoint = Checkpoint.parse(text)
    except NoteInvalid:
        return
    # Whatever parses is canonical: writing it back gives the same text.
    assert checkpoint.to_text() == text


@settings(max_examples=500)
@given(text=st.text(max_size=200))
def test_checkpoint_parse_of_random_strings(text: str) -> None:
    _parse_or_refuse(text)


sizes = st.one_of(
    st.integers(min_value=-5, max_value=2 * MAX_TREE_SIZE).map(str),
    st.text(alphabet="0123456789+-_ x\u0661", max_size=22),
)
roots = st.one_of(
    st.binary(min_size=30, max_size=34).map(lambda b: base64.b64encode(b).decode()),
    st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.text(alphabet="ABCabc019+/=-_ ", max_size=48),
)


@settings(max_examples=500)
@given(
    origin=st.text(max_size=20),
    size=sizes,
    root=roots,
    extensions=st.lists(st.text(max_size=10), max_size=3),
    end=st.sampled_from(["\n", "", "\n\n", "\r\n"]),
)
def test_checkpoint_parse_of_near_valid_texts(
    origin: str, size: str, root: str, extensions: list[str], end: str
) -> None:
    _parse_or_refuse("\n".join([origin, size, root, *extensions]) + end)
