"""Portable audit bundles: the log as JSON Lines, for ``herald audit verify --bundle``.

::

    {"format": "herald-audit-bundle/1", "origin": "…", "verifier_key": "…", "size": N}
    {"i": 0, "e": "<base64 entry>", "h": "<hex leaf hash>"}        one line per entry
    …
    {"checkpoint": "<signed note>"}                                 one line per checkpoint

The header is not signed: its ``verifier_key`` is a convenience, an auditor passes the key
they trust with ``--key``; its ``size`` must equal the number of entry lines (so that a
bundle cut short is caught even without a witness). Entry lines are read leniently: a line
that cannot be decoded still counts as the entry of its position, with bytes that cannot
match, so that the verifier names its index instead of the reader refusing the file.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from herald.audit.verify import EntryRow
from herald.errors import HeraldError
from herald.storage.base import Store

__all__ = [
    "BUNDLE_FORMAT",
    "EXPORT_PAGE",
    "BundleHeader",
    "BundleInvalid",
    "BundleReader",
    "ExportSummary",
    "checkpoint_line",
    "entry_line",
    "export_bundle",
]

#: The format line of this bundle version.
BUNDLE_FORMAT = "herald-audit-bundle/1"
#: Entries read from the store per query while exporting.
EXPORT_PAGE = 5000
_CHECKPOINT_PAGE = 1000


class BundleInvalid(HeraldError):
    """The file is not an audit bundle (its header is missing or malformed)."""


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """The first line of a bundle."""

    origin: str
    verifier_key: str
    size: int

    def to_line(self) -> str:
        """The header as one JSON line (with its newline)."""
        header = {
            "format": BUNDLE_FORMAT,
            "origin": self.origin,
            "verifier_key": self.verifier_key,
            "size": self.size,
        }
        return _line(header)


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What :func:`export_bundle` wrote."""

    entries: int
    checkpoints: int


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":")) + "\n"


def entry_line(index: int, entry: bytes, leaf: bytes) -> str:
    """One entry line: stored index, base64 entry bytes, hex stored leaf hash."""
    return _line({"i": index, "e": base64.b64encode(entry).decode("ascii"), "h": leaf.hex()})


def checkpoint_line(note: str) -> str:
    """One checkpoint line."""
    return _line({"checkpoint": note})


async def export_bundle(
    store: Store, out: TextIO, *, origin: str, verifier_key: str, page: int = EXPORT_PAGE
) -> ExportSummary:
    """Write the log of ``store`` to ``out`` as a bundle, exactly as stored.

    Entries are read in pages of ``page`` up to the size found first; checkpoints signed
    meanwhile for a larger size are left out (they would name entries the bundle lacks).
    Nothing is checked: a tampered store gives a bundle that fails verification the same
    way (the header's size is the store's ``audit_size``, one more than the largest index).
    """
    size = await store.audit_size()
    out.write(BundleHeader(origin, verifier_key, size).to_line())
    written = 0
    for start in range(0, size, page):
        for record in await store.audit_entries(start, min(start + page, size)):
            out.write(entry_line(record.index, record.entry, record.leaf_hash))
            written += 1
    checkpoints = 0
    after = -1
    while True:
        batch = await store.checkpoints(after_size=after, limit=_CHECKPOINT_PAGE)
        for checkpoint in batch:
            if checkpoint.size <= size:
                out.write(checkpoint_line(checkpoint.note))
                checkpoints += 1
        if len(batch) < _CHECKPOINT_PAGE:
            break
        after = batch[-1].size
    return ExportSummary(written, checkpoints)


class BundleReader:
    """Reads a bundle file: its header, then (second pass) checkpoints and entries.

    Raises:
        BundleInvalid: from the constructor, when the header is not a bundle header.
        OSError: the file cannot be read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("r", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            first = f.readline()
        self.header = _parse_header(first)

    def _lines(self) -> Iterator[str]:
        with self.path.open("r", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            f.readline()
            yield from f

    def checkpoints(self) -> list[str]:
        """The checkpoint notes, in file order."""
        notes = []
        for line in self._lines():
            value = _json_object(line)
            if value is not None and "checkpoint" in value:
                note = value["checkpoint"]
                notes.append(note if isinstance(note, str) else json.dumps(note))
        return notes

    def entries(self) -> Iterator[EntryRow]:
        """``(stored index, entry, stored leaf hash)`` of every line that is not a checkpoint.

        A malformed line yields bytes that cannot match their hash (so that the verifier
        reports it as modified at its position).
        """
        for line in self._lines():
            value = _json_object(line)
            if value is None:
                yield -1, line.encode("utf-8", "surrogateescape"), b""
                continue
            if "checkpoint" in value:
                continue
            index = value.get("i")
            if not isinstance(index, int) or isinstance(index, bool):
                index = -1
            yield index, _b64(value.get("e")), _hex(value.get("h"))


def _parse_header(line: str) -> BundleHeader:
    value = _json_object(line)
    if value is None or value.get("format") != BUNDLE_FORMAT:
        raise BundleInvalid(f"not an audit bundle (the first line must name {BUNDLE_FORMAT})")
    origin, key, size = value.get("origin"), value.get("verifier_key"), value.get("size")
    if not isinstance(origin, str) or not isinstance(key, str):
        raise BundleInvalid("the bundle header needs string origin and verifier_key")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleInvalid("the bundle header needs a non-negative integer size")
    return BundleHeader(origin, key, size)


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _b64(value: object) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value.encode("utf-8", "surrogateescape")
    return json.dumps(value).encode("utf-8")


def _hex(value: object) -> bytes:
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            return b""
    return b""
