"""Audit bundles (``herald audit verify --bundle``): the file an auditor is handed.

Input: the bytes of a bundle file, read by :class:`BundleReader` and verified by
:func:`verify_log` against the trusted key, exactly as the CLI does. A file whose first
line is not a bundle header is refused with ``BundleInvalid``; anything after a valid
header — malformed lines, wrong hashes, forged or foreign checkpoints, a lying ``size`` —
must end in a report (``report.failure`` names the first problem), never in an exception.
A bundle without any problem must verify.

Allowed refusal: ``BundleInvalid``.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald.audit.bundle import BundleInvalid, BundleReader
from herald.audit.note import NoteSigner
from herald.audit.verify import verify_log

REFUSALS = (BundleInvalid,)

ORIGIN = "herald.test/audit"
SIGNER = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
VERIFIER = SIGNER.verifier()

# One scratch file per process: the reader takes a path, as the CLI gives it one.
_fd, _name = tempfile.mkstemp(prefix="herald-fuzz-bundle-")
os.close(_fd)
_PATH = Path(_name)
atexit.register(_PATH.unlink, missing_ok=True)


def test_one_input(data: bytes) -> None:
    """Read and verify one bundle file."""
    _PATH.write_bytes(data)
    try:
        reader = BundleReader(_PATH)
    except REFUSALS:
        return
    report = verify_log(
        reader.entries(),
        reader.checkpoints(),
        VERIFIER,
        origin=ORIGIN,
        expected_size=reader.header.size,
    )
    claimed = reader.header.size
    if report.failure is None and report.entries != claimed:
        raise AssertionError(f"{report.entries} entries verified, the header says {claimed}")
