"""What an HTTP answer means for a delivery: shared by the channels that POST over egress.

One place decides, for the webhook, Web Push and robot channels alike:

- :func:`retry_after`: the delay a ``Retry-After`` header asks for (RFC 9110 §10.2.3), as
  seconds or an HTTP-date, honoured up to :data:`RETRY_AFTER_MAX`;
- :func:`status_outcome`: 2xx → :class:`~herald.channels.base.Delivered`; a "gone" status
  (410 by default) → ``Failed(disable_endpoint=True)``; 3xx → ``Failed`` (redirects are never
  followed); 408, 429 and 5xx → :class:`~herald.channels.base.Retry` honouring
  ``Retry-After``; any other status → None, a refusal each channel words itself;
- :func:`send`: one ``POST`` through the SSRF-guarded :mod:`~herald.channels.egress` client,
  with a refused destination → ``Failed`` and an unreachable one → ``Retry``.

Reasons never carry a URL, a header value or a body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Final

from herald.channels import egress
from herald.channels.base import Delivered, Failed, Outcome, Retry

__all__ = [
    "GONE",
    "REDIRECT_REASON",
    "REFUSED_REASON",
    "RETRY_AFTER_MAX",
    "is_retryable",
    "retry_after",
    "send",
    "status_outcome",
]

#: Longest ``Retry-After`` honoured (seconds); anything longer is ignored, not obeyed.
RETRY_AFTER_MAX: Final = 24 * 3600
#: The reason of a delivery whose destination the egress guard refuses.
REFUSED_REASON: Final = "destination refused by the SSRF guard"
#: The reason of a delivery answered with a redirect (a redirect could point anywhere).
REDIRECT_REASON: Final = "redirects are not followed"
#: Statuses that mean "stop sending here" unless a channel says otherwise (410 Gone).
GONE: Final = frozenset({410})

#: More digits than this is far beyond a day (and keeps ``float()`` cheap).
_SECONDS_DIGITS_MAX: Final = 10


def retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the ``retry-after`` header asks to wait, or None when absent or not sane.

    Args:
        headers: Response headers with lower-case names (as :class:`egress.EgressResponse`
            has them).
        now: Unix time, to turn an HTTP-date into seconds from now.

    Returns:
        Delay-seconds as given, or an HTTP-date's distance from ``now`` (0 when it is past);
        None when the header is missing, malformed, a date without a time zone, or longer
        than :data:`RETRY_AFTER_MAX`.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        if len(value) > _SECONDS_DIGITS_MAX:
            return None
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):  # e.g. a 20-digit minute
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, when.timestamp() - now)
    return seconds if 0 <= seconds <= RETRY_AFTER_MAX else None


def is_retryable(status: int) -> bool:
    """True for statuses worth another attempt later: 408, 429 and 5xx."""
    return status in {408, 429} or 500 <= status < 600


def status_outcome(
    status: int,
    headers: Mapping[str, str],
    *,
    peer: str,
    clock: Callable[[], float],
    gone: frozenset[int] = GONE,
    what: str = "endpoint",
) -> Outcome | None:
    """The outcome every HTTP channel gives ``status``, or None for a refusal to word.

    Args:
        status: The HTTP status of the answer.
        headers: Its headers, lower-case names (only ``retry-after`` is read).
        peer: Who answered, as reasons name it: ``"receiver"``, ``"push service"``, ``"Slack"``.
        clock: Unix time source; read only when the outcome is a :class:`Retry`.
        gone: Statuses meaning the endpoint no longer exists: ``Failed`` with
            ``disable_endpoint``. Pass an empty set to word them yourself.
        what: What is gone, as the reason names it (``"endpoint"``, ``"subscription"``).

    Returns:
        ``Delivered("HTTP <status>")`` for 2xx;
        ``Failed("<peer> says the <what> is gone (HTTP <status>)", disable_endpoint=True)``
        for a ``gone`` status; ``Failed(REDIRECT_REASON)`` for 3xx;
        ``Retry("<peer> answered HTTP <status>", after=<Retry-After>)`` for 408, 429 and
        5xx; None for any other status (the caller's refusal, with its special cases).
    """
    if 200 <= status < 300:
        return Delivered(f"HTTP {status}")
    if status in gone:
        return Failed(f"{peer} says the {what} is gone (HTTP {status})", disable_endpoint=True)
    if 300 <= status < 400:
        return Failed(REDIRECT_REASON)
    if is_retryable(status):
        return Retry(f"{peer} answered HTTP {status}", after=retry_after(headers, now=clock()))
    return None


async def send(
    policy: egress.EgressPolicy,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    unreachable: str,
    detail: bool = True,
) -> egress.EgressResponse | Outcome:
    """``POST`` through the egress guard: the response, or the outcome when none came back.

    Args:
        policy: The egress policy the destination is checked against.
        url: Where to ``POST``.
        content: The request body.
        headers: The request headers.
        unreachable: The reason of the ``Retry`` when the destination cannot be reached,
            e.g. ``"receiver unreachable"``.
        detail: Append the egress client's short, URL-free cause (``": connect timed out"``).

    Returns:
        The :class:`egress.EgressResponse` (3xx included: redirects are never followed);
        ``Failed(REFUSED_REASON)`` when the guard refuses the destination; ``Retry`` when
        DNS, the connection, TLS or the clock fails.
    """
    try:
        return await egress.post(url, content=content, headers=headers, policy=policy)
    except egress.EgressRefused:
        return Failed(REFUSED_REASON)
    except egress.EgressUnavailable as exc:  # its reason names no URL, by contract
        return Retry(f"{unreachable}: {exc.reason}" if detail else unreachable)
