from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from herald.limits import EVENT_LOOP_LAG_INTERVAL, EVENT_LOOP_LAG_WINDOW
from herald.observability import metrics
from herald.observability.metrics import (
    FANOUT_BUCKETS,
    HTTP_BUCKETS,
    LOOP_LAG_BUCKETS,
    UNMATCHED_ROUTE,
    Metrics,
    safe_route,
)


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = m.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def label_values(m: Metrics) -> set[str]:
    return {value for (_, labels) in samples(m) for _, value in labels}


def test_exports() -> None:
    assert sorted(metrics.__all__) == [
        "FANOUT_BUCKETS",
        "HTTP_BUCKETS",
        "LOOP_LAG_BUCKETS",
        "Metrics",
        "NAMESPACE",
        "UNMATCHED_ROUTE",
        "safe_route",
    ]
    for name in metrics.__all__:
        assert hasattr(metrics, name)


def test_every_metric_is_rendered() -> None:
    m = Metrics()
    m.http_requests_total.labels(method="GET", route="/healthz", status="200").inc()
    m.http_request_duration_seconds.labels(route="/healthz").observe(0.001)
    m.messages_published_total.labels(outcome="accepted").inc()
    m.deliveries_total.labels(channel="webhook", state="delivered").inc()
    m.active_streams.labels(transport="websocket").inc()
    m.stream_disconnects_total.labels(reason="client_closed").inc()
    m.publish_to_deliver_seconds.observe(0.0002)
    m.tokens_issued_total.labels(kind="access").inc()
    m.auth_failures_total.labels(reason="invalid_token").inc()
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in (
        "herald_http_requests_total",
        "herald_http_request_duration_seconds_bucket",
        "herald_messages_published_total",
        "herald_deliveries_total",
        "herald_active_streams",
        "herald_stream_disconnects_total",
        "herald_publish_to_deliver_seconds_bucket",
        "herald_tokens_issued_total",
        "herald_auth_failures_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text or f"{name}{{" in text, name
    got = samples(m)
    key = (
        "herald_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    assert got[key] == 1.0
    assert got[("herald_active_streams", (("transport", "websocket"),))] == 1.0
    assert got[("herald_publish_to_deliver_seconds_count", ())] == 1.0


def test_buckets() -> None:
    assert HTTP_BUCKETS[0] == 0.0005
    assert HTTP_BUCKETS[-1] == 5.0
    assert FANOUT_BUCKETS[0] == 0.0001
    assert FANOUT_BUCKETS[-1] == 1.0
    assert list(HTTP_BUCKETS) == sorted(HTTP_BUCKETS)
    assert list(FANOUT_BUCKETS) == sorted(FANOUT_BUCKETS)
    m = Metrics()
    m.observe_request("GET", "/healthz", 200, 0.0003)
    m.observe_fanout(0.00005)
    got = samples(m)
    bucket = "herald_http_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.0005"), ("route", "/healthz")))] == 1.0
    assert got[(bucket, (("le", "5.0"), ("route", "/healthz")))] == 1.0
    assert got[("herald_publish_to_deliver_seconds_bucket", (("le", "0.0001"),))] == 1.0


def test_closed_vocabularies_start_at_zero() -> None:
    got = samples(Metrics())
    for outcome in ("accepted", "refused"):
        assert got[("herald_messages_published_total", (("outcome", outcome),))] == 0.0
    for transport in ("websocket", "sse"):
        assert got[("herald_active_streams", (("transport", transport),))] == 0.0
    for kind in ("access", "subscriber"):
        assert got[("herald_tokens_issued_total", (("kind", kind),))] == 0.0


def test_instances_are_independent() -> None:
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    assert a.registry is not REGISTRY
    assert isinstance(a.registry, CollectorRegistry)
    a.record_publish("accepted", 3)
    a.stream_opened("sse")
    assert samples(a)[("herald_messages_published_total", (("outcome", "accepted"),))] == 3.0
    assert samples(b)[("herald_messages_published_total", (("outcome", "accepted"),))] == 0.0
    assert samples(b)[("herald_active_streams", (("transport", "sse"),))] == 0.0
    # Nothing leaked into the process-wide registry.
    default = REGISTRY.get_sample_value("herald_messages_published_total", {"outcome": "accepted"})
    assert default is None


def test_helpers_count() -> None:
    m = Metrics()
    m.observe_request("post", "/v1/messages", 202, 0.01)
    m.record_publish("refused")
    m.record_delivery("webhook", "failed")
    m.stream_opened("websocket")
    m.stream_opened("websocket")
    m.stream_closed("websocket", "heartbeat_timeout")
    m.record_token("subscriber")
    m.record_auth_failure("expired")
    got = samples(m)
    assert (
        got[
            (
                "herald_http_requests_total",
                (("method", "POST"), ("route", "/v1/messages"), ("status", "202")),
            )
        ]
        == 1.0
    )
    assert got[("herald_messages_published_total", (("outcome", "refused"),))] == 1.0
    assert got[("herald_deliveries_total", (("channel", "webhook"), ("state", "failed")))] == 1.0
    assert got[("herald_active_streams", (("transport", "websocket"),))] == 1.0
    assert got[("herald_stream_disconnects_total", (("reason", "heartbeat_timeout"),))] == 1.0
    assert got[("herald_tokens_issued_total", (("kind", "subscriber"),))] == 1.0
    assert got[("herald_auth_failures_total", (("reason", "expired"),))] == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.record_publish("maybe"),
        lambda m: m.stream_opened("longpoll"),
        lambda m: m.stream_closed("grpc", "x"),
        lambda m: m.record_token("refresh"),
    ],
)
def test_closed_vocabularies_reject_unknown_values(call: object) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        call(Metrics())  # type: ignore[operator]


# --- no user content in label values -----------------------------------------------------

USER_CONTENT = (
    "Your parcel has shipped",
    "alice@example.com",
    "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
    "Bearer abc",
    "01HZX3K5V7Q8R9S0T1U2V3W4X5",
    "9f1c2d3e-4b5a-6789-abcd-ef0123456789",
)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("/v1/topics/{topic}", "/v1/topics/{topic}"),
        ("/v1/messages:batch", "/v1/messages:batch"),
        ("/.well-known/jwks.json", "/.well-known/jwks.json"),
        ("/metrics", "/metrics"),
        (None, UNMATCHED_ROUTE),
        ("", UNMATCHED_ROUTE),
        ("v1/topics", UNMATCHED_ROUTE),
        ("/v1/messages/12345", UNMATCHED_ROUTE),
        ("/v1/messages/9f1c2d3e-4b5a-6789-abcd-ef0123456789", UNMATCHED_ROUTE),
        ("/v1/messages/msg_01HZX3K5V7Q8R9S0T1U2", UNMATCHED_ROUTE),
        ("/v1/stream?ticket=abc", UNMATCHED_ROUTE),
        ("/v1/users/alice@example.com", UNMATCHED_ROUTE),
        ("/v1/topics/a%20b", UNMATCHED_ROUTE),
        ("/v1/topics/a b", UNMATCHED_ROUTE),
        ("/v1/topics/caf\u00e9", UNMATCHED_ROUTE),
        ("/v1/t/eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln", UNMATCHED_ROUTE),
        ("/" + "a" * 200, UNMATCHED_ROUTE),
    ],
)
def test_safe_route(route: str | None, expected: str) -> None:
    assert safe_route(route) == expected


def test_no_user_content_in_label_values() -> None:
    m = Metrics()
    for content in USER_CONTENT:
        m.observe_request(content, f"/v1/messages/{content}", 200, 0.01)
        m.observe_request("GET", content, 999, 0.01)
        m.record_delivery(content, content)
        m.stream_closed("sse", content)
        m.record_auth_failure(content)
    values = label_values(m)
    body, _ = m.render()
    for content in USER_CONTENT:
        assert content not in values
        assert content.encode() not in body
    assert "OTHER" in values
    assert "other" in values
    assert UNMATCHED_ROUTE in values


@given(st.text(min_size=1))
def test_free_words_are_bounded(value: str) -> None:
    m = Metrics()
    m.record_auth_failure(value)
    m.record_delivery(value, value)
    m.observe_request(value, value, 200, 0.0)
    for label in label_values(m) - {"/", "200", "+Inf"}:
        # Either a short code-like word, a route template shape, or a fixed fallback.
        assert label in {"other", "OTHER", UNMATCHED_ROUTE} or (
            len(label) <= 128 and label.isascii() and " " not in label
        )
    [reason] = [
        dict(labels)["reason"]
        for (name, labels) in samples(m)
        if name == "herald_auth_failures_total"
    ]
    assert reason == "other" or (reason == value and len(value) <= 32 and value.isascii())


# -- event-loop lag and queue depths ----------------------------------------------------------
def test_loop_lag_histogram_decides_100_ms_exactly() -> None:
    assert list(LOOP_LAG_BUCKETS) == sorted(LOOP_LAG_BUCKETS)
    assert 0.1 in LOOP_LAG_BUCKETS  # a bound: "p99 > 100 ms" needs no interpolation
    m = Metrics()
    m.observe_loop_lag(0.1)
    m.observe_loop_lag(0.1001)
    got = samples(m)
    assert got[("herald_event_loop_lag_seconds_bucket", (("le", "0.1"),))] == 1.0
    assert got[("herald_event_loop_lag_seconds_bucket", (("le", "0.25"),))] == 2.0
    assert got[("herald_event_loop_lag_seconds_count", ())] == 2.0


def test_loop_lag_max_covers_the_recent_window_only() -> None:
    now = [1000.0]
    m = Metrics(clock=lambda: now[0])
    key = ("herald_event_loop_lag_max_seconds", ())
    assert samples(m)[key] == 0.0
    m.observe_loop_lag(0.2)
    now[0] += 5.0
    m.observe_loop_lag(0.01)
    assert samples(m)[key] == 0.2
    now[0] = 1000.0 + EVENT_LOOP_LAG_WINDOW + 1.0  # the 0.2 s sample has left the window
    assert samples(m)[key] == 0.01
    now[0] = 1005.0 + EVENT_LOOP_LAG_WINDOW + 1.0
    assert samples(m)[key] == 0.0


def test_loop_lag_memory_is_bounded() -> None:
    m = Metrics(clock=lambda: 0.0)  # every sample "now": all inside the window
    for i in range(10_000):
        m.observe_loop_lag(i / 10_000)
    assert len(m._recent_lags) <= EVENT_LOOP_LAG_WINDOW / EVENT_LOOP_LAG_INTERVAL + 1
    assert samples(m)[("herald_event_loop_lag_max_seconds", ())] == 0.9999


def test_queue_depths_are_read_when_scraped_only() -> None:
    m = Metrics()
    got = samples(m)
    for name in ("stream_queued_frames", "stream_queue_depth_max", "deliveries_in_flight"):
        assert got[(f"herald_{name}", ())] == 0.0  # nothing watched yet
    calls: list[str] = []
    depths = [(7, 5)]

    def stream_queues() -> tuple[int, int]:
        calls.append("streams")
        return depths[0]

    def in_flight() -> int:
        calls.append("deliveries")
        return 3

    m.watch_stream_queues(stream_queues)
    m.watch_deliveries(in_flight)
    m.observe_request("GET", "/healthz", 200, 0.001)
    assert calls == []  # watching and the request path never call them
    got = samples(m)
    assert calls == ["streams", "deliveries"]  # once each per scrape
    assert got[("herald_stream_queued_frames", ())] == 7.0
    assert got[("herald_stream_queue_depth_max", ())] == 5.0
    assert got[("herald_deliveries_in_flight", ())] == 3.0
    depths[0] = (0, 0)
    assert samples(m)[("herald_stream_queued_frames", ())] == 0.0
