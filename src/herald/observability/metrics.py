"""Prometheus metrics of one Herald instance, on a registry of its own.

Each :class:`Metrics` owns a :class:`~prometheus_client.CollectorRegistry` rather than using
the process-wide default, so two app instances (or two tests) never collide or double-count.
The server exposes :meth:`Metrics.render` at ``/metrics``.

Queue depths (stream session queues, deliveries in flight) are read when ``/metrics`` is
scraped, through callbacks the runtime registers (:meth:`Metrics.watch_stream_queues`,
:meth:`Metrics.watch_deliveries`), so the hot path pays nothing for them.

Label values must come from a small, code-defined vocabulary, never from requests: a label
value per topic, recipient or raw path would both leak user data and explode cardinality.
In particular ``route`` is the route *template* (``/v1/topics/{topic}``), never the path
(``/v1/topics/orders``). The ``observe_*``/``record_*`` helpers enforce this where they can:
unknown HTTP methods become ``OTHER``, free-form words that are not short ``snake_case``
become ``other``, and a route that looks like a raw path becomes :data:`UNMATCHED_ROUTE`.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from herald import limits

__all__ = [
    "FANOUT_BUCKETS",
    "HTTP_BUCKETS",
    "LOOP_LAG_BUCKETS",
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
#: Event-loop lag buckets, 0.5 ms to 5 s (seconds). 0.1 s is a bound, so whether a window's
#: p99 exceeds 100 ms can be decided exactly from bucket counts.
LOOP_LAG_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
                           0.5, 1.0, 2.5, 5.0)  # fmt: skip
#: The ``route`` label of requests that matched no route or passed a raw path.
UNMATCHED_ROUTE: Final = "<unmatched>"

Outcome = Literal["accepted", "refused"]
Transport = Literal["websocket", "sse"]
TokenKind = Literal["access", "subscriber"]
Writer = Literal["raw", "asgi"]

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OUTCOMES: Final = ("accepted", "refused")
_TRANSPORTS: Final = ("websocket", "sse")
_TOKEN_KINDS: Final = ("access", "subscriber")
_WRITERS: Final = ("raw", "asgi")
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


def _no_stream_queues() -> tuple[int, int]:
    return 0, 0


def _no_deliveries() -> int:
    return 0


class _QueueDepths(Collector):
    """Gauges computed when the registry is collected (a scrape), from callbacks."""

    def __init__(self) -> None:
        self.stream_queues: Callable[[], tuple[int, int]] = _no_stream_queues
        self.deliveries_in_flight: Callable[[], int] = _no_deliveries

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without describe() the registry would collect (call the callbacks) on register.
        return self._families(None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total, largest = self.stream_queues()
        return self._families((total, largest, self.deliveries_in_flight()))

    @staticmethod
    def _families(values: tuple[int, int, int] | None) -> Iterator[GaugeMetricFamily]:
        docs = (
            ("stream_queued_frames", "Frames waiting in all stream session queues."),
            ("stream_queue_depth_max", "Frames waiting in the fullest stream session queue."),
            ("deliveries_in_flight", "Channel delivery attempts running on this node."),
        )
        for index, (name, doc) in enumerate(docs):
            family = GaugeMetricFamily(f"{NAMESPACE}_{name}", doc)
            if values is not None:
                family.add_metric([], values[index])
            yield family


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
        websocket_streams_total: WebSocket streams by ``writer``: ``raw`` (frames built once
            and written to the transport as they are) or ``asgi`` (``websocket.send``).
        publish_to_deliver_seconds: Fan-out latency from accepted publish to stream write.
        tokens_issued_total: Tokens issued by ``kind`` (access, subscriber).
        auth_failures_total: Rejected authentications by ``reason``.
        event_loop_lag_seconds: How late the loop-lag monitor's periodic wake-ups fired.
        event_loop_lag_max_seconds: The largest of those over the last
            :data:`~herald.limits.EVENT_LOOP_LAG_WINDOW` seconds (computed when scraped).

    Also exported, computed when scraped: ``stream_queued_frames`` (frames waiting in all
    stream session queues), ``stream_queue_depth_max`` (in the fullest one) and
    ``deliveries_in_flight`` (channel delivery attempts running on this node).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Create the metrics on a new registry.

        Args:
            clock: Monotonic seconds; dates loop-lag samples for the recent-max gauge.
        """
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        window = limits.EVENT_LOOP_LAG_WINDOW
        # Bounded: at most one sample per interval can fall in the window.
        self._recent_lags: deque[tuple[float, float]] = deque(
            maxlen=math.ceil(window / limits.EVENT_LOOP_LAG_INTERVAL) + 1
        )
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
        self.publish_commits_total = Counter(
            "publish_commits_total",
            "Transactions that committed publish requests (group commit: requests per "
            "transaction is herald_publish_requests_committed_total divided by this).",
            namespace=ns,
            registry=reg,
        )
        self.publish_requests_committed_total = Counter(
            "publish_requests_committed_total",
            "Publish requests committed (single, batch, scheduled releases).",
            namespace=ns,
            registry=reg,
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
        self.websocket_streams_total = Counter(
            "websocket_streams_total",
            "WebSocket streams started, by how their frames are written.",
            ["writer"],
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
        self.event_loop_lag_seconds = Histogram(
            "event_loop_lag_seconds",
            "How late the event loop ran a periodic wake-up, in seconds.",
            buckets=LOOP_LAG_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.event_loop_lag_max_seconds = Gauge(
            "event_loop_lag_max_seconds",
            f"Largest event-loop lag of the last {window:g} seconds.",
            namespace=ns,
            registry=reg,
        )
        self.event_loop_lag_max_seconds.set_function(self._recent_lag_max)
        self._queues = _QueueDepths()
        reg.register(self._queues)
        # Closed vocabularies start at zero so dashboards and rate() see every series.
        for outcome in _OUTCOMES:
            self.messages_published_total.labels(outcome=outcome)
        for transport in _TRANSPORTS:
            self.active_streams.labels(transport=transport)
        for kind in _TOKEN_KINDS:
            self.tokens_issued_total.labels(kind=kind)
        for writer in _WRITERS:
            self.websocket_streams_total.labels(writer=writer)

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

    def record_publish_commit(self, requests: int) -> None:
        """Count one publish transaction that committed ``requests`` requests together."""
        self.publish_commits_total.inc()
        self.publish_requests_committed_total.inc(requests)

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

    def websocket_writer(self, writer: Writer) -> None:
        """Count one WebSocket stream's sender by how it writes frames.

        Raises:
            ValueError: If ``writer`` is not ``raw`` or ``asgi``.
        """
        self.websocket_streams_total.labels(writer=_choice(writer, _WRITERS, "writer")).inc()

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

    def observe_loop_lag(self, seconds: float) -> None:
        """Record how late one periodic wake-up of the event loop fired."""
        self.event_loop_lag_seconds.observe(seconds)
        self._recent_lags.append((self._clock(), seconds))

    def _recent_lag_max(self) -> float:
        since = self._clock() - limits.EVENT_LOOP_LAG_WINDOW
        return max((lag for at, lag in self._recent_lags if at >= since), default=0.0)

    def watch_stream_queues(self, depths: Callable[[], tuple[int, int]]) -> None:
        """Export stream queue depths, read when scraped.

        Args:
            depths: Returns the frames queued over all sessions and in the fullest one.
        """
        self._queues.stream_queues = depths

    def watch_deliveries(self, in_flight: Callable[[], int]) -> None:
        """Export the channel delivery attempts in flight, read when scraped.

        Args:
            in_flight: Returns how many delivery attempts run now.
        """
        self._queues.deliveries_in_flight = in_flight

    def render(self) -> tuple[bytes, str]:
        """Export the registry in the Prometheus text format.

        Returns:
            The body and its ``Content-Type``.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
