"""Versioned AES-256-GCM sealing of stored fields: the recipe every at-rest secret goes through.

This module is pure: it never reads the clock or the RNG. Nonces come from an injected
``randbytes(n) -> bytes`` callable (``os.urandom`` in production, a deterministic fake in
tests), in the spirit of cryptography's ``Fernet.encrypt_at_time``.

Sealed blob layout, format version 1 (all integers big-endian)::

    offset  length  field
    ------  ------  -----------------------------------------------------------------
         0       1  format version, ``0x01`` (:data:`FORMAT_V1`)
         1       4  key version, unsigned 32-bit: which data key sealed this blob
         5      12  nonce, 96 random bits (NIST SP 800-38D §8.2.2)
        17       n  ciphertext, exactly as long as the plaintext
      17+n      16  GCM authentication tag, 128 bits (NIST SP 800-38D §5.2.1.2)

:data:`HEADER_LEN` is the 17 bytes before the ciphertext and :data:`OVERHEAD` the 33 bytes
a blob adds to its plaintext.

The GCM associated data is ``blob[0:5] || aad``: the version byte and the key version are
authenticated along with the caller's ``aad``, so rewriting the key version in the header
(to steer a blob to another key, or to one that shares key bytes) fails the tag check. The
key version in the header is only a hint for picking the key, as in Tink and Vault Transit.

The caller's ``aad`` is built by :func:`aad_for`, which binds tenant, record, field and
purpose, so a ciphertext copied to another row, tenant or column does not open.

Every way opening can fail — short or malformed blob, unknown format or key version, wrong
key, wrong AAD, tampered bytes — raises the same :class:`~herald.errors.DecryptionFailed`
with no reason attached, so errors are never an oracle.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from herald.errors import DecryptionFailed, HeraldError

__all__ = [
    "FORMAT_V1",
    "HEADER_LEN",
    "KEY_LEN",
    "KEY_VERSION_MAX",
    "NONCE_LEN",
    "OVERHEAD",
    "SEAL_LIMIT",
    "SEAL_SOFT_LIMIT",
    "TAG_LEN",
    "KeyExhausted",
    "RandBytes",
    "Sealer",
    "aad_for",
    "open_sealed",
    "peek_key_version",
    "seal",
]

#: Format version byte of the layout described in the module docstring.
FORMAT_V1: Final = 1
#: AES-256: data keys and key-encryption keys are 32 bytes.
KEY_LEN: Final = 32
#: 96-bit nonces: the length NIST SP 800-38D §5.2.1.1 recommends, used without GHASH.
NONCE_LEN: Final = 12
#: Full 128-bit tags; truncated tags weaken forgery resistance (NIST SP 800-38D Appendix C).
TAG_LEN: Final = 16
#: Largest key version the 4-byte header field can hold.
KEY_VERSION_MAX: Final = 2**32 - 1
#: Bytes before the ciphertext: format version (1) + key version (4) + nonce (12).
HEADER_LEN: Final = 1 + 4 + NONCE_LEN
#: Bytes a sealed blob adds to its plaintext: header + tag.
OVERHEAD: Final = HEADER_LEN + TAG_LEN
#: NIST SP 800-38D §8.3: with random 96-bit nonces, at most 2^32 encryptions per key.
SEAL_LIMIT: Final = 2**32
#: A :class:`Sealer` refuses to seal more than this many times with one key version in one
#: process: half the NIST bound, leaving room for other processes and restarts, which this
#: counter cannot see. Rotation (``herald keys rotate``) is the real control.
SEAL_SOFT_LIMIT: Final = 2**31

# Format version byte + 4-byte key version: the part of the header bound into the GCM AAD.
_PREFIX = struct.Struct(">BI")
_AAD_DOMAIN = b"herald/aad/v1"
_AAD_PART_MAX = 0xFFFF  # a part's length must fit its 2-byte length prefix

#: The injected randomness source: ``randbytes(n)`` returns ``n`` bytes from a CSPRNG.
RandBytes = Callable[[int], bytes]


class KeyExhausted(HeraldError):
    """A data key has sealed :data:`SEAL_SOFT_LIMIT` times in this process; rotate it.

    Sealing more under one key with random nonces would approach the NIST SP 800-38D §8.3
    bound, beyond which nonce collisions (and with them loss of authenticity) become likely.
    """

    def __init__(self, key_version: int) -> None:
        super().__init__(f"data key version {key_version} reached its seal limit; rotate the key")
        self.key_version = key_version


def aad_for(*, tenant_id: str, record_id: str, field: str, purpose: str = "content") -> bytes:
    """Build the associated data that binds a sealed field to where it is stored.

    The encoding is ``b"herald/aad/v1"`` followed by each of purpose, tenant id, record id and
    field as a 2-byte big-endian length and its UTF-8 bytes. Length prefixes make it
    injective: ``("a", "bc")`` and ``("ab", "c")`` encode differently.

    Args:
        tenant_id: The owning tenant.
        record_id: The row the value is stored in.
        field: The column or attribute name.
        purpose: What the value is (``"content"``, ``"contact"``, ...), for domain separation.

    Returns:
        The associated data to pass to :func:`seal` / :func:`open_sealed` or a :class:`Sealer`.

    Raises:
        ValueError: A part is longer than 65,535 UTF-8 bytes or is not encodable.
    """
    out = bytearray(_AAD_DOMAIN)
    for part in (purpose, tenant_id, record_id, field):
        raw = part.encode("utf-8")
        if len(raw) > _AAD_PART_MAX:
            raise ValueError("AAD part longer than 65535 bytes")
        out += len(raw).to_bytes(2, "big")
        out += raw
    return bytes(out)


def _prefix(key_version: int) -> bytes:
    if not 0 <= key_version <= KEY_VERSION_MAX:
        raise ValueError("key version must fit in an unsigned 32-bit integer")
    return _PREFIX.pack(FORMAT_V1, key_version)


def _cipher(key: bytes) -> AESGCM:
    # AESGCM also takes 16- and 24-byte keys; we only ever want AES-256.
    if len(key) != KEY_LEN:
        raise ValueError("AES-256-GCM keys are 32 bytes")
    return AESGCM(key)


def _nonce(randbytes: RandBytes) -> bytes:
    nonce = randbytes(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise ValueError("randbytes returned the wrong number of bytes")
    return nonce


def _encrypt(cipher: AESGCM, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """The one GCM encryption call of Herald: returns ``ciphertext || tag``."""
    return cipher.encrypt(nonce, plaintext, associated_data)


def _decrypt(
    cipher: AESGCM, nonce: bytes, ciphertext_and_tag: bytes, associated_data: bytes
) -> bytes:
    """The one GCM decryption call of Herald; every failure is :class:`DecryptionFailed`."""
    try:
        return cipher.decrypt(nonce, ciphertext_and_tag, associated_data)
    except (InvalidTag, ValueError, OverflowError):
        # `from None`: the cause must not travel with the error (no oracle, no detail).
        raise DecryptionFailed() from None


def _seal_with(
    cipher: AESGCM, key_version: int, plaintext: bytes, aad: bytes, randbytes: RandBytes
) -> bytes:
    prefix = _prefix(key_version)
    nonce = _nonce(randbytes)
    return prefix + nonce + _encrypt(cipher, nonce, plaintext, prefix + aad)


def _open_with(cipher: AESGCM, blob: bytes, aad: bytes) -> bytes:
    peek_key_version(blob)  # length and format checks
    prefix = blob[: _PREFIX.size]
    return _decrypt(cipher, blob[_PREFIX.size : HEADER_LEN], blob[HEADER_LEN:], prefix + aad)


def seal(key: bytes, key_version: int, plaintext: bytes, aad: bytes, randbytes: RandBytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key`` into a version-1 blob.

    Prefer a :class:`Sealer` when sealing repeatedly: it reuses the cipher object and counts
    uses of each key.

    Args:
        key: A 32-byte AES-256 key.
        key_version: The version number recorded in the header (0 to 2^32 - 1).
        plaintext: The bytes to protect.
        aad: Associated data, usually from :func:`aad_for`; needed again to open.
        randbytes: Source of the 12-byte random nonce (``os.urandom`` in production).

    Returns:
        The sealed blob, ``len(plaintext) + OVERHEAD`` bytes long.

    Raises:
        ValueError: Wrong key length, key version out of range, or a short nonce.
    """
    return _seal_with(_cipher(key), key_version, plaintext, aad, randbytes)


def peek_key_version(blob: bytes) -> int:
    """Read the key version from a blob's header without authenticating anything.

    The result is only a hint for choosing a key: opening authenticates it.

    Args:
        blob: A sealed blob.

    Returns:
        The key version the header names.

    Raises:
        DecryptionFailed: The blob is too short or not format version 1.
    """
    if len(blob) < OVERHEAD or blob[0] != FORMAT_V1:
        raise DecryptionFailed()
    _, key_version = _PREFIX.unpack_from(blob)
    return int(key_version)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Authenticate and decrypt a blob made by :func:`seal`.

    Args:
        key: The 32-byte key the blob was sealed with.
        blob: The sealed blob.
        aad: The associated data given to :func:`seal`.

    Returns:
        The plaintext.

    Raises:
        DecryptionFailed: For every failure, including a wrong key length; never says which.
    """
    if len(key) != KEY_LEN:
        raise DecryptionFailed()
    return _open_with(AESGCM(key), blob, aad)


class Sealer:
    """Seals with the current version of a set of keys and opens with any of them.

    One ``AESGCM`` object is built per key version and reused. Seals are counted per key
    version; at :data:`SEAL_SOFT_LIMIT` (or ``seal_limit``) :meth:`seal` raises
    :class:`KeyExhausted` instead of risking the NIST SP 800-38D §8.3 bound.

    Args:
        keys: 32-byte keys by version number.
        current: The version :meth:`seal` uses; must be one of ``keys``.
        randbytes: Source of random nonces (``os.urandom`` in production).
        seal_limit: Seals allowed per key version in this object's lifetime.

    Raises:
        ValueError: A key is not 32 bytes, a version is out of range, ``current`` is not in
            ``keys``, or ``seal_limit`` is not in ``1..SEAL_LIMIT``.
    """

    __slots__ = ("_ciphers", "_current", "_mac_key", "_randbytes", "_seal_count", "_seal_limit")

    def __init__(
        self,
        keys: Mapping[int, bytes],
        current: int,
        randbytes: RandBytes,
        *,
        seal_limit: int = SEAL_SOFT_LIMIT,
    ) -> None:
        if current not in keys:
            raise ValueError("the current key version has no key")
        if not 0 < seal_limit <= SEAL_LIMIT:
            raise ValueError("seal_limit must be between 1 and 2**32")
        for version in keys:
            _prefix(version)  # range check
        self._ciphers = {version: _cipher(key) for version, key in keys.items()}
        # A separate key for keyed digests (content de-duplication), derived so that the
        # data key itself is only ever used by AES-GCM.
        self._mac_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"herald digest v1"
        ).derive(keys[current])
        self._current = current
        self._randbytes = randbytes
        self._seal_limit = seal_limit
        self._seal_count: dict[int, int] = dict.fromkeys(keys, 0)

    @property
    def current_version(self) -> int:
        """The key version new blobs are sealed with."""
        return self._current

    @property
    def versions(self) -> frozenset[int]:
        """Every key version this sealer can open."""
        return frozenset(self._ciphers)

    @property
    def seal_count(self) -> Mapping[int, int]:
        """Seals made so far by this object, per key version (read-only view)."""
        return MappingProxyType(self._seal_count)

    def digest(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under a key derived from the current data key.

        Equal inputs give equal digests for this tenant (until its key rotates), and a
        digest reveals nothing about the input to anyone without the key — so it may be
        stored where a plain hash of guessable content would leak it.
        """
        mac = hmac.HMAC(self._mac_key, hashes.SHA256())
        mac.update(data)
        return mac.finalize()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Seal ``plaintext`` with the current key version.

        Args:
            plaintext: The bytes to protect.
            aad: Associated data, usually from :func:`aad_for`.

        Returns:
            The sealed blob.

        Raises:
            KeyExhausted: The current key has reached its seal limit.
        """
        version = self._current
        if self._seal_count[version] >= self._seal_limit:
            raise KeyExhausted(version)
        # Count before encrypting: a failure after this point must not give back a use.
        self._seal_count[version] += 1
        return _seal_with(self._ciphers[version], version, plaintext, aad, self._randbytes)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Open a blob sealed under any known key version.

        Args:
            blob: The sealed blob.
            aad: The associated data it was sealed with.

        Returns:
            The plaintext.

        Raises:
            DecryptionFailed: For every failure, including an unknown key version.
        """
        cipher = self._ciphers.get(peek_key_version(blob))
        if cipher is None:
            raise DecryptionFailed()
        return _open_with(cipher, blob, aad)
