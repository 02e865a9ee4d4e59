"""JSON and problem+json responses, and the exception handlers that produce them."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from herald.crypto.keyring import NoDataKey
from herald.errors import (
    ApiError,
    ConfigError,
    Gone,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    StorageError,
    problem_type,
)
from herald.observability.logging import get_logger

__all__ = ["EXCEPTION_HANDLERS", "json_response", "problem_body", "problem_response"]

_log = get_logger("herald.server")
_ENCODER = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded once with msgspec."""
    return Response(_ENCODER.encode(body), status, headers, media_type="application/json")


def problem_body(error: ApiError, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 members of ``error`` (plus its extension members)."""
    body: dict[str, Any] = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance is not None:
        body["instance"] = instance
    # RFC 9457 §3.1: ``status`` is the HTTP status code. An extension member of the same
    # name (e.g. readiness' own "status": "not ready") must not replace a standard one.
    body.update({k: v for k, v in error.extra.items() if k not in body})
    return body


def problem_response(error: ApiError, instance: str | None = None) -> Response:
    """An ``application/problem+json`` response (RFC 9457 §3)."""
    headers = {"Cache-Control": "no-store", **error.headers}
    return Response(
        _ENCODER.encode(problem_body(error, instance)),
        error.status,
        headers,
        media_type="application/problem+json",
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return problem_response(exc, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    error: ApiError
    if exc.status_code == 404:
        error = NotFound("no such route")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed here")
        # RFC 9110 §15.5.6: a 405 lists the allowed methods.
        error.headers.update(exc.headers or {})
    else:
        error = ApiError(str(exc.detail), slug=f"http-{exc.status_code}")
        error.status = exc.status_code  # type: ignore[misc]
    return problem_response(error, request.url.path)


async def _storage_error(request: Request, exc: Exception) -> Response:
    _log.warning("storage unavailable", path=request.url.path, error=type(exc).__name__)
    return problem_response(
        ServiceUnavailable("the database is unavailable; nothing was stored, retry later"),
        request.url.path,
    )


async def _config_error(request: Request, exc: Exception) -> Response:
    _log.error("configuration problem", error=str(exc))
    return problem_response(ServiceUnavailable("the server is not fully configured"))


async def _no_data_key(request: Request, exc: Exception) -> Response:
    return problem_response(
        Gone("this tenant's data keys were destroyed; it can no longer store content"),
        request.url.path,
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed the connection mid-request: nothing to answer, nothing to alarm.
    _log.debug("client disconnected", path=request.url.path)
    return Response(status_code=400)


async def _internal(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (through the redaction filter), never to the client.
    _log.exception("unhandled error", path=request.url.path)
    return problem_response(InternalError("an internal error occurred"), request.url.path)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    StorageError: _storage_error,
    ConfigError: _config_error,
    NoDataKey: _no_data_key,
    ClientDisconnect: _client_gone,
    Exception: _internal,
}

# Referenced by the OpenAPI document.
PROBLEM_TYPE_EXAMPLE = problem_type("invalid-request")
