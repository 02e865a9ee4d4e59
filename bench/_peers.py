"""The peers of ``bench.fanout``: a throw-away TLS CA, Mosquitto and python-socketio servers.

Everything listens on 127.0.0.1 only, with a certificate for ``127.0.0.1`` from one
throw-away ``trustme`` CA (Herald gets the same certificate), so every system does the same
TLS work. Each server runs in its own session (Ctrl-C reaches the benchmark, which stops it).

``python -m bench._peers socketio-server PORT CERT KEY REDIS_URL CHANNEL`` is the
python-socketio server process: an ``AsyncServer`` with ``AsyncRedisManager`` (so publishes
come from other processes through Redis, as in production) under uvicorn with the settings
``herald serve`` uses (uvloop, httptools, ``websockets-sansio``). Every client that connects
to the default namespace joins the room ``bench``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import HOST, stop_server

MOSQUITTO = "/usr/sbin/mosquitto"
ROOM = "bench"
EVENT = "msg"


@dataclass
class Tls:
    """PEM files of the throw-away CA and of a server certificate for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> Tls:
    """A throw-away CA (``trustme``) and a certificate for ``127.0.0.1`` under ``directory``."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(HOST)
    tls = Tls(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    ca.cert_pem.write_to_path(str(tls.ca))
    leaf.private_key_pem.write_to_path(str(tls.key))
    leaf.cert_chain_pems[0].write_to_path(str(tls.cert))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(tls.cert), append=True)
    return tls


def wait_tls_port(
    process: subprocess.Popen[bytes], port: int, ca: Path, give_up: float, name: str
) -> None:
    """Wait until ``port`` completes a TLS handshake (``name`` must not exit meanwhile)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    while time.time() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with (
                socket.create_connection((HOST, port), timeout=1.0) as raw,
                ctx.wrap_socket(raw, server_hostname=HOST) as tls,
            ):
                with contextlib.suppress(OSError):
                    tls.unwrap()  # close_notify, so the server logs no "unexpected eof"
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not accept TLS connections in time")


# -- Mosquitto ---------------------------------------------------------------------------


def mosquitto_binary() -> tuple[str | None, str]:
    """The Mosquitto binary (installing the Debian package when root), or why there is none."""
    found = MOSQUITTO if Path(MOSQUITTO).exists() else shutil.which("mosquitto")
    if found:
        return found, ""
    if os.geteuid() != 0:
        return None, f"{MOSQUITTO} is missing and we are not root (apt-get install mosquitto)"
    done = subprocess.run(
        ["apt-get", "install", "-y", "mosquitto"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode == 0 and Path(MOSQUITTO).exists():
        return MOSQUITTO, ""
    return None, f"apt-get install -y mosquitto failed: {done.stderr.strip()[-200:]}"


def mosquitto_version(binary: str) -> str:
    done = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].strip() if first else "?"


def start_mosquitto(
    binary: str, directory: Path, port: int, tls: Tls, deadline: float
) -> subprocess.Popen[bytes]:
    """Mosquitto with one TLS listener on ``port``: anonymous, no persistence, defaults else."""
    conf = directory / "mosquitto.conf"
    lines = [
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        f"log_dest file {directory / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
        f"listener {port} {HOST}",
        f"cafile {tls.ca}",
        f"certfile {tls.cert}",
        f"keyfile {tls.key}",
        "max_connections -1",
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # else it drops to `mosquitto`, who cannot read our files
    conf.write_text("\n".join(lines) + "\n")
    log = (directory / "mosquitto.out").open("wb")
    with log:
        process = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_tls_port(process, port, tls.ca, min(deadline, time.time() + 15), "mosquitto")
    except BaseException:
        stop_server(process)
        raise
    return process


# -- python-socketio ---------------------------------------------------------------------


def start_socketio(
    directory: Path, port: int, tls: Tls, *, redis_url: str, channel: str, deadline: float
) -> subprocess.Popen[bytes]:
    """The python-socketio server process (see the module docstring)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "bench._peers", "socketio-server", str(port)]
    command += [str(tls.cert), str(tls.key), redis_url, channel]
    with (directory / "socketio.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_tls_port(process, port, tls.ca, min(deadline, time.time() + 30), "socketio server")
    except BaseException:
        stop_server(process)
        raise
    return process


def socketio_server(port: int, cert: str, key: str, redis_url: str, channel: str) -> None:
    """Serve python-socketio (AsyncRedisManager) over TLS until SIGTERM."""
    import socketio  # type: ignore[import-untyped]
    import uvicorn

    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager, cors_allowed_origins=[], transports=["websocket"]
    )

    async def connect(sid: str, _environ: dict[str, Any]) -> None:
        await sio.enter_room(sid, ROOM)

    sio.on("connect", connect)

    app = socketio.ASGIApp(sio)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        lifespan="off",
        backlog=4096,
    )
    uvicorn.Server(config).run()


def redis_pid(url: str) -> int | None:
    """The pid of the Redis server at ``url`` when it runs on this machine (else ``None``)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        pid = client.info("server").get("process_id")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return int(pid) if isinstance(pid, int) and Path(f"/proc/{pid}").exists() else None


def redis_available(url: str) -> str:
    """``""`` when Redis answers PING at ``url``, else the reason."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis at {url} does not answer: {type(exc).__name__}"
    finally:
        client.close()
    return ""


def redis_cleanup(url: str, channel: str) -> int:
    """Delete the keys named after ``channel`` (there should be none); how many were deleted.

    Pub/sub channels leave no keys, but a manager that ever stores state would use the
    channel name as its prefix.
    """
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    deleted = 0
    with contextlib.suppress(redis.RedisError):
        for key in client.scan_iter(match=f"{channel}*", count=1000):
            deleted += int(client.delete(key))
    client.close()
    return deleted


if __name__ == "__main__":
    if len(sys.argv) != 7 or sys.argv[1] != "socketio-server":
        sys.exit("usage: python -m bench._peers socketio-server PORT CERT KEY REDIS_URL CHANNEL")
    socketio_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
