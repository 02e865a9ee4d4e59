"""The tamper-evident audit log: RFC 9162 Merkle hashing over canonical JSON entries."""

__all__: list[str] = []
