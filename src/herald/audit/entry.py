"""Audit entries: canonical JSON (RFC 8785) of the entry object.

Each entry is ``{index, time, tenant, actor, action, object, details}``.

Entries never hold content or secrets; a message is represented by a commitment (the SHA-256
of its ciphertext, which includes a random nonce, so a short message cannot be guessed from
the log).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from herald.audit.merkle import leaf_hash

__all__ = ["AuditEvent", "canonical_json"]


def _check(value: Any) -> None:
    # RFC 8785 serialises numbers the ECMAScript way; we only admit integers (exact in
    # both), strings, booleans, null, lists and string-keyed objects so the encoding below
    # is canonical without a number formatter.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str | int):
            continue
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str) or not key.isascii():
                    raise TypeError("audit keys must be ASCII strings")
                stack.append(sub)
        else:
            raise TypeError(f"audit values cannot be {type(item).__name__}")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical form for the restricted value set audit entries use.

    Keys are ASCII so code-point order equals the RFC's UTF-16 order; strings are escaped
    as ECMAScript ``JSON.stringify`` does. msgspec writes exactly what
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes for
    these values (tests/property/test_audit_entry_properties.py pins it) at an eighth of the cost.
    """
    _check(value)
    return msgspec.json.encode(value, order="sorted")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An event waiting for its index; called by the store once the index is known."""

    time: datetime
    tenant: str | None
    actor: str
    action: str
    object: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def with_details(self, **more: Any) -> AuditEvent:
        """A copy with more details (events are immutable)."""
        return dataclasses.replace(self, details={**self.details, **more})

    def __call__(self, index: int) -> tuple[bytes, bytes]:
        """Return ``(canonical entry, RFC 9162 leaf hash)`` for position ``index``."""
        entry = canonical_json(
            {
                "index": index,
                "time": self.time.isoformat().replace("+00:00", "Z"),
                "tenant": self.tenant,
                "actor": self.actor,
                "action": self.action,
                "object": self.object,
                "details": dict(self.details),
            }
        )
        return entry, leaf_hash(entry)
