"""Errors raised by the Herald SDK.

Every error the SDK raises on purpose derives from :class:`HeraldClientError`, so a caller
(the CLI, a service) needs one ``except`` clause to report any failure. Third-party
exceptions (``httpx``, ``websockets``, ``ssl``) are mapped to these at the SDK's edge.

::

    HeraldClientError
    ├── ConnectionFailed            the server could not be reached (refused, TLS, timeout)
    ├── ProblemError                the server answered an RFC 9457 problem (or another non-2xx)
    │   └── AuthenticationError     ... with status 401 (bad client credentials or token)
    └── StreamClosed                the WebSocket stream was closed with a non-retryable code
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "AuthenticationError",
    "ConnectionFailed",
    "HeraldClientError",
    "ProblemError",
    "StreamClosed",
    "problem_from_http",
]

#: Herald's problem ``type`` URIs are ``urn:herald:problem:<slug>`` (docs/api.md, Errors).
PROBLEM_TYPE_PREFIX = "urn:herald:problem:"

_PROBLEM_CONTENT_TYPE = "application/problem+json"
_UNAUTHORIZED = 401


class HeraldClientError(Exception):
    """Root of every error the Herald SDK raises on purpose."""


class ConnectionFailed(HeraldClientError):
    """The server could not be reached; the message says why and what to do about it."""


class ProblemError(HeraldClientError):
    """The server refused the request with a problem (RFC 9457).

    Attributes:
        status: The HTTP status code.
        type: The problem ``type`` URI, e.g. ``urn:herald:problem:invalid-topic``.
        slug: The stable part after ``urn:herald:problem:``; ``http-<status>`` when the
            answer was not a Herald problem (for example a proxy's HTML error page).
        title: The problem's short summary.
        detail: The human explanation of this occurrence.
        body: The whole problem object as received (extension members included).
    """

    def __init__(
        self,
        status: int,
        type: str,  # noqa: A002 - the RFC 9457 member is called "type"
        title: str,
        detail: str,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.slug = (
            type.removeprefix(PROBLEM_TYPE_PREFIX)
            if type.startswith(PROBLEM_TYPE_PREFIX)
            else f"http-{status}"
        )
        self.title = title
        self.detail = detail
        self.body: dict[str, Any] = body if body is not None else {}
        super().__init__(f"{status} {self.slug}: {detail}")

    @classmethod
    def from_problem(cls, problem: dict[str, Any], *, status: int | None = None) -> ProblemError:
        """Build the error from a decoded problem object.

        Args:
            problem: The problem JSON object.
            status: The HTTP status; defaults to the object's ``status`` member (or 400, the
                status of an invalid item in a batch, when that is missing too).

        Returns:
            A :class:`ProblemError`, or an :class:`AuthenticationError` for status 401.
        """
        if status is None:
            member = problem.get("status")
            status = member if isinstance(member, int) else 400
        type_uri = _str_member(problem, "type", "about:blank")
        title = _str_member(problem, "title", "")
        detail = _str_member(problem, "detail", title or f"HTTP {status}")
        error_class = AuthenticationError if status == _UNAUTHORIZED else ProblemError
        return error_class(status, type_uri, title, detail, problem)


class AuthenticationError(ProblemError):
    """The server answered 401: client credentials or the token were refused."""


class StreamClosed(HeraldClientError):
    """The stream was closed with a code that retrying would not fix.

    Attributes:
        code: The WebSocket close code (e.g. 4401: token invalid or expired).
        reason: The close reason sent by the server.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"stream closed with code {code}: {reason or 'no reason given'}")


def _str_member(problem: dict[str, Any], name: str, default: str) -> str:
    value = problem.get(name)
    return value if isinstance(value, str) else default


def problem_from_http(
    status: int, content_type: str | None, content: bytes, reason: str = ""
) -> ProblemError:
    """Map a non-2xx HTTP answer to a :class:`ProblemError`.

    Args:
        status: The HTTP status code.
        content_type: The ``Content-Type`` header, if any.
        content: The raw response body.
        reason: The reason phrase, used as detail when the body is not a problem.

    Returns:
        The parsed problem when the body is ``application/problem+json``; otherwise a
        problem with slug ``http-<status>`` (a proxy or another server answered).
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == _PROBLEM_CONTENT_TYPE:
        try:
            problem = json.loads(content)
        except ValueError:
            problem = None
        if isinstance(problem, dict):
            return ProblemError.from_problem(problem, status=status)
    detail = reason or f"HTTP {status}"
    error_class = AuthenticationError if status == _UNAUTHORIZED else ProblemError
    return error_class(status, "about:blank", reason, detail)
