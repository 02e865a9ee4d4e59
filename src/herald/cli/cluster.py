"""``herald cluster status`` and ``herald cluster run``.

``status`` acts on the configured database and Redis directly, like the other
administrative commands. ``run`` starts several ``herald serve`` processes of one data
directory on consecutive ports against the configured PostgreSQL and Redis (``make
cluster``), and stops them all on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer

from herald import limits
from herald.cli.admin import JsonOpt
from herald.cli.output import console, emit, fail, stderr
from herald.config import Settings, load_settings
from herald.core.nodes import render_status
from herald.service.cluster import cluster_status

__all__ = ["cluster_cli", "run_workers"]

cluster_cli = typer.Typer(help="Cluster mode: node status, local multi-node runs.")

_HERALD = [sys.executable, "-m", "herald.cli"]
#: Seconds between the supervisor's looks at its children.
_POLL = 0.2
#: Where a node listening on every address is reached (and named in its certificate).
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - a mapping, not a bind


@cluster_cli.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Nodes seen (version, URL, last heartbeat, streams, leases, bus lag) and the queue.

    Without cluster mode (no HERALD_REDIS_URL) it says so and shows the local database.
    """
    settings = load_settings()
    doc = asyncio.run(cluster_status(settings))
    emit(doc, as_json=as_json, human=render_status(doc))


# -- herald cluster run -----------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    url: str
    log: Path | None  # None: the child writes to our terminal
    process: subprocess.Popen[bytes]


def _node_name(prefix: str, index: int) -> str:
    return prefix + (chr(ord("a") + index) if index < 26 else f"n{index}")


def _check_services(settings: Settings) -> None:
    if not settings.database_url.startswith(("postgresql", "postgres")):
        fail(
            "herald cluster run needs HERALD_DATABASE_URL=postgresql://… (the nodes share "
            "one PostgreSQL database)"
        )
    if settings.redis_url is None:
        fail("herald cluster run needs HERALD_REDIS_URL=redis://… (the nodes share one Redis)")


def _healthy(url: str, verify: ssl.SSLContext | bool) -> bool:
    try:
        return httpx.get(url + "/healthz", verify=verify, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (handlers restored after)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stopped_at_exit(children: list[_Child]) -> Iterator[None]:
    """Whatever happens in the block, the children started in it are stopped after it."""
    try:
        yield
    finally:
        _stop(children)


def _stop(children: list[_Child]) -> None:
    """SIGTERM every child, SIGKILL what is left after the grace period."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + limits.CLUSTER_RUN_STOP_WAIT
    for child in children:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stderr.print(f"node {child.name} did not stop in time: killed")
            child.process.kill()
            child.process.wait()


@cluster_cli.command("run")
def run(
    nodes: Annotated[
        int, typer.Option("--nodes", min=1, max=limits.CLUSTER_RUN_NODES_MAX, help="Node count.")
    ] = 3,
    base_port: Annotated[
        int, typer.Option("--base-port", min=1, max=65535, help="Port of the first node.")
    ] = 8443,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Prepended to the node ids (a, b, c, …).")
    ] = "",
) -> None:
    """Start NODES local nodes (ids a, b, c, …) on consecutive ports; Ctrl-C stops them all.

    They share the data directory (initialised first if missing), the configured
    PostgreSQL (HERALD_DATABASE_URL) and Redis (HERALD_REDIS_URL), and the first node's
    URL as their public URL. Each node logs to <data dir>/node-<id>.log.
    """
    settings = load_settings()
    _check_services(settings)
    if base_port + nodes - 1 > 65535:
        fail("--base-port + --nodes runs past port 65535")
    host = _LOOPBACK.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    public = settings.public_url or f"{settings.scheme}://{host}:{base_port}"
    env = {
        **os.environ,
        "HERALD_PUBLIC_URL": public,
        "HERALD_PORT": str(base_port),
        "HERALD_DATA_DIR": str(settings.data_dir),
    }
    if not (settings.data_dir / "tls").is_dir() and not settings.insecure_http:
        stderr.print(f"initialising {settings.data_dir} (herald init)")
        init = subprocess.run([*_HERALD, "init"], env=env, check=False)  # noqa: S603
        if init.returncode != 0:
            fail("herald init failed; see above")
    children: list[_Child] = []
    with _stop_on_signals() as stop, _stopped_at_exit(children):
        for index in range(nodes):
            name, port = _node_name(prefix, index), base_port + index
            log = settings.data_dir / f"node-{name}.log"
            child_env = {**env, "HERALD_PORT": str(port), "HERALD_NODE_ID": name}
            with log.open("ab") as out:
                process = subprocess.Popen(  # noqa: S603 - our own CLI
                    [*_HERALD, "serve"],
                    env=child_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
                )
            children.append(_Child(name, f"{settings.scheme}://{host}:{port}", log, process))
        _wait_healthy(children, settings, stop)
        for child in children:
            console.print(
                f"node {child.name}: {child.url}  (pid {child.process.pid}, log {child.log})"
            )
        console.print(f"public URL: {public}")
        console.print(f"Ctrl-C stops all {nodes} node(s).")
        _supervise(children, stop)
    console.print("all nodes stopped")


def run_workers(settings: Settings) -> None:
    """``herald serve --workers N``: N processes on one port, supervised until a signal.

    Each worker is a node of its own (``<node>-w<i>``, sharing Redis and the database like
    cluster nodes) bound with SO_REUSEPORT, so the kernel spreads connections over them.
    When one worker exits on its own the others are stopped and the command fails, so a
    process manager restarts the whole server rather than run it short-handed.
    """
    base = settings.node_id or f"{socket.gethostname()}:{settings.port}"
    env = {
        **os.environ,
        "HERALD_DATA_DIR": str(settings.data_dir),
        "HERALD_HOST": settings.host,
        "HERALD_PORT": str(settings.port),
        "HERALD_INSECURE_HTTP": "true" if settings.insecure_http else "false",
        "HERALD_WORKERS": "1",
        "HERALD_REUSE_PORT": "true",
    }
    host = _LOOPBACK.get(settings.host, settings.host)
    url = f"{settings.scheme}://{f'[{host}]' if ':' in host else host}:{settings.port}"
    children: list[_Child] = []
    with _stop_on_signals() as stop, _stopped_at_exit(children):
        for index in range(settings.workers):
            name = f"{base}-w{index}"
            process = subprocess.Popen(  # noqa: S603 - our own CLI
                [*_HERALD, "serve"],
                env={**env, "HERALD_NODE_ID": name},
                start_new_session=True,  # signals reach the supervisor, which stops them
            )
            children.append(_Child(name, url, None, process))
        _wait_healthy(children, settings, stop)
        stderr.print(f"{settings.workers} workers serving {url}; Ctrl-C stops them")
        while not stop.wait(_POLL):
            for child in children:
                code = child.process.poll()
                if code is not None:
                    fail(f"worker {child.name} exited (status {code}); stopping the others")


def _wait_healthy(children: list[_Child], settings: Settings, stop: threading.Event) -> None:
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(settings.ca_file))
        if not settings.insecure_http
        else False
    )
    waiting = list(children)
    deadline = time.monotonic() + limits.CLUSTER_RUN_START_WAIT
    while waiting:
        if stop.is_set():
            raise typer.Exit(0)
        for child in list(waiting):
            if child.process.poll() is not None:
                where = f"; see {child.log}" if child.log is not None else ""
                fail(f"node {child.name} exited during start-up{where}")
            if _healthy(child.url, verify):
                waiting.remove(child)
        if time.monotonic() > deadline:
            names = ", ".join(c.name for c in waiting)
            fail(f"node(s) {names} not healthy after {limits.CLUSTER_RUN_START_WAIT:g} s")
        stop.wait(_POLL)


def _supervise(children: list[_Child], stop: threading.Event) -> None:
    """Until a signal (or every node has exited): report nodes that exit on their own."""
    reported: set[str] = set()
    while not stop.wait(_POLL):
        for child in children:
            code = child.process.poll()
            if code is not None and child.name not in reported:
                reported.add(child.name)
                stderr.print(f"node {child.name} exited (status {code}); see {child.log}")
        if len(reported) == len(children):
            fail("every node has exited")
