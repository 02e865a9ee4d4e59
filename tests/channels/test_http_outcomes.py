"""The HTTP-outcome rules shared by the webhook, Web Push and robot channels (``_http``).

Table-driven: ``Retry-After`` parsing, the status map with and without "gone" statuses, and
``send`` against a real loopback server (a response, a refused and an unreachable target).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from herald.channels import _http
from herald.channels.base import Delivered, Failed, Outcome, Retry
from herald.channels.egress import EgressPolicy, EgressResponse

NOW = 1_700_000_000.0
DAY = 24 * 3600
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def _date(offset: float) -> str:
    return formatdate(NOW + offset, usegmt=True)


# -- retry_after ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "120"}, 120.0),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": str(DAY)}, float(DAY)),
        ({"retry-after": str(DAY + 1)}, None),  # longer than a day: ignored, not obeyed
        ({"retry-after": "9" * 11}, None),  # absurdly many digits
        ({"retry-after": ""}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "1.5"}, None),
        ({"retry-after": "١٢"}, None),  # non-ASCII digits are not delay-seconds
        ({"retry-after": _date(90)}, 90.0),
        ({"retry-after": _date(-90)}, 0.0),  # a date in the past: no wait
        ({"retry-after": _date(DAY)}, float(DAY)),
        ({"retry-after": _date(2 * DAY)}, None),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:20 -0000"}, None),  # no time zone
        ({"Retry-After": "5"}, None),  # names are lower-case, as egress gives them
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert _http.retry_after(headers, now=NOW) == expected


# -- is_retryable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (599, True),
        (200, False),
        (302, False),
        (400, False),
        (404, False),
        (410, False),
        (499, False),
        (600, False),
    ],
)
def test_is_retryable(status: int, expected: bool) -> None:
    assert _http.is_retryable(status) is expected


# -- status_outcome -------------------------------------------------------------------------

GONE_410 = Failed("receiver says the endpoint is gone (HTTP 410)", disable_endpoint=True)
REDIRECT = Failed("redirects are not followed")


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, Delivered("HTTP 200")),
        (201, {}, Delivered("HTTP 201")),
        (204, {"retry-after": "5"}, Delivered("HTTP 204")),
        (299, {}, Delivered("HTTP 299")),
        (410, {}, GONE_410),
        (301, {}, REDIRECT),
        (302, {"location": "https://169.254.169.254/"}, REDIRECT),
        (304, {}, REDIRECT),
        (399, {}, REDIRECT),
        (408, {}, Retry("receiver answered HTTP 408")),
        (429, {"retry-after": "7"}, Retry("receiver answered HTTP 429", after=7.0)),
        (500, {}, Retry("receiver answered HTTP 500")),
        (503, {"retry-after": "120"}, Retry("receiver answered HTTP 503", after=120.0)),
        (503, {"retry-after": _date(30)}, Retry("receiver answered HTTP 503", after=30.0)),
        (503, {"retry-after": "999999"}, Retry("receiver answered HTTP 503")),
        (503, {"retry-after": "soon"}, Retry("receiver answered HTTP 503")),
        (599, {}, Retry("receiver answered HTTP 599")),
        # Refusals are the caller's to word.
        (400, {}, None),
        (401, {}, None),
        (404, {}, None),
        (413, {}, None),
        (418, {"retry-after": "5"}, None),
        (100, {}, None),
        (199, {}, None),
        (600, {}, None),
    ],
)
def test_status_outcome_default(
    status: int, headers: dict[str, str], expected: Outcome | None
) -> None:
    outcome = _http.status_outcome(status, headers, peer="receiver", clock=lambda: NOW)
    assert outcome == expected


@pytest.mark.parametrize(
    ("gone", "status", "expected"),
    [
        (
            frozenset({404, 410}),
            404,
            Failed("push service says the subscription is gone (HTTP 404)", disable_endpoint=True),
        ),
        (
            frozenset({404, 410}),
            410,
            Failed("push service says the subscription is gone (HTTP 410)", disable_endpoint=True),
        ),
        (frozenset({404, 410}), 413, None),
        (frozenset({404, 410}), 200, Delivered("HTTP 200")),
        (frozenset({404, 410}), 503, Retry("push service answered HTTP 503")),
        (frozenset(), 410, None),  # the caller words "gone" itself (Slack)
        (frozenset(), 404, None),
        (frozenset(), 302, REDIRECT),
    ],
)
def test_status_outcome_gone(gone: frozenset[int], status: int, expected: Outcome | None) -> None:
    outcome = _http.status_outcome(
        status, {}, peer="push service", clock=lambda: NOW, gone=gone, what="subscription"
    )
    assert outcome == expected


@pytest.mark.parametrize(
    ("status", "reads"),
    [(200, 0), (302, 0), (400, 0), (410, 0), (408, 1), (429, 1), (503, 1)],
)
def test_status_outcome_reads_the_clock_only_to_retry(status: int, reads: int) -> None:
    calls: list[None] = []

    def clock() -> float:
        calls.append(None)
        return NOW

    _http.status_outcome(status, {"retry-after": _date(10)}, peer="receiver", clock=clock)
    assert len(calls) == reads


# -- send -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(302)
        self.send_header("location", "http://169.254.169.254/")
        self.send_header("retry-after", "5")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=QUERYSECRET"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_send_returns_the_response_redirects_included(server_url: str) -> None:
    sent = await _http.send(
        EgressPolicy(allow=LOOPBACK),
        server_url,
        content=b"{}",
        headers={"content-type": "application/json"},
        unreachable="receiver unreachable",
    )
    assert isinstance(sent, EgressResponse)
    assert sent.status == 302
    assert sent.headers["retry-after"] == "5"
    assert _http.status_outcome(
        sent.status, sent.headers, peer="receiver", clock=lambda: NOW
    ) == Failed("redirects are not followed")


@pytest.mark.parametrize(
    ("policy", "detail", "expected"),
    [
        # Loopback is not allow-listed: the guard refuses before connecting.
        (EgressPolicy(), True, Failed("destination refused by the SSRF guard")),
        (EgressPolicy(), False, Failed("destination refused by the SSRF guard")),
        # Allow-listed, but nothing listens: retried, the cause appended or not.
        (EgressPolicy(allow=LOOPBACK), True, Retry("receiver unreachable: connection failed")),
        (EgressPolicy(allow=LOOPBACK), False, Retry("receiver unreachable")),
    ],
)
async def test_send_maps_egress_errors(
    policy: EgressPolicy, detail: bool, expected: Outcome
) -> None:
    port = _closed_port()
    sent = await _http.send(
        policy,
        f"http://127.0.0.1:{port}/hook?token=QUERYSECRET",
        content=b"{}",
        headers={},
        unreachable="receiver unreachable",
        detail=detail,
    )
    assert sent == expected
    assert "QUERYSECRET" not in repr(sent)
    assert str(port) not in repr(sent)
