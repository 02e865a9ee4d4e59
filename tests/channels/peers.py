"""What the channel tests share: the loopback allow-list and an HTTPS test server."""

from __future__ import annotations

import ipaddress
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LOOPBACK", "TlsServer"]

#: The egress allow-list of the channel tests: their peers listen on 127.0.0.1.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


class TlsServer(ThreadingHTTPServer):
    """An HTTPS server on 127.0.0.1 (any free port) whose handlers see ``receiver``.

    ``ctx`` None serves plain HTTP (for targets that may be reached without TLS).
    """

    daemon_threads = False  # server_close() joins the handler threads

    def __init__(
        self, ctx: ssl.SSLContext | None, receiver: Any, handler: type[BaseHTTPRequestHandler]
    ) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.ctx = ctx
        self.receiver = receiver

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS per connection, in the handler thread: a bad client cannot stall accept().
        request.settimeout(10)
        if self.ctx is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        with self.ctx.wrap_socket(request, server_side=True) as tls:
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (timeouts, refused handshakes) are part of the tests
