"""Assembles the ASGI application: routes, middleware, exception handlers, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald import __version__, limits
from herald.channels.registry import build_registry
from herald.config import Settings
from herald.errors import (
    DecryptionFailed,
    HeraldError,
    IntegrityConflict,
    ServiceUnavailable,
    StorageError,
)
from herald.observability.logging import get_logger
from herald.observability.loop import LoopLagMonitor
from herald.server import api
from herald.server.admin_api import admin_routes
from herald.server.audit_api import audit_routes
from herald.server.console import console_routes
from herald.server.middleware import MetricsMiddleware, SecurityHeadersMiddleware
from herald.server.openapi import openapi_json
from herald.server.recipients import recipient_routes
from herald.server.responses import EXCEPTION_HANDLERS, json_response, problem_response
from herald.server.streams import stream_routes
from herald.server.templates import template_routes
from herald.service import audit, cluster, identity, keys
from herald.service.delivery import Dispatcher, RetryPolicy
from herald.service.plans import Planner
from herald.service.runtime import Runtime, utcnow

__all__ = ["create_app"]

_log = get_logger("herald.server")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers; no dependency is checked."""
    return json_response({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    """Readiness: database reachable, migrations current, keys loaded, security posture."""
    rt: Runtime = request.app.state.runtime
    checks: dict[str, object] = {}
    ready = True
    try:
        await rt.store.ping()
        current, head = await rt.store.migration_status()
        checks["database"] = "ok"
        checks["migrations"] = {"current": current, "head": head}
        ready = current == head
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as not ready
        checks["database"] = f"unavailable ({type(exc).__name__})"
        ready = False
    checks["token_keys"] = "ok" if rt.tokens is not None else "missing (run herald init)"
    ready = ready and rt.tokens is not None
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "security": rt.settings.security_summary(),
        "streams": len(rt.hub),
    }
    if ready:
        return json_response(body)
    # Not ready is an error like any other: problem+json, with the checks as extensions.
    error = ServiceUnavailable("the node is not ready; see checks")
    error.extra.update(body)
    return problem_response(error, request.url.path)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    rt: Runtime = request.app.state.runtime
    body, content_type = rt.metrics.render()
    return Response(body, headers={"Content-Type": content_type})


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document."""
    rt: Runtime = request.app.state.runtime
    return Response(openapi_json(rt.settings.base_url), media_type="application/json")


async def _key_reloader(rt: Runtime) -> None:
    """Re-read the token-signing keys now and then: rotations made elsewhere take effect.

    A rotated key is pre-published for at least two intervals before it signs, so every
    node verifies its tokens before any node issues one.
    """
    while True:
        await asyncio.sleep(rt.settings.key_reload_interval)
        try:
            await rt.reload_token_keys()
        except (StorageError, DecryptionFailed):
            _log.warning("token keys not reloaded: database or key provider unavailable")


async def _checkpointer(rt: Runtime) -> None:
    """Sign a checkpoint every N entries or T seconds (DESIGN §6), whichever comes first."""
    settings = rt.settings
    last_time = time.monotonic()
    while True:
        await asyncio.sleep(min(1.0, settings.audit_checkpoint_seconds))
        if rt.audit is None:
            continue
        try:
            size = await rt.store.audit_size()
            latest = await rt.store.latest_checkpoint()
            signed = latest.size if latest is not None else 0
            due = size - signed >= settings.audit_checkpoint_entries or (
                size > signed and time.monotonic() - last_time >= settings.audit_checkpoint_seconds
            )
            if due:
                await rt.audit.checkpoint(utcnow())
                last_time = time.monotonic()
        except (StorageError, IntegrityConflict):
            # Unavailable, or another node signed this size first: try again next tick.
            _log.warning("checkpoint skipped")
        except HeraldError as exc:
            _log.error("checkpoint refused", error=type(exc).__name__)


async def _maintenance(rt: Runtime) -> None:
    """Hourly housekeeping: forget expired idempotency records and notification-log rows.

    Notification-log rows are kept as long as a frequency cap or de-duplication window
    can reach back (a week).
    """
    while True:
        await asyncio.sleep(3600)
        try:
            removed = await rt.store.purge_idempotency(
                utcnow() - timedelta(seconds=limits.IDEMPOTENCY_TTL)
            )
            forgotten = await rt.store.purge_notifications(
                utcnow() - timedelta(seconds=limits.NOTIFY_LOG_RETENTION)
            )
            expired = await rt.store.purge_revocations(utcnow())
            _log.info(
                "housekeeping done",
                idempotency=removed,
                notifications=forgotten,
                revocations=expired,
            )
        except StorageError:
            _log.warning("housekeeping skipped: database unavailable")


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    """Build the app; opens its own :class:`Runtime` at start-up unless one is given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = runtime or await Runtime.open(settings)
        app.state.runtime = rt
        for warning in settings.security_warnings():
            _log.warning("insecure setting", setting=warning)
            # DESIGN §6: configuration that weakens security is an audit event.
            with contextlib.suppress(StorageError):
                await audit.record(
                    rt,
                    tenant=None,
                    actor="operator",
                    action="config.weakened",
                    obj="node",
                    setting=warning.split(":", 1)[0].split(" ", 1)[0],
                )
        _log.info("herald ready", url=settings.base_url, version=__version__)
        await identity.ensure_signing_keys(rt)
        rt.channels = build_registry(settings, vapid=await rt.vapid_key())
        # One lease owner per process, named after the node (herald cluster status).
        owner, incarnation = cluster.new_lease_owner(settings)
        presence = (
            cluster.NodePresence.for_runtime(rt, owner, incarnation)
            if settings.cluster_mode
            else None
        )
        rt.dispatcher = dispatcher = Dispatcher(
            rt,
            rt.channels,
            policy=RetryPolicy(
                max_attempts=settings.delivery_max_attempts,
                base=settings.delivery_retry_base,
                cap=settings.delivery_retry_cap,
            ),
            lease=settings.delivery_lease,
            owner=owner,
        )
        rt.metrics.watch_deliveries(lambda: dispatcher.in_flight)
        rt.planner = Planner(rt, lease=settings.delivery_lease, owner=owner)
        await rt.bus.start()
        background = [
            asyncio.create_task(work)
            for work in (
                rt.dispatcher.run(),
                rt.planner.run(),
                _maintenance(rt),
                rt.hub.run_heartbeats(settings.heartbeat_interval),
                _checkpointer(rt),
                _key_reloader(rt),
                LoopLagMonitor(rt.metrics.observe_loop_lag).run(),
                *([presence.run()] if presence is not None else []),
            )
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await keys.stop_reencryptions()
            # Graceful stop: no more claims (cancelled above), leases given back at once so
            # other nodes take the work over now, then the heartbeat goes.
            await rt.dispatcher.stop()
            await rt.planner.stop()
            if presence is not None:
                await presence.stop()
            if runtime is None:
                await rt.close()
            else:
                rt.hub.shutdown()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *api.routes(),
        *audit_routes(),
        *admin_routes(),
        *recipient_routes(),
        *template_routes(),
        *stream_routes(),
        *console_routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        middleware=[
            Middleware(
                SecurityHeadersMiddleware,
                hsts_max_age=settings.hsts_max_age,
                tls=not settings.insecure_http,
            ),
            Middleware(MetricsMiddleware),
        ],
    )
    if runtime is not None:
        app.state.runtime = runtime
    return app
