"""The ``local`` key provider: a 32-byte master key from a 0600 file or the environment.

This module is an adapter and does I/O (the key file); everything it builds on in
:mod:`herald.crypto.aead` stays pure.

The master key is never used directly. :class:`LocalKeyProvider` derives a key-encryption key
(KEK) from it with HKDF-SHA256 (RFC 5869) and wraps data keys with AES-256-GCM under that KEK,
key version 0, with the caller's context as associated data.

The key file holds the base64 of the 32 key bytes and a newline. It is created by
``herald init`` with mode 0600 and refused when group or others may read or write it, as
OpenSSH does for private keys. ``HERALD_MASTER_KEY`` (same base64 form) takes precedence
over the file. Error messages name the file or the setting, never key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from herald.crypto.aead import KEY_LEN, RandBytes, Sealer
from herald.errors import ConfigError

__all__ = [
    "KEK_INFO",
    "KEK_SALT",
    "MASTER_KEY_ENV",
    "MASTER_KEY_LEN",
    "LocalKeyProvider",
    "generate_master_key_file",
    "load_master_key",
]

#: The 32-byte master key (256 bits of CSPRNG output).
MASTER_KEY_LEN: Final = 32
#: The setting that carries the master key in the environment, named in error messages.
MASTER_KEY_ENV: Final = "HERALD_MASTER_KEY"
#: RFC 5869 §3.1: a fixed, non-secret salt is fine for a uniformly random input key; it also
#: separates Herald's derivations from any other use of the same bytes.
KEK_SALT: Final = b"herald/kek/v1"
#: RFC 5869 §3.2: ``info`` binds the output to its purpose, so other keys can be derived from
#: the same master key later without ever colliding with the KEK.
KEK_INFO: Final = b"herald key-encryption key v1"

# The base64 of 32 bytes is 44 characters; anything much larger is not a key file.
_KEY_FILE_MAX = 256
# The KEK's version in wrapped blobs: one KEK per master key, so always 0.
_KEK_VERSION: Final = 0


def _decode_key(text: str | bytes) -> bytes | None:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == MASTER_KEY_LEN else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def generate_master_key_file(path: Path) -> None:
    """Create a new master key file with mode 0600; never overwrite an existing one.

    The key is written to a fresh temporary file beside ``path`` (created ``O_EXCL``, mode
    0600, fsynced) and then hard-linked into place. ``link(2)`` fails if ``path`` exists, so
    a concurrent ``herald init`` cannot clobber a key, and a crash never leaves a partial one.

    Args:
        path: Where to create the key file. Its directory must exist.

    Raises:
        ConfigError: ``path`` already exists or cannot be created.
    """
    data = base64.b64encode(os.urandom(MASTER_KEY_LEN)) + b"\n"
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the master key file in {path.parent}: {exc.strerror}"
        ) from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only narrow the mode; make it exact
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(
                f"master key file {path} already exists; refusing to overwrite it"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot create master key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Persist the new directory entry; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def load_master_key(*, path: Path, env_value: str | None) -> bytes:
    """Load the master key from the environment value or, failing that, the key file.

    Args:
        path: The key file (``<data_dir>/master.key``).
        env_value: The value of ``HERALD_MASTER_KEY``, or None when unset. When set it
            wins, and the file is not read.

    Returns:
        The 32 master key bytes.

    Raises:
        ConfigError: The environment value is not base64 of 32 bytes; the file is missing,
            unreadable, accessible to group or others, or malformed.
    """
    if env_value is not None:
        key = _decode_key(env_value)
        if key is None:
            raise ConfigError(f"{MASTER_KEY_ENV} must be the base64 encoding of exactly 32 bytes")
        return key
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(
            f"master key file {path} does not exist; run `herald init` to create it "
            f"or set {MASTER_KEY_ENV}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot open master key file {path}: {exc.strerror}") from None
    try:
        # fstat the open descriptor, not the path: no window to swap the file in between.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"master key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"master key file {path} is accessible to group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
            )
        raw = os.read(fd, _KEY_FILE_MAX + 1)
    finally:
        os.close(fd)
    key = None if len(raw) > _KEY_FILE_MAX else _decode_key(raw)
    if key is None:
        raise ConfigError(f"master key file {path} is malformed: expected base64 of 32 bytes")
    return key


class LocalKeyProvider:
    """The ``local`` key provider: wraps data keys under a KEK derived from the master key.

    Wrapped keys use the :mod:`herald.crypto.aead` layout with key version 0. Each wrap is a
    GCM encryption under the KEK and counts against its NIST SP 800-38D §8.3 budget, which
    data-key wraps (a few per tenant per rotation) are nowhere near.

    Args:
        master_key: The 32-byte master key from :func:`load_master_key`.
        randbytes: Nonce source (default ``os.urandom``).

    Raises:
        ValueError: ``master_key`` is not 32 bytes.
    """

    name: Final = "local"

    __slots__ = ("_sealer", "kek_id")

    def __init__(self, master_key: bytes, *, randbytes: RandBytes = os.urandom) -> None:
        if len(master_key) != MASTER_KEY_LEN:
            raise ValueError("the master key must be 32 bytes")
        # RFC 5869 §2: HKDF-Extract then -Expand; the master key itself never touches data.
        kek = HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=KEK_SALT, info=KEK_INFO).derive(
            master_key
        )
        self._sealer = Sealer({_KEK_VERSION: kek}, _KEK_VERSION, randbytes)
        # Names the KEK inside wrapped blobs (KEK rotation); an HMAC, so it reveals nothing.
        fingerprint = hmac.new(kek, b"herald kek id v1", hashlib.sha256).hexdigest()[:16]
        self.kek_id = f"local:{fingerprint}"

    def __repr__(self) -> str:
        return "LocalKeyProvider()"

    async def wrap(self, plaintext_key: bytes, context: bytes) -> bytes:
        """Encrypt a data key under the KEK, binding ``context`` as associated data.

        Args:
            plaintext_key: The key to wrap.
            context: Where the key belongs, e.g. from
                :func:`herald.crypto.keyring.dek_context`.

        Returns:
            The wrapped key.
        """
        return self._sealer.seal(plaintext_key, context)

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Decrypt a wrapped key; the same ``context`` as at wrapping is required.

        Args:
            wrapped: Bytes from :meth:`wrap`.
            context: The context given to :meth:`wrap`.

        Returns:
            The plaintext key.

        Raises:
            DecryptionFailed: Wrong master key, wrong context, or tampered bytes.
        """
        return self._sealer.open(wrapped, context)
