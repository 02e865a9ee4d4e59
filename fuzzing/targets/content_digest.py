"""RFC 9530 ``Content-Digest`` checked against a body.

Input: ``header NUL body``. Allowed refusal: ``DigestMismatch``.
"""

from __future__ import annotations

from fuzzing._input import fields, latin1
from herald.core.signatures import check_content_digest, content_digest
from herald.errors import DigestMismatch

REFUSALS = (DigestMismatch,)


def test_one_input(data: bytes) -> None:
    """Check one ``Content-Digest`` header against one body."""
    header, body = fields(data, 2)
    try:
        check_content_digest(latin1(header), body)
    except DigestMismatch:
        return
    # Accepted: the body's own digest must be accepted too (the check is not vacuous).
    check_content_digest(content_digest(body), body)
