"""Run the ASGI app with uvicorn, terminating TLS with Herald's hardened context."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl

import uvicorn
from starlette.applications import Starlette

from herald import limits
from herald.config import Settings
from herald.crypto.tls import server_ssl_context
from herald.errors import ConfigError
from herald.observability.logging import configure_logging, get_logger
from herald.server.app import create_app
from herald.server.tls_extension import TlsExtensionProtocol
from herald.server.ws_protocol import HeraldWebSocketProtocol

__all__ = ["serve", "tune_gc"]


def tune_gc() -> None:
    """Collect the young generation less often (see :data:`~herald.limits.GC_YOUNG_THRESHOLD`).

    Only the first threshold changes; the older generations keep their ratios. Called once
    when the server starts; library and CLI use keep CPython's defaults.
    """
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(limits.GC_YOUNG_THRESHOLD, middle, oldest)


def serve(settings: Settings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM shut down gracefully)."""
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    log = get_logger("herald.server")
    context: ssl.SSLContext | None = None
    if settings.insecure_http and settings.tls_client_ca_file is not None:
        # Fail closed: without our TLS there is no client certificate to bind tokens to.
        raise ConfigError(
            "HERALD_TLS_CLIENT_CA_FILE needs Herald's own TLS; it cannot be combined with "
            "HERALD_INSECURE_HTTP (--insecure-http)"
        )
    if not settings.insecure_http:
        # Loaded before the listener starts so a bad certificate fails fast and clearly.
        context = server_ssl_context(
            settings.cert_file, settings.key_file, client_ca_file=settings.tls_client_ca_file
        )
        if settings.tls_client_ca_file is not None:
            log.info(
                "client certificates requested (optional); tokens are bound to them",
                client_ca_file=str(settings.tls_client_ca_file),
            )
    else:
        log.warning(
            "TLS is OFF (--insecure-http): run only behind a TLS-terminating proxy",
            public_url=settings.base_url,
        )
    tls_context = context

    def ssl_factory(config: uvicorn.Config, default: object) -> ssl.SSLContext:
        assert tls_context is not None  # noqa: S101 - only installed when TLS is on
        return tls_context

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, plus the ASGI TLS extension (client certificate for RFC 8705 binding).
        http=TlsExtensionProtocol if context is not None else "httptools",
        # uvicorn's websockets-sansio, plus the raw writer for pre-framed fan-out frames.
        ws=HeraldWebSocketProtocol,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws_max_size=limits.STREAM_FRAME_MAX,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        ssl_context_factory=ssl_factory if context is not None else None,
    )
    server = _DrainingServer(config, app)
    if settings.reuse_port:
        # One of several workers on this port: each binds its own socket and the kernel
        # spreads new connections over them (SO_REUSEPORT).
        server.run(sockets=[_reuse_port_socket(settings.host, settings.port)])
    else:
        server.run()


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` shared with the other workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(limits.LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


class _DrainingServer(uvicorn.Server):
    """uvicorn, but streams close with 1001 first ("going away": reconnect elsewhere).

    uvicorn's own shutdown would close WebSockets with 1012 before the app's lifespan
    shutdown runs; SSE responses get to finish cleanly instead of being cut.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            runtime.hub.shutdown()
            # Bounded: the handlers close their sockets as soon as they see the flag.
            for _ in range(20):
                if not len(runtime.hub):
                    break
                await asyncio.sleep(0.05)
        await super().shutdown(sockets)
