"""Signed notes (C2SP signed-note) and transparency-log checkpoints (C2SP tlog-checkpoint).

A *signed note* is UTF-8 text ending in a newline, a blank line, then one or more signature
lines ``— <key name> <base64(key ID ‖ signature)>``. Herald signs its audit checkpoints as
notes with Ed25519 (signature type ``0x01``) so that any C2SP/``sumdb/note`` tool can check
them, and so that witnesses can add their own signature lines next to ours.

::

    signer = NoteSigner("herald.example/audit", private_key)
    note = sign_checkpoint(signer, Checkpoint("herald.example/audit", 8, root))
    verifier = NoteVerifier.from_key(signer.verifier_key())
    checkpoint = open_checkpoint(verifier, note, origin="herald.example/audit")

Pure: no I/O, no clock, no randomness (Ed25519 signing is deterministic). Every way a note,
a checkpoint or a key string can be wrong raises :class:`NoteInvalid`. Its message names the
reason: notes, checkpoints and verifier keys are public, so the reason is no oracle, and
``herald audit verify`` can tell an operator what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from herald.errors import HeraldError

__all__ = [
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "Checkpoint",
    "NoteInvalid",
    "NoteSigner",
    "NoteVerifier",
    "open_checkpoint",
    "sign_checkpoint",
    "sign_note",
]

#: Largest signed note accepted or produced, in UTF-8 bytes. A checkpoint with one Ed25519
#: signature is ~200 bytes; the cap bounds the work an attacker-supplied note can cause.
MAX_NOTE_SIZE = 64 * 1024
#: Most signature lines in a note (Go's ``sumdb/note`` limit; the spec requires ≥ 16).
MAX_SIGNATURES = 100
#: Largest tree size in a checkpoint: a signed 64-bit integer, what our database stores.
MAX_TREE_SIZE = 2**63 - 1
#: signed-note signature type byte of Ed25519.
ALG_ED25519 = 0x01

_SIG_PREFIX = "— "  # em dash U+2014, space
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_ROOT_SIZE = 32
_ED25519_SIG_SIZE = 64
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_HEX8 = re.compile("[0-9a-f]{8}")
_DECIMAL = re.compile("0|[1-9][0-9]*")


class NoteInvalid(HeraldError):
    """A signed note, checkpoint or note key is malformed, or a note does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    """Decode standard base64 (RFC 4648 §4), refusing every non-canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteInvalid(f"{what} is not base64") from None
    # Unused trailing bits or odd padding would give one value several spellings, and
    # thus a signed note that still verifies after an edit.
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteInvalid(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_chars(text: str, what: str) -> None:
    """signed-note §Format: valid UTF-8, no ASCII control characters other than newline."""
    if _CONTROL.search(text) is not None:
        raise NoteInvalid(f"{what} contains a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates have no UTF-8 form
        raise NoteInvalid(f"{what} is not valid UTF-8") from None


def _check_name(name: str) -> None:
    """signed-note §Format: key names are non-empty, without Unicode spaces or ``+``."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteInvalid("invalid key name")
    _check_chars(name, "key name")


def _key_id(name: str, public_key: bytes) -> int:
    # signed-note §Ed25519 signatures: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4].
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


def _parse_key_id(hex8: str) -> int:
    if _HEX8.fullmatch(hex8) is None:
        raise NoteInvalid("key id is not 8 lower-case hex digits")
    return int(hex8, 16)


def _parse_ed25519(key64: str, key_id: int, name: str, *, seed: bool) -> bytes:
    """Decode ``base64(0x01 ‖ 32 bytes)`` of a key string; return the 32 bytes."""
    raw = _b64decode(key64, "key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteInvalid("key is not an Ed25519 note key")
    key = raw[1:]
    public = Ed25519PrivateKey.from_private_bytes(key).public_key() if seed else None
    public_raw = public.public_bytes_raw() if public is not None else key
    if _key_id(name, public_raw) != key_id:
        raise NoteInvalid("key id does not match the key")
    return key


class NoteVerifier:
    """Verifies signed notes against one trusted Ed25519 key.

    Args:
        name: The key name (non-empty, no spaces, no ``+``).
        public_key: The Ed25519 public key.

    Raises:
        NoteInvalid: The name is not a valid key name.
    """

    __slots__ = ("_key", "_key_id", "_name", "_public_raw")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        self._name = name
        self._key = public_key
        self._public_raw = public_key.public_bytes_raw()
        self._key_id = _key_id(name, self._public_raw)

    @classmethod
    def from_key(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key ``<name>+<8 hex key id>+<base64(0x01 ‖ public key)>``.

        Raises:
            NoteInvalid: The string is malformed, not Ed25519, or its key id is wrong.
        """
        parts = vkey.split("+", 2)  # the name has no "+"; base64 may have some
        if len(parts) != 3:
            raise NoteInvalid("malformed verifier key")
        name, hex8, key64 = parts
        _check_name(name)
        raw = _parse_ed25519(key64, _parse_key_id(hex8), name, seed=False)
        return cls(name, Ed25519PublicKey.from_public_bytes(raw))

    @property
    def name(self) -> str:
        """The key name written in signature lines."""
        return self._name

    @property
    def key_id(self) -> int:
        """The 32-bit key id (first four bytes of every signature by this key)."""
        return self._key_id

    def verifier_key(self) -> str:
        """Return this key as a verifier key string (``name+hex+base64``)."""
        return f"{self._name}+{self._key_id:08x}+{_b64(bytes([ALG_ED25519]) + self._public_raw)}"

    def verify(self, note: str | bytes) -> str:
        """Check a signed note and return its text (with the final newline).

        The note must be well formed throughout. Signature lines of other keys (another
        name or another key id) are ignored, as the spec requires; every line of this key
        must verify, and at least one must be present.

        Args:
            note: The signed note, as text or UTF-8 bytes.

        Returns:
            The signed text, which may be trusted.

        Raises:
            NoteInvalid: The note is malformed, too large, has a bad signature by this key,
                or no signature by this key.
        """
        text, lines = _split_note(note)
        message = text.encode("utf-8")
        verified = False
        for name, key_id, signature in lines:
            if name != self._name or key_id != self._key_id:
                continue
            try:
                self._key.verify(signature, message)
            except InvalidSignature:
                raise NoteInvalid("signature does not verify") from None
            verified = True
        if not verified:
            raise NoteInvalid("no signature by the trusted key")
        return text


class NoteSigner:
    """Signs notes with an Ed25519 private key.

    Args:
        name: The key name (non-empty, no spaces, no ``+``); for checkpoints, the origin.
        private_key: The Ed25519 private key.

    Raises:
        NoteInvalid: The name is not a valid key name.
    """

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._verifier = NoteVerifier(name, private_key.public_key())

    @classmethod
    def from_key(cls, skey: str) -> NoteSigner:
        """Parse a Go ``sumdb/note`` signer key ``PRIVATE+KEY+<name>+<hex>+<base64>``.

        The base64 part is ``0x01 ‖ 32-byte Ed25519 seed``.

        Raises:
            NoteInvalid: The string is malformed, not Ed25519, or its key id is wrong.
        """
        if not skey.startswith(_PRIVATE_PREFIX):
            raise NoteInvalid("malformed signer key")
        parts = skey[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise NoteInvalid("malformed signer key")
        name, hex8, key64 = parts
        _check_name(name)
        seed = _parse_ed25519(key64, _parse_key_id(hex8), name, seed=True)
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def name(self) -> str:
        """The key name written in signature lines."""
        return self._verifier.name

    @property
    def key_id(self) -> int:
        """The 32-bit key id."""
        return self._verifier.key_id

    def verifier(self) -> NoteVerifier:
        """Return the verifier of this signer's key."""
        return self._verifier

    def verifier_key(self) -> str:
        """Return the verifier key string to publish (``name+hex+base64``)."""
        return self._verifier.verifier_key()

    def signature_line(self, text: str) -> str:
        """Return this key's signature line over ``text`` (checked), with its newline."""
        _check_text(text)
        signature = self._key.sign(text.encode("utf-8"))
        raw = self.key_id.to_bytes(4, "big") + signature
        return f"{_SIG_PREFIX}{self.name} {_b64(raw)}\n"

    def sign(self, text: str) -> str:
        """Sign ``text`` and return the signed note.

        Raises:
            NoteInvalid: The text does not end in a newline, has control characters, or
                the note would exceed :data:`MAX_NOTE_SIZE`.
        """
        return sign_note(text, [self])


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteInvalid("note text must end with a newline")
    _check_chars(text, "note text")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` with several keys and return the signed note.

    Raises:
        NoteInvalid: No signers, a key listed twice, too many signers, an invalid text,
            or a note larger than :data:`MAX_NOTE_SIZE`.
    """
    if not 1 <= len(signers) <= MAX_SIGNATURES:
        raise NoteInvalid("a note needs between 1 and MAX_SIGNATURES signatures")
    if len({(s.name, s.key_id) for s in signers}) != len(signers):
        raise NoteInvalid("a key is listed twice")
    note = text + "\n" + "".join(s.signature_line(text) for s in signers)
    if len(note.encode("utf-8")) > MAX_NOTE_SIZE:
        raise NoteInvalid("note too large")
    return note


def _split_note(note: str | bytes) -> tuple[str, list[tuple[str, int, bytes]]]:
    """Parse a signed note strictly into its text and ``(name, key id, signature)`` lines."""
    if len(note) > MAX_NOTE_SIZE:  # cheap early bound: a str has no more chars than bytes
        raise NoteInvalid("note too large")
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteInvalid("note is not valid UTF-8") from None
    _check_chars(note, "note")
    if len(note.encode("utf-8")) > MAX_NOTE_SIZE:
        raise NoteInvalid("note too large")
    # signed-note §Format: the text is separated from the signatures by the last blank
    # line; the text keeps its final newline, the blank line belongs to neither.
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteInvalid("no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteInvalid("no signature lines")
    if not block.endswith("\n"):
        raise NoteInvalid("signature block must end with a newline")
    raw_lines = block[:-1].split("\n")
    if len(raw_lines) > MAX_SIGNATURES:
        raise NoteInvalid("too many signatures")
    return text, [_parse_line(line) for line in raw_lines]


def _parse_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise NoteInvalid("signature line must start with an em dash and a space")
    name, _, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
    _check_name(name)
    raw = _b64decode(sig64, "signature")
    if len(raw) < 5:  # a key id and at least one byte of signature
        raise NoteInvalid("signature too short")
    return name, int.from_bytes(raw[:4], "big"), raw[4:]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A transparency-log checkpoint (C2SP tlog-checkpoint): the signed body of a tree head.

    Attributes:
        origin: The log's identity; non-empty, one line (by convention ``host/path``).
        size: The number of leaves, ``0`` to :data:`MAX_TREE_SIZE`.
        root: The 32-byte RFC 6962 / RFC 9162 Merkle tree hash at ``size``.
        extensions: Optional non-empty extra lines (not recommended by the spec).

    Raises:
        NoteInvalid: A field is out of range or could not be written as a note text.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in (self.origin, *self.extensions):
            if not isinstance(line, str) or not line or "\n" in line:
                raise NoteInvalid("checkpoint lines must be non-empty single lines")
            _check_chars(line, "checkpoint line")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise NoteInvalid("checkpoint size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteInvalid("checkpoint size out of range")
        if not isinstance(self.root, bytes) or len(self.root) != _ROOT_SIZE:
            raise NoteInvalid("checkpoint root must be 32 bytes")

    def to_text(self) -> str:
        """Return the note text: origin, size, base64 root, extensions, one per line."""
        lines = (self.origin, str(self.size), _b64(self.root), *self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly (the output of :meth:`to_text`).

        Raises:
            NoteInvalid: Fewer than three lines, an empty line, a size that is not plain
                decimal without leading zeros, or a root that is not canonical base64 of
                32 bytes.
        """
        if len(text) > MAX_NOTE_SIZE:
            raise NoteInvalid("checkpoint too large")
        if not text.endswith("\n"):
            raise NoteInvalid("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        # tlog-checkpoint §Note text: at least three non-empty lines.
        if len(lines) < 3 or not all(lines):
            raise NoteInvalid("checkpoint needs three or more non-empty lines")
        origin, size, root, *extensions = lines
        # int() alone would also take "+1", " 1", "1_0" and non-ASCII digits.
        if _DECIMAL.fullmatch(size) is None or len(size) > len(str(MAX_TREE_SIZE)):
            raise NoteInvalid("checkpoint size is not a decimal without leading zeros")
        return cls(origin, int(size), _b64decode(root, "checkpoint root"), tuple(extensions))


def sign_checkpoint(signer: NoteSigner, checkpoint: Checkpoint) -> str:
    """Return ``checkpoint`` as a note signed by ``signer``.

    The caller must never sign two checkpoints that are inconsistent with each other
    (tlog-checkpoint §Signatures); this function cannot know the history.
    """
    return signer.sign(checkpoint.to_text())


def open_checkpoint(
    verifier: NoteVerifier, note: str | bytes, *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    Args:
        verifier: The trusted log key.
        note: The signed note.
        origin: When given, the checkpoint's origin must equal it.

    Returns:
        The verified checkpoint.

    Raises:
        NoteInvalid: The note does not verify, is not a checkpoint, or has another origin.
    """
    checkpoint = Checkpoint.parse(verifier.verify(note))
    if origin is not None and checkpoint.origin != origin:
        raise NoteInvalid("checkpoint origin does not match")
    return checkpoint
