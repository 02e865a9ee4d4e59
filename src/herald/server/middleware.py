"""Pure ASGI middleware: response headers (security, rate limits) and request metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.observability.metrics import Metrics

__all__ = ["MetricsMiddleware", "SecurityHeadersMiddleware"]


class SecurityHeadersMiddleware:
    """Adds HSTS (only when serving TLS) and hardening headers to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts_max_age: int, tls: bool) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
        ]
        if tls and hsts_max_age > 0:
            # RFC 6797 §6.1: only meaningful (and only sent) over a secure transport.
            self.headers.append((b"strict-transport-security", f"max-age={hsts_max_age}".encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                present = {name.lower() for name, _ in message.get("headers", [])}
                # A response that sets one of these itself (the console's own CSP) keeps it:
                # two CSP headers would both be enforced.
                extra = [(name, value) for name, value in self.headers if name not in present]
                # An admitted request's RateLimit fields (set by the rate limiter); a
                # refusal carries its own on the problem response.
                fields = scope.get("state", {}).get("ratelimit") or {}
                extra += [
                    (name.lower().encode(), value.encode())
                    for name, value in fields.items()
                    if name.lower().encode() not in present
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class MetricsMiddleware:
    """Counts requests and observes latency by route *template* (never the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            # The runtime (and its metrics) is created in the lifespan, after this
            # middleware; Starlette puts itself in the scope, so look it up per request.
            metrics: Metrics = scope["app"].state.runtime.metrics
            route = getattr(scope.get("route"), "path", None)
            metrics.observe_request(scope["method"], route, status, time.perf_counter() - started)
