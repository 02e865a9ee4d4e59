"""Rate limits per app and per subscriber, and the token endpoint's lockout (issue 7).

Every authenticated app request spends one token from the app's bucket
(``HERALD_RATE_LIMIT_APP_RATE`` per second, ``HERALD_RATE_LIMIT_APP_BURST``); stream
connections, stream tickets and device registrations spend from the subscriber's
(tenant + recipient) bucket. A refusal is 429 ``rate-limited`` with ``Retry-After`` and
the IETF ``RateLimit``/``RateLimit-Policy`` fields; admitted requests carry the fields too.

The token endpoint counts failed client authentications per client id and per source
address; past ``HERALD_LOCKOUT_THRESHOLD`` failures of a client id (or
``HERALD_LOCKOUT_ADDRESS_THRESHOLD`` from an address) it is locked for an exponentially
growing time (:mod:`herald.state.lockout`), checked before the credentials are — so a
locked key costs no hash comparison and writes no audit entry.

Both use Redis when ``HERALD_REDIS_URL`` is set (limits hold across nodes), else memory.
"""

from __future__ import annotations

import math

from herald.crypto.tokens import SubscriberClaims
from herald.errors import RateLimited
from herald.service.runtime import Runtime
from herald.state.ratelimit import Decision, headers

__all__ = ["admit_app", "admit_subscriber", "check_lockout", "record_login"]


def _refused(decision: Decision, who: str) -> RateLimited:
    return RateLimited(f"too many requests for this {who}; slow down", headers=headers(decision))


async def admit_app(rt: Runtime, client_id: str) -> dict[str, str]:
    """Spend one of the app's tokens; the RateLimit fields to send, or 429."""
    decision = await rt.limiter.hit(client_id, rt.buckets.app)
    if not decision.allowed:
        rt.metrics.record_auth_failure("rate_limited")
        raise _refused(decision, "app")
    return headers(decision)


async def admit_subscriber(rt: Runtime, claims: SubscriberClaims) -> dict[str, str]:
    """Spend one of the subscriber's (tenant, recipient) tokens, or 429."""
    decision = await rt.limiter.hit(f"{claims.tenant_id}/{claims.recipient}", rt.buckets.subscriber)
    if not decision.allowed:
        rt.metrics.record_auth_failure("rate_limited")
        raise _refused(decision, "subscriber")
    return headers(decision)


async def check_lockout(rt: Runtime, client_id: str, address: str | None) -> None:
    """429 while the client id or the address is locked out (before any credential check)."""
    wait = await rt.lockouts.client.check(client_id)
    if address:
        wait = max(wait, await rt.lockouts.address.check(address))
    if wait > 0:
        rt.metrics.record_auth_failure("locked_out")
        raise RateLimited(
            "too many failed client authentications; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


async def record_login(rt: Runtime, client_id: str, address: str | None, *, ok: bool) -> None:
    """Count a failed client authentication, or clear the client id's count on success.

    A success clears the client id only: an address that failed for many client ids stays
    counted (one client's good secret does not unlock the guesses of the others).
    """
    if ok:
        await rt.lockouts.client.succeeded(client_id)
        return
    await rt.lockouts.client.failed(client_id)
    if address:
        await rt.lockouts.address.failed(address)
