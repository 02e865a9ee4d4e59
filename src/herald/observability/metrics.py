"""Prometheus metrics of one Herald instance, on a registry of its own.

Each :class:`Metrics` owns a :class:`~prometheus_client.CollectorRegistry` rather than using
the process-wide default, so two app instances (or two tests) never collide or double-count.
The server exposes :meth:`Metrics.render` at ``/metrics``.

Label values must come from a small, code-defined vocabulary, never from requests: a label
value per topic, recipient or raw path would both leak user data and explode cardinality.
In particular ``route`` is the route *template* (``/v1/topics/{topic}``), never the path
(``/v1/topics/orders``). The ``observe_*``/``record_*`` helpers enforce this where they can:
unknown HTTP methods become ``OTHER``, free-form words that are not short ``snake_case``
become ``other``, and a route that looks like a raw path becomes :data:`UNMATCHED_ROUTE`.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "FANOUT_BUCKETS",
    "HTTP_BUCKETS",
    "NAMESPACE",
    "UNMATCHED_ROUTE",
    "Metrics",
    "safe_route",
]

#: Prefix of every metric name (``herald_http_requests_total``).
NAMESPACE: Final = "herald"
#: Request latency buckets, 0.5 ms to 5 s (seconds).
HTTP_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                       2.5, 5.0)  # fmt: skip
#: Publish-to-deliver (fan-out) latency buckets, 0.1 ms to 1 s (seconds).
FANOUT_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                         0.1, 0.25, 0.5, 1.0)  # fmt: skip
#: The ``route`` label of requests that matched no route or passed a raw path.
UNMATCHED_ROUTE: Final = "<unmatched>"

Outcome = Literal["accepted", "refused"]
Transport = Literal["websocket", "sse"]
TokenKind = Literal["access", "subscriber"]

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OUTCOMES: Final = ("accepted", "refused")
_TRANSPORTS: Final = ("websocket", "sse")
_TOKEN_KINDS: Final = ("access", "subscriber")
_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ROUTE_MAX = 128
# A path segment that is an identifier rather than a template word: a number, a UUID, or a
# long token with digits (ULIDs, prefixed ids such as msg_01HZX...).
_ID_SEGMENT = re.compile(r"\d+|[0-9a-fA-F-]{32,36}|(?=[^{}]*\d)[A-Za-z0-9_.~-]{16,}")
# What route templates are made of: no query, fragment, escapes, spaces or non-ASCII.
_ROUTE_SHAPE = re.compile(r"/[A-Za-z0-9_.~:{}/-]*")


def safe_route(route: str | None) -> str:
    """Return ``route`` if it looks like a route template, else :data:`UNMATCHED_ROUTE`.

    This is a guard, not a substitute for passing templates: ``/v1/topics/orders`` cannot be
    told from a template and is kept.

    Args:
        route: The matched route's path template, or ``None`` when nothing matched.

    Returns:
        A label value safe to expose.
    """
    if not route or len(route) > _ROUTE_MAX or not _ROUTE_SHAPE.fullmatch(route):
        return UNMATCHED_ROUTE
    if any(_ID_SEGMENT.fullmatch(segment) for segment in route.split("/")):
        return UNMATCHED_ROUTE
    return route


def _word(value: str) -> str:
    return value if _WORD.fullmatch(value) else "other"


def _choice(value: str, allowed: tuple[str, ...], label: str) -> str:
    if value not in allowed:
        raise ValueError(f"{label} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class Metrics:
    """The metrics of one Herald instance and the registry that holds them.

    Attributes:
        registry: The dedicated registry; :meth:`render` exports exactly this.
        http_requests_total: Requests by ``method``, ``route`` (template) and ``status``.
        http_request_duration_seconds: Request latency by ``route`` (template).
        messages_published_total: Publish attempts by ``outcome`` (accepted, refused).
        deliveries_total: Delivery state changes by ``channel`` and ``state``.
        active_streams: Open subscriber streams by ``transport`` (websocket, sse).
        stream_disconnects_total: Closed streams by ``reason``.
        publish_to_deliver_seconds: Fan-out latency from accepted publish to stream write.
        tokens_issued_total: Tokens issued by ``kind`` (access, subscriber).
        auth_failures_total: Rejected authentications by ``reason``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg, ns = self.registry, NAMESPACE
        self.http_requests_total = Counter(
            "http_requests_total",
            "HTTP requests.",
            ["method", "route", "status"],
            namespace=ns,
            registry=reg,
        )
        self.http_request_duration_seconds = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency in seconds.",
            ["route"],
            buckets=HTTP_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.messages_published_total = Counter(
            "messages_published_total", "Publish attempts.", ["outcome"], namespace=ns, registry=reg
        )
        self.deliveries_total = Counter(
            "deliveries_total",
            "Delivery state changes.",
            ["channel", "state"],
            namespace=ns,
            registry=reg,
        )
        self.active_streams = Gauge(
            "active_streams", "Open subscriber streams.", ["transport"], namespace=ns, registry=reg
        )
        self.stream_disconnects_total = Counter(
            "stream_disconnects_total",
            "Closed subscriber streams.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.publish_to_deliver_seconds = Histogram(
            "publish_to_deliver_seconds",
            "Latency from accepted publish to stream delivery in seconds.",
            buckets=FANOUT_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.tokens_issued_total = Counter(
            "tokens_issued_total", "Tokens issued.", ["kind"], namespace=ns, registry=reg
        )
        self.auth_failures_total = Counter(
            "auth_failures_total",
            "Rejected authentications.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        # Closed vocabularies start at zero so dashboards and rate() see every series.
        for outcome in _OUTCOMES:
            self.messages_published_total.labels(outcome=outcome)
        for transport in _TRANSPORTS:
            self.active_streams.labels(transport=transport)
        for kind in _TOKEN_KINDS:
            self.tokens_issued_total.labels(kind=kind)

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one HTTP request and record its latency.

        Args:
            method: The request method; anything non-standard is counted as ``OTHER``.
            route: The matched route *template*, or ``None`` if nothing matched.
            status: The response status code.
            seconds: Time from request start to response end.
        """
        method = method.upper() if method.upper() in _METHODS else "OTHER"
        label = safe_route(route)
        code = str(status) if 100 <= status <= 599 else "other"
        self.http_requests_total.labels(method=method, route=label, status=code).inc()
        self.http_request_duration_seconds.labels(route=label).observe(seconds)

    def record_publish(self, outcome: Outcome, count: int = 1) -> None:
        """Count ``count`` messages published with ``outcome``.

        Raises:
            ValueError: If ``outcome`` is not ``accepted`` or ``refused``.
        """
        label = _choice(outcome, _OUTCOMES, "outcome")
        self.messages_published_total.labels(outcome=label).inc(count)

    def record_delivery(self, channel: str, state: str) -> None:
        """Count one delivery reaching ``state`` on ``channel`` (names from the registry)."""
        self.deliveries_total.labels(channel=_word(channel), state=_word(state)).inc()

    def stream_opened(self, transport: Transport) -> None:
        """Count a subscriber stream as open.

        Raises:
            ValueError: If ``transport`` is not ``websocket`` or ``sse``.
        """
        self.active_streams.labels(transport=_choice(transport, _TRANSPORTS, "transport")).inc()

    def stream_closed(self, transport: Transport, reason: str) -> None:
        """Count a subscriber stream as closed for ``reason`` (a code-defined word).

        Raises:
            ValueError: If ``transport`` is not ``websocket`` or ``sse``.
        """
        self.active_streams.labels(transport=_choice(transport, _TRANSPORTS, "transport")).dec()
        self.stream_disconnects_total.labels(reason=_word(reason)).inc()

    def observe_fanout(self, seconds: float) -> None:
        """Record the delay between accepting a message and writing it to a stream."""
        self.publish_to_deliver_seconds.observe(seconds)

    def record_token(self, kind: TokenKind) -> None:
        """Count one issued token of ``kind``.

        Raises:
            ValueError: If ``kind`` is not ``access`` or ``subscriber``.
        """
        self.tokens_issued_total.labels(kind=_choice(kind, _TOKEN_KINDS, "kind")).inc()

    def record_auth_failure(self, reason: str) -> None:
        """Count one rejected authentication for ``reason`` (a code-defined word)."""
        self.auth_failures_total.labels(reason=_word(reason)).inc()

    def render(self) -> tuple[bytes, str]:
        """Export the registry in the Prometheus text format.

        Returns:
            The body and its ``Content-Type``.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
