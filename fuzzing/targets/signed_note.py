"""Signed notes (C2SP signed-note), checkpoints (C2SP tlog-checkpoint) and note keys.

Input: ``mode byte`` then:

* mode 0: a signed note verified by the trusted key and opened as a checkpoint;
* mode 1: a checkpoint note text for :meth:`Checkpoint.parse`, which must round-trip
  (a checkpoint that parses prints back to the same text);
* mode 2: a verifier key string (``name+hex+base64``) and a signer key string;
* mode 3: a note text signed here with the trusted key, then verified and opened, so the
  checkpoint parser behind a valid signature is fuzzed.

Allowed refusal: ``NoteInvalid``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fuzzing._input import mode, text
from herald.audit.note import (
    Checkpoint,
    NoteInvalid,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
)

REFUSALS = (NoteInvalid,)

ORIGIN = "herald.test/audit"
SIGNER = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(4, 36))))
VERIFIER = SIGNER.verifier()


def _checkpoint(note: str | bytes) -> None:
    checkpoint = open_checkpoint(VERIFIER, note, origin=ORIGIN)
    if Checkpoint.parse(checkpoint.to_text()) != checkpoint:
        raise AssertionError("a verified checkpoint does not round-trip")


def _parse(note_text: str) -> None:
    checkpoint = Checkpoint.parse(note_text)
    if checkpoint.to_text() != note_text:
        raise AssertionError(f"checkpoint {note_text!r} prints as {checkpoint.to_text()!r}")


def _keys(key: str) -> None:
    try:
        verifier = NoteVerifier.from_key(key)
    except NoteInvalid:
        pass
    else:
        if verifier.verifier_key() != key:
            raise AssertionError(f"verifier key {key!r} prints differently")
    NoteSigner.from_key(key)


def test_one_input(data: bytes) -> None:
    """Verify, parse or load one note-related input."""
    selected, rest = mode(data, 4)
    try:
        if selected == 0:
            VERIFIER.verify(rest)
            _checkpoint(rest)
        elif selected == 1:
            _parse(text(rest))
        elif selected == 2:
            _keys(text(rest))
        else:
            _checkpoint(SIGNER.sign(text(rest)))
    except NoteInvalid:
        return
