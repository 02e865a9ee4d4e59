"""Fan-out and connections (issue 10, scenarios 3 and 4): Herald against its peers in one run.

Run it from the repository root::

    python -m bench.fanout                 # about 8 minutes on 2 cores
    python -m bench.fanout --quick         # smoke run, 1-2 minutes
    python -m bench.fanout --systems herald,mosquitto

Systems, all over TLS on 127.0.0.1 with one certificate from one throw-away CA:

* ``herald``: ``herald serve`` (throw-away data dir, defaults: signatures, SQLite,
  encryption, audit); subscribers are raw ``websockets`` connections to ``/v1/stream``,
  messages are signed publishes (``POST /v1/messages``, or ``/v1/messages:batch`` at
  saturation) made with the SDK's ``AsyncPublisher``;
* ``mosquitto``: our own broker (one TLS listener, anonymous, no persistence), QoS 0
  subscriptions with ``aiomqtt`` and an ``aiomqtt`` publisher;
* ``socketio``: python-socketio with ``AsyncRedisManager`` under uvicorn, a minimal
  Engine.IO 4 / Socket.IO 5 client over raw ``websockets``, publishes emitted to a room by
  a write-only ``AsyncRedisManager`` in this process (the usual production setup).

Every system gets the same client harness: N subscribers split over ``--client-procs``
spawned processes (uvloop), every message carries ``{"t": send time, "seq": n}`` and each
subscriber records the receive latency and which sequence numbers it got (loss, duplicates).
See bench/README.md for the steps and how to read the tables.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import importlib.util
import json
import math
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench._common import (
    HOST,
    SATURATED,
    SIGNED_START_WAIT,
    BenchRun,
    collect_messages,
    configure_signing,
    distribution,
    fmt,
    free_port,
    herald_init,
    log_summary,
    machine_busy_seconds,
    machine_facts,
    mint_subscriber_tokens,
    proc_cpu_seconds,
    raise_keyboard_interrupt,
    raise_nofile,
    server_env,
    start_server,
    stop_processes,
    stop_server,
    uvloop_factory,
    write_results,
)
from bench._harness import MAX_STEPS, MQTT_TOPIC, ChildConfig, child_main
from bench._peers import (
    EVENT,
    Tls,
    make_tls,
    mosquitto_binary,
    mosquitto_version,
    redis_available,
    redis_cleanup,
    redis_pid,
    start_mosquitto,
    start_socketio,
)

SYSTEMS = ("herald", "mosquitto", "socketio")
HERALD_TOPIC, HERALD_PATTERN = "bench.fanout", "bench.>"
BODY = ("Herald benchmark payload. " * 8)[:200]  # 200 ASCII bytes
ALARM_GRACE = 30  # seconds after --timeout at which SIGALRM interrupts whatever hangs
SATURATION_MAX_MESSAGES = 1000  # below Herald's per-stream queue (STREAM_QUEUE_MAX, 1024)


# -- the systems (parent side: server and publisher) -------------------------------------


class System:
    """A server under test and its publisher. Subclasses fill in the specifics."""

    name = ""
    publisher_note = ""

    def __init__(self, run: Run, tls: Tls, directory: Path) -> None:
        self.run, self.tls, self.dir = run, tls, directory
        self.server: subprocess.Popen[bytes] | None = None
        self.extra_pids: dict[str, int] = {}
        self.facts: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def client_url(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def credentials(self, count: int) -> list[str]:
        return [f"bench-{secrets.token_hex(4)}-{i}" for i in range(count)]

    async def publish_one(self, seq: int) -> None:
        raise NotImplementedError

    async def publish_burst(self, lo: int, count: int) -> Counter[str]:
        """Publish ``count`` messages as fast as the system accepts them; the errors."""
        errors: Counter[str] = Counter()
        for seq in range(lo, lo + count):
            if time.time() >= self.run.deadline:
                errors["hard timeout"] += lo + count - seq
                break
            try:
                await self.publish_one(seq)
            except Exception as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1
        return errors

    async def close(self) -> None:
        """Close the publisher (the server is stopped by ``stop``)."""

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)

    def log_problems(self) -> list[str]:
        return []


def payload(seq: int) -> dict[str, Any]:
    return {"t": time.time(), "seq": seq, "body": BODY}


class HeraldSystem(System):
    name = "herald"
    publisher_note = "SDK AsyncPublisher, RFC 9421-signed; saturation: /v1/messages:batch"

    def __init__(self, run: Run, tls: Tls, directory: Path) -> None:
        super().__init__(run, tls, directory)
        self.init: dict[str, Any] = {}
        self.pub: Any = None
        self.tokens: list[str] = []

    def client_url(self) -> str:
        url = str(self.init["url"]).replace("https://", "wss://", 1)
        return f"{url}/v1/stream?topics={HERALD_PATTERN}"

    async def start(self) -> None:
        from herald.client import AsyncPublisher

        env = server_env(self.dir / "data", free_port())
        env["HERALD_TLS_CERT_FILE"], env["HERALD_TLS_KEY_FILE"] = (
            str(self.tls.cert),
            str(self.tls.key),
        )
        self.init = await asyncio.to_thread(herald_init, env)
        signer, self.facts["request_signatures"] = configure_signing("auto", self.init, env)
        self.server = await asyncio.to_thread(
            start_server, env, self.init["url"], str(self.tls.ca), self.run.deadline
        )
        if signer is not None:
            await asyncio.sleep(SIGNED_START_WAIT)
        extra = {"signer": signer} if signer is not None else {}
        self.pub = AsyncPublisher(
            self.init["url"],
            self.init["client_id"],
            self.init["client_secret"],
            ca=str(self.tls.ca),
            max_retries=0,
            **extra,
        )
        await self.pub.__aenter__()
        import herald

        self.facts["version"] = f"herald {herald.__version__}"

    async def credentials(self, count: int) -> list[str]:
        if len(self.tokens) < count:
            started = time.monotonic()
            wanted = [(f"bench-{i:06d}", [HERALD_PATTERN]) for i in range(len(self.tokens), count)]
            self.tokens += await mint_subscriber_tokens(
                self.pub, wanted, ttl=3600, timeout=self.run.remaining(), concurrency=32
            )
            spent = time.monotonic() - started
            self.facts["token_mint_s"] = round(self.facts.get("token_mint_s", 0.0) + spent, 2)
            self.facts["tokens_minted"] = len(self.tokens)
        return self.tokens[:count]

    async def publish_one(self, seq: int) -> None:
        await self.pub.publish(
            HERALD_TOPIC, title=f"bench {seq}", body=BODY, data={"t": time.time(), "seq": seq}
        )

    async def publish_burst(self, lo: int, count: int) -> Counter[str]:
        errors: Counter[str] = Counter()
        size = self.run.args.batch_size
        sem = asyncio.Semaphore(2)

        async def batch(first: int, last: int) -> None:
            async with sem:
                if time.time() >= self.run.deadline:
                    errors["hard timeout"] += last - first
                    return
                now = time.time()
                messages = [
                    {
                        "topic": HERALD_TOPIC,
                        "title": f"bench {seq}",
                        "body": BODY,
                        "data": {"t": now, "seq": seq},
                    }
                    for seq in range(first, last)
                ]
                try:
                    results = await self.pub.publish_batch(messages)
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += last - first
                    return
                for item in results:
                    if isinstance(item, Exception):
                        errors[str(item)[:100]] += 1

        spans = [(a, min(a + size, lo + count)) for a in range(lo, lo + count, size)]
        await asyncio.gather(*(batch(a, b) for a, b in spans))
        return errors

    async def close(self) -> None:
        if self.pub is not None:
            with contextlib.suppress(Exception):
                await self.pub.__aexit__(None, None, None)

    def log_problems(self) -> list[str]:
        summary = log_summary(self.dir / "data" / "serve.log")
        self.facts["server_log_levels"] = summary["levels"]
        return list(summary["problems"])


class MosquittoSystem(System):
    name = "mosquitto"
    publisher_note = "aiomqtt client, QoS 0"

    def __init__(self, run: Run, tls: Tls, directory: Path, binary: str) -> None:
        super().__init__(run, tls, directory)
        self.binary = binary
        self.port = free_port()
        self.client: Any = None

    def client_url(self) -> str:
        return str(self.port)

    async def start(self) -> None:
        import aiomqtt

        self.facts["version"] = mosquitto_version(self.binary)
        self.server = await asyncio.to_thread(
            start_mosquitto, self.binary, self.dir, self.port, self.tls, self.run.deadline
        )
        ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        self.client = aiomqtt.Client(
            HOST, self.port, identifier="bench-publisher", tls_context=ctx, timeout=20
        )
        await self.client.__aenter__()

    async def publish_one(self, seq: int) -> None:
        await self.client.publish(MQTT_TOPIC, msgspec.json.encode(payload(seq)), qos=0)

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.__aexit__(None, None, None)

    def log_problems(self) -> list[str]:
        try:
            lines = (self.dir / "mosquitto.log").read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if "rror" in line or "arning" in line][-25:]


class SocketioSystem(System):
    name = "socketio"
    publisher_note = "AsyncRedisManager(write_only=True).emit(room=...) via Redis"

    def __init__(self, run: Run, tls: Tls, directory: Path) -> None:
        super().__init__(run, tls, directory)
        self.port = free_port()
        self.channel = f"herald-bench-fanout-{secrets.token_hex(6)}"
        self.manager: Any = None

    def client_url(self) -> str:
        return f"wss://{HOST}:{self.port}/socket.io/?EIO=4&transport=websocket"

    async def start(self) -> None:
        import importlib.metadata

        import socketio  # type: ignore[import-untyped]

        url = self.run.args.redis_url
        self.facts["version"] = f"python-socketio {importlib.metadata.version('python-socketio')}"
        self.facts["redis_channel"] = self.channel
        self.server = await asyncio.to_thread(
            start_socketio,
            self.dir,
            self.port,
            self.tls,
            redis_url=url,
            channel=self.channel,
            deadline=self.run.deadline,
        )
        pid = await asyncio.to_thread(redis_pid, url)
        if pid is not None:
            self.extra_pids["redis"] = pid
        self.manager = socketio.AsyncRedisManager(url, channel=self.channel, write_only=True)

    async def publish_one(self, seq: int) -> None:
        from bench._peers import ROOM

        await self.manager.emit(EVENT, payload(seq), room=ROOM, namespace="/")

    async def close(self) -> None:
        if self.manager is not None:
            with contextlib.suppress(Exception):
                await self.manager.redis.aclose()

    def stop(self) -> None:
        super().stop()
        self.facts["redis_keys_deleted"] = redis_cleanup(self.run.args.redis_url, self.channel)

    def log_problems(self) -> list[str]:
        try:
            lines = (self.dir / "socketio.log").read_text(errors="replace").splitlines()
        except OSError:
            return []
        return lines[-25:]


# -- the run -----------------------------------------------------------------------------


class HardTimeout(Exception):
    """``--timeout`` was reached: stop measuring, report what was measured."""


@dataclass
class Run(BenchRun):
    """This benchmark's run: its servers, client processes and results per system."""

    status: str = "running"
    systems: list[System] = field(default_factory=list)
    procs: list[Any] = field(default_factory=list)
    stop: Any = None
    queue: Any = None

    def check_deadline(self, margin: float = 0.0) -> None:
        """Raise :class:`HardTimeout` when ``--timeout`` is (within ``margin`` s) reached."""
        if self.remaining() <= margin:
            self.timed_out = True
            raise HardTimeout(self.status)


def cpu_snapshot(pids: dict[str, int]) -> dict[str, Any]:
    return {
        "wall": time.monotonic(),
        "machine": machine_busy_seconds(),
        "publisher": time.process_time(),
        **{name: proc_cpu_seconds(pid) for name, pid in pids.items()},
    }


def cpu_rates(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds per wall second of each part between two ``cpu_snapshot``s."""
    wall = max(b["wall"] - a["wall"], 1e-9)
    out: dict[str, Any] = {"wall_s": round(wall, 3)}
    for name, x in a.items():
        if name == "wall":
            continue
        y = b.get(name)
        out[name] = None if x is None or y is None else round((y - x) / wall, 3)
    ours = [v for k, v in out.items() if k not in {"wall_s", "machine"} and v is not None]
    if out.get("machine") is not None:
        out["other_processes"] = round(max(0.0, out["machine"] - sum(ours)), 3)
    return out


def rss_bytes(pid: int) -> int | None:
    """The resident set size of ``pid`` (``None`` when unknown or psutil is missing)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


@dataclass
class Session:
    """One set of connected subscribers of one system (client processes + step counter)."""

    run: Run
    system: System
    subscribers: int
    capacity: int
    procs: list[Any] = field(default_factory=list)
    cmds: list[Any] = field(default_factory=list)
    connected: int = 0
    next_seq: int = 0
    next_step: int = 0
    stash: dict[str, list[Any]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        out = {"server": self.system.pid, **self.system.extra_pids}
        out.update({f"client{i}": p.pid for i, p in enumerate(self.procs)})
        return out

    async def collect(self, kind: str, count: int, until: float) -> list[Any]:
        got, errors = await collect_messages(
            self.procs, self.run.queue, kind, count=count, until=until, stash=self.stash
        )
        self.run.notes.extend(f"{self.system.name}: {e}" for e in errors)
        return got

    async def connect(self) -> None:
        run, system = self.run, self.system
        credentials = await system.credentials(self.subscribers)
        ctx = mp.get_context("spawn")
        procs = min(run.args.client_procs, self.subscribers)
        base = len(run.procs)
        for index in range(procs):
            cfg = ChildConfig(
                system=system.name,
                index=base + index,
                url=system.client_url(),
                ca=str(system.tls.ca),
                credentials=credentials[index::procs],
                capacity=self.capacity,
                connect_concurrency=run.args.connect_concurrency,
                deadline=run.deadline,
                mqtt_client=run.args.mqtt_client,
            )
            cmd = ctx.Queue()
            proc = ctx.Process(
                target=child_main,
                args=(cfg, run.queue, cmd, run.stop),
                name=f"fanout-client-{index}",
            )
            proc.start()
            self.procs.append(proc)
            self.cmds.append(cmd)
            run.procs.append(proc)
        started = time.monotonic()
        rss0 = rss_bytes(system.pid)
        snap0 = cpu_snapshot(self.pids())
        ready = await self.collect("ready", len(self.procs), run.deadline)
        connect_s = time.monotonic() - started
        snap1 = cpu_snapshot(self.pids())
        self.connected = sum(r[2]["connected"] for r in ready)
        errors = sum((Counter(r[2]["connect_errors"]) for r in ready), Counter())
        await asyncio.sleep(2.0)  # let the server settle before reading its RSS
        rss1 = rss_bytes(system.pid)
        self.figures.update(
            subscribers=self.subscribers,
            connected=self.connected,
            connect_s=round(connect_s, 2),
            connect_errors=dict(errors),
            cpu_connect=cpu_rates(snap0, snap1),
            rss_before_mib=None if rss0 is None else round(rss0 / 2**20, 1),
            rss_connected_mib=None if rss1 is None else round(rss1 / 2**20, 1),
        )
        if rss0 is not None and rss1 is not None and self.connected:
            self.figures["rss_per_connection_kib"] = round((rss1 - rss0) / self.connected / 1024, 1)
        if len(ready) < len(self.procs):
            self.run.check_deadline()
            raise RuntimeError(f"only {len(ready)} of {len(self.procs)} client processes got ready")
        if not self.connected:
            raise RuntimeError(f"no subscriber connected: {dict(errors)}")

    async def idle(self, seconds: float) -> dict[str, Any]:
        """Server CPU/wall and RSS while the subscribers are connected and nothing is published."""
        snap0 = cpu_snapshot(self.pids())
        await asyncio.sleep(max(0.0, min(seconds, self.run.remaining() - 30)))
        snap1 = cpu_snapshot(self.pids())
        rss = rss_bytes(self.system.pid)
        return {
            "cpu": cpu_rates(snap0, snap1),
            "rss_mib": None if rss is None else round(rss / 2**20, 1),
        }

    async def step(self, name: str, count: int, rate: float | None) -> dict[str, Any]:
        """Publish ``count`` messages at ``rate`` msgs/s (``None``: as fast as accepted)."""
        run, system = self.run, self.system
        run.check_deadline(margin=1.0)
        k, lo = self.next_step, self.next_seq
        if k >= MAX_STEPS or lo + count > self.capacity:
            raise RuntimeError("the session ran out of steps or sequence numbers")
        self.next_step, self.next_seq = k + 1, lo + count
        for cmd in self.cmds:
            cmd.put(("step", k, lo, lo + count))
        acks = await self.collect(f"ack:{k}", len(self.procs), min(run.deadline, time.time() + 10))
        if len(acks) < len(self.procs):
            run.check_deadline()
            raise RuntimeError(f"step {name}: not every client process acknowledged")
        snap0 = cpu_snapshot(self.pids())
        load0 = os.getloadavg()[0]
        first_send = time.time()
        if rate is None:
            errors = await system.publish_burst(lo, count)
            lags: list[float] = []
        else:
            errors, lags = await self.paced(lo, count, rate)
        last_send = time.time()
        accepted = count - sum(errors.values())
        until = min(run.deadline, last_send + run.args.drain)
        for cmd in self.cmds:
            cmd.put(("await", k, accepted, until))
        done = await self.collect(f"done:{k}", len(self.procs), until + 10)
        snap1 = cpu_snapshot(self.pids())
        return self.summarise(
            name=name,
            count=count,
            rate=rate,
            accepted=accepted,
            errors=errors,
            lags=lags,
            sends=(first_send, last_send),
            done=done,
            snap0=snap0,
            snap1=snap1,
        ) | {"load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}

    async def paced(self, lo: int, count: int, rate: float) -> tuple[Counter[str], list[float]]:
        errors: Counter[str] = Counter()
        sem = asyncio.Semaphore(self.run.args.concurrency)
        lags: list[float] = []

        async def one(seq: int) -> None:
            try:
                await self.system.publish_one(seq)
            except Exception as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1
            finally:
                sem.release()

        tasks = []
        t0 = time.monotonic() + 0.01
        for i in range(count):
            scheduled = t0 + i / rate
            if (delay := scheduled - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            if time.time() >= self.run.deadline:
                errors["hard timeout"] += count - i
                break
            await sem.acquire()
            lags.append(time.monotonic() - scheduled)
            tasks.append(asyncio.create_task(one(lo + i)))
        await asyncio.gather(*tasks)
        return errors, lags

    def summarise(
        self,
        *,
        name: str,
        count: int,
        rate: float | None,
        accepted: int,
        errors: Counter[str],
        lags: list[float],
        sends: tuple[float, float],
        done: list[Any],
        snap0: dict[str, Any],
        snap1: dict[str, Any],
    ) -> dict[str, Any]:
        latencies: array.array[float] = array.array("d")
        clients = []
        for _, _, result, raw, _ in sorted(done, key=lambda d: d[1]):
            chunk: array.array[float] = array.array("d")
            chunk.frombytes(raw)
            latencies.extend(chunk)
            clients.append(result)
        received = sum(c["received"] for c in clients)
        open_conns = sum(c["open_conns"] for c in clients)
        expected = self.connected * accepted
        last = max((c["last_recv"] for c in clients if c["last_recv"]), default=None)
        window = (last - sends[0]) if last else None
        frames = received + sum(c["duplicates"] for c in clients)
        out: dict[str, Any] = {
            "step": name,
            "messages": count,
            "accepted": accepted,
            "publish_errors": dict(errors),
            "target_msgs_per_s": rate,
            "target_deliveries_per_s": None if rate is None else round(rate * self.connected),
            "publish_s": round(sends[1] - sends[0], 3),
            "achieved_msgs_per_s": round(count / max(sends[1] - sends[0], 1e-9), 1)
            if rate is None
            else round(count / (sends[1] - sends[0] + 1.0 / rate), 2),
            "schedule_lag_max_ms": round(max(lags) * 1000, 2) if lags else None,
            "deliveries_expected": expected,
            "deliveries_received": received,
            "deliveries_lost": max(0, expected - received),
            "duplicates": sum(c["duplicates"] for c in clients),
            "open_conns_at_end": open_conns,
            # At a fixed rate the schedule spans count/rate seconds (count messages, one per
            # 1/rate); a step that kept up delivers at the target, one that fell behind less.
            "deliveries_per_s": round(received / max(window, count / rate if rate else 0), 1)
            if window
            else None,
            "window_s": round(window, 3) if window else None,
            "latency_ms": distribution(latencies),
            **per_message(done),
            "frame_bytes_avg": round(sum(c["frame_bytes"] for c in clients) / frames, 1)
            if frames
            else None,
            "clients": clients,
            "cpu": cpu_rates(snap0, snap1),
            "client_processes_reported": len(clients),
        }
        if len(clients) < len(self.procs):
            out["note"] = "some client processes never reported: their deliveries count as lost"
        server_cpu = out["cpu"].get("server")
        if server_cpu is not None and received:
            out["server_cpu_us_per_delivery"] = round(
                server_cpu * out["cpu"]["wall_s"] / received * 1e6, 2
            )
        out["client_saturated"] = any(
            (c["cpu"]["cpu_per_wall"] or 0.0) > SATURATED for c in clients
        ) or any((v or 0.0) > SATURATED for k, v in out["cpu"].items() if k.startswith("client"))
        return out

    async def close(self) -> dict[str, Any]:
        """Stop the client processes; their final counters (heartbeats, closes)."""
        for cmd in self.cmds:
            cmd.put(("quit",))
        byes = await self.collect("bye", len(self.procs), min(self.run.deadline, time.time() + 15))
        await asyncio.to_thread(stop_processes, self.procs, None, self.run.queue)
        for proc in self.procs:
            if proc in self.run.procs:
                self.run.procs.remove(proc)
        for cmd in self.cmds:
            cmd.close()
        totals: Counter[str] = Counter()
        for _, _, bye in byes:
            totals.update(bye["unexpected_closes"])
        return {
            "heartbeats": sum(b[2]["heartbeats"] for b in byes),
            "stray_frames": sum(b[2]["stray_frames"] for b in byes),
            "unexpected_closes": dict(totals),
            "client_max_rss_mib": [b[2]["max_rss_mib"] for b in byes],
        }


def per_message(done: list[Any]) -> dict[str, Any]:
    """Per message: send → first subscriber (the publish path) and first → last (fan-out)."""
    sent: list[float] = []
    first: list[float] = []
    last: list[float] = []
    for item in done:
        parts = []
        for raw in item[4]:
            part: array.array[float] = array.array("d")
            part.frombytes(raw)
            parts.append(part)
        if not sent:
            sent, first, last = (
                [0.0] * len(parts[0]),
                [math.inf] * len(parts[0]),
                [0.0] * len(parts[0]),
            )
        for i, (t, a, b) in enumerate(zip(*parts, strict=True)):
            sent[i] = max(sent[i], t)
            first[i] = min(first[i], a or math.inf)  # 0: this process got none
            last[i] = max(last[i], b)
    got = [i for i in range(len(sent)) if last[i] > 0.0]
    return {
        "send_to_first_ms": distribution(first[i] - sent[i] for i in got),
        "first_to_last_ms": distribution(last[i] - first[i] for i in got),
    }


def ladder(args: argparse.Namespace, subscribers: int) -> list[tuple[str, int, float]]:
    """The fixed-rate steps: ``(name, messages, msgs/s)`` for each delivered rate."""
    steps = []
    for delivered in args.rates:
        rate = delivered / subscribers
        count = max(2, math.ceil(rate * args.step_seconds))
        steps.append((f"{delivered:,} deliveries/s", count, rate))
    return steps


@dataclass
class Contender:
    """One system in scenario 3: its connected subscribers and its figures."""

    system: System
    out: dict[str, Any]
    session: Session | None = None
    saturation_count: int = 0

    @property
    def fan(self) -> dict[str, Any]:
        assert self.session is not None
        return self.session.figures


async def guarded(run: Run, c: Contender, what: Any) -> Any:
    """Await ``what`` for ``c``; on failure record it and retire ``c`` (the others go on)."""
    try:
        return await what
    except KeyboardInterrupt:
        raise
    except HardTimeout:
        c.out["error"] = f"hard timeout (--timeout) while {run.status}"
        print(f"  {c.system.name}: {c.out['error']}", flush=True)
        await retire(c)
        return None
    except Exception as exc:
        c.out["error"] = f"{type(exc).__name__}: {exc}"
        run.notes.append(f"{c.system.name} failed while {run.status}: {traceback.format_exc()}")
        print(f"  {c.system.name}: FAILED: {c.out['error']}", flush=True)
        await retire(c)
        return None


async def retire(c: Contender) -> None:
    """Disconnect ``c``'s subscribers and stop its server and publisher."""
    session, c.session = c.session, None
    if session is not None:
        session.figures["close"] = await session.close()
    await c.system.close()
    await asyncio.to_thread(c.system.stop)


def rotated(items: list[Contender], shift: int) -> list[Contender]:
    """``items`` starting at ``shift`` (mod len), so no system always goes first."""
    live = [c for c in items if c.session is not None]
    if not live:
        return []
    shift %= len(live)
    return live[shift:] + live[:shift]


async def prepare(run: Run, c: Contender) -> None:
    """Start ``c``'s server and connect its scenario-3 subscribers."""
    args, system = run.args, c.system
    run.status = f"{system.name}: starting"
    started = time.monotonic()
    await system.start()
    c.out["start_s"] = round(time.monotonic() - started, 2)
    if isinstance(system, HeraldSystem) and "herald" in args.big_systems:
        # Mint every token now: the 10,000-subscriber scenario reuses the first ones.
        await system.credentials(max(args.subscribers, args.big_subscribers))
    capacity = 10 + sum(n for _, n, _ in ladder(args, args.subscribers))
    capacity += SATURATION_MAX_MESSAGES * (args.runs + 2)
    capacity += math.ceil(args.high_rate / args.subscribers * args.step_seconds) + 2
    c.session = Session(run, system, args.subscribers, capacity)
    c.out["fanout"] = c.session.figures
    run.status = f"{system.name}: connecting {args.subscribers:,} subscribers"
    await c.session.connect()
    print(f"  {system.name}: {c.session.connected:,} subscribers in {c.fan['connect_s']} s")
    c.fan["steps"], c.fan["saturation"] = [], []
    c.saturation_count = min(args.saturation_messages, SATURATION_MAX_MESSAGES)


async def one_step(
    run: Run, c: Contender, name: str, count: int, rate: float | None
) -> dict[str, Any] | None:
    assert c.session is not None
    run.status = f"{c.system.name}: {name}"
    result: dict[str, Any] | None = await guarded(run, c, c.session.step(name, count, rate))
    if result is not None and name != "warm-up":
        print_step(c.system.name, result)
    return result


async def fanout_scenario(run: Run, contenders: list[Contender]) -> None:
    """Scenario 3: warm-up, the rate ladder, saturation runs, the high rate; interleaved.

    Each rate step runs for every system before the next rate, and each saturation round
    measures every system once in a rotating order, so a drift of the machine's load (other
    work on a shared box) is spread over all systems rather than landing on one.
    """
    args = run.args
    for c in rotated(contenders, 0):
        await one_step(run, c, "warm-up", 5, 10.0)
    for i, (name, count, rate) in enumerate(ladder(args, args.subscribers)):
        for c in rotated(contenders, i):
            if (result := await one_step(run, c, name, count, rate)) is not None:
                c.fan["steps"].append(result)
    await saturation_rounds(run, contenders)
    await high_rate_steps(run, contenders)


async def saturation_rounds(run: Run, contenders: list[Contender]) -> None:
    """A probe burst per system, then ``--runs`` rounds of one burst per system each.

    The probe (``--saturation-messages``, not counted) sizes each system's bursts to about
    ``--saturation-seconds`` of deliveries; the rounds go in a rotating order.
    """
    args = run.args
    for c in rotated(contenders, 0):
        probe = await one_step(run, c, "saturation probe", c.saturation_count, None)
        if probe is not None and c.session is not None:
            c.fan["saturation_probe"] = probe
            rate = probe["deliveries_per_s"] or 0.0
            n = round(rate * args.saturation_seconds / max(c.session.connected, 1))
            c.saturation_count = max(10, min(SATURATION_MAX_MESSAGES, n))
    for r in range(args.runs):
        if run.remaining() < 60:
            run.notes.append(f"saturation runs cut to {r} (time budget)")
            break
        for c in rotated(contenders, r):
            result = await one_step(run, c, f"saturation {r + 1}", c.saturation_count, None)
            if result is None:
                continue
            c.fan["saturation"].append(result)


async def high_rate_steps(run: Run, contenders: list[Contender]) -> None:
    """The saturation summary; then ``--high-rate`` where the median reached it."""
    args = run.args
    for c in rotated(contenders, 0):
        rates = sorted(r["deliveries_per_s"] or 0.0 for r in c.fan["saturation"])
        if rates:
            c.fan["saturation_median"] = rates[len(rates) // 2]
            c.fan["saturation_min"], c.fan["saturation_max"] = rates[0], rates[-1]
        high = args.high_rate
        if not high:
            continue
        if rates and c.fan["saturation_median"] >= high and run.remaining() > 60:
            rate = high / max(c.fan["connected"], 1)
            count = max(2, math.ceil(rate * args.step_seconds))
            if (
                result := await one_step(run, c, f"{high:,} deliveries/s", count, rate)
            ) is not None:
                c.fan["steps"].append(result)
        else:
            c.fan["high_rate_skipped"] = (
                f"not run: saturation median {fmt(c.fan.get('saturation_median'))}/s < {high:,}"
            )


async def connections_scenario(run: Run, system: System, subscribers: int) -> dict[str, Any]:
    """Scenario 4 (idle subscribers: RSS, heartbeat CPU), then scenario 3 at this size."""
    args = run.args
    capacity = 10 + SATURATION_MAX_MESSAGES * 2
    session = Session(run, system, subscribers, capacity)
    out = session.figures
    try:
        run.status = f"{system.name}: connecting {subscribers:,} subscribers"
        await session.connect()
        print(f"  {system.name}: {session.connected:,} subscribers in {out['connect_s']} s")
        run.status = f"{system.name}: idle with {subscribers:,} subscribers"
        out["idle"] = await session.idle(args.idle_seconds)
        rate = args.big_rate / max(session.connected, 1)
        count = max(2, math.ceil(rate * args.step_seconds))
        run.status = f"{system.name}: {args.big_rate:,} deliveries/s to {subscribers:,}"
        out["paced"] = await session.step(f"{args.big_rate:,} deliveries/s", count, rate)
        print_step(system.name, out["paced"])
        run.status = f"{system.name}: saturation to {subscribers:,}"
        out["saturation"] = await session.step("saturation", args.big_messages, None)
        print_step(system.name, out["saturation"])
    finally:
        out["close"] = await session.close()
    return out


def print_step(system: str, step: dict[str, Any]) -> None:
    lat = step["latency_ms"]
    flag = "  CLIENT SATURATED" if step["client_saturated"] else ""
    print(
        f"  {system}: {step['step']}: {fmt(step['deliveries_per_s'])} deliveries/s, "
        f"p50/p99 {fmt(lat['p50'])}/{fmt(lat['p99'])} ms, lost {step['deliveries_lost']:,}"
        f"{flag}",
        flush=True,
    )


async def big_scenario(run: Run, c: Contender) -> None:
    """Scenario 4 for ``c`` when it is in ``--big-systems``; then retire it."""
    big = run.args.big_subscribers
    if c.session is None or not big or c.system.name not in run.args.big_systems:
        await retire(c)
        return
    session, c.session = c.session, None
    session.figures["close"] = await session.close()
    if run.remaining() < 120:
        run.notes.append(f"{c.system.name}: scenario 4 not run (under 120 s left)")
        await retire(c)
        return
    await asyncio.sleep(2.0)
    print(f"scenario 4: {c.system.name}, {big:,} subscribers", flush=True)
    c.out["connections"] = await guarded(run, c, connections_scenario(run, c.system, big))
    await retire(c)


def pip_name(module: str | None) -> str:
    """The distribution that provides ``module`` (for the "pip install" hint)."""
    return {"socketio": "python-socketio", "engineio": "python-engineio"}.get(
        module or "", module or "?"
    )


def make_systems(run: Run, tls: Tls, tmp: Path) -> list[System]:
    """The requested systems whose packages and servers are available (else print why not)."""
    out: list[System] = []
    for name in run.args.systems:
        directory = tmp / name
        directory.mkdir()
        reason = ""
        try:
            if name == "herald":
                import herald.client  # noqa: F401

                out.append(HeraldSystem(run, tls, directory))
            elif name == "mosquitto":
                import aiomqtt  # noqa: F401

                binary, reason = mosquitto_binary()
                if binary is not None:
                    out.append(MosquittoSystem(run, tls, directory, binary))
            elif name == "socketio":
                import redis  # noqa: F401
                import socketio  # noqa: F401
                import uvicorn  # noqa: F401

                reason = redis_available(run.args.redis_url)
                if not reason:
                    out.append(SocketioSystem(run, tls, directory))
        except ImportError as exc:
            reason = f"package {exc.name!r} is not installed (pip install {pip_name(exc.name)})"
        if reason:
            print(f"skipping {name}: {reason}", flush=True)
            run.figures.setdefault("skipped", {})[name] = reason
    return out


async def run_all(run: Run, tls: Tls, tmp: Path) -> None:
    import importlib.metadata

    websockets_version = importlib.metadata.version("websockets")
    run.figures["machine"] = machine_facts() | {"websockets": websockets_version}
    run.figures["systems"] = {}
    run.systems = make_systems(run, tls, tmp)
    ctx = mp.get_context("spawn")
    run.queue, run.stop = ctx.Queue(), ctx.Event()
    contenders = []
    for system in run.systems:
        out = run.figures["systems"][system.name] = {"publisher": system.publisher_note}
        contenders.append(Contender(system, out))
    try:
        for c in contenders:
            print(f"{c.system.name}: starting, connecting", flush=True)
            await guarded(run, c, prepare(run, c))
        print("scenario 3: fan-out, systems interleaved", flush=True)
        await fanout_scenario(run, contenders)
        for c in contenders:
            await big_scenario(run, c)
    finally:
        for c in contenders:
            with contextlib.suppress(Exception):
                await retire(c)
            c.out["facts"] = c.system.facts
            c.out["log_problems"] = c.system.log_problems()


# -- report ------------------------------------------------------------------------------


def ratio(herald: float | None, peer: float | None) -> str:
    if herald is None or peer is None or peer == 0:
        return "n/a"
    return f"{herald / peer:.2f}×"


def lat(step: dict[str, Any] | None) -> str:
    if not step:
        return "n/a"
    d = step["latency_ms"]
    text = f"{fmt(d['p50'])}/{fmt(d['p99'])}/{fmt(d['p99.9'])}"
    if step["deliveries_lost"]:
        text += f" LOST {step['deliveries_lost']:,}"
    target, got = step["target_deliveries_per_s"], step["deliveries_per_s"]
    if target and got and got < 0.9 * target:
        text += " (behind)"
    return text + (" SAT" if step["client_saturated"] else "")


def busiest(fan: dict[str, Any]) -> str:
    """The highest client-process CPU/wall (while receiving) of any step, and the step."""
    best: tuple[float, str] = (-1.0, "")
    for step in [*fan.get("steps", []), *fan.get("saturation", [])]:
        for client in step["clients"]:
            util = client["cpu"]["cpu_per_wall"]
            if util is not None and util > best[0]:
                best = (util, step["step"])
    if best[0] < 0:
        return "n/a"
    flag = " SATURATED" if best[0] > SATURATED else ""
    return f"{fmt(best[0])} ({best[1]}){flag}"


def spread(step: dict[str, Any] | None) -> str:
    """Per message p50: send → first subscriber, first → last subscriber."""
    if not step:
        return "n/a"
    first, last = step["send_to_first_ms"], step["first_to_last_ms"]
    return f"{fmt(first['p50'])} / {fmt(last['p50'])}"


def tabulate(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([title, rule, lines[0], rule, *lines[1:], rule])


def fanout_table(run: Run) -> str:
    systems = run.figures["systems"]
    names = [n for n in SYSTEMS if n in systems and "fanout" in systems[n]]
    peers = [n for n in names if n != "herald"]
    header = ["1,000 subscribers, one topic", *names] + [f"herald/{p}" for p in peers]
    fan = {n: systems[n]["fanout"] for n in names}
    rows: list[list[str]] = []

    def add(label: str, cells: dict[str, str], ratios: dict[str, str]) -> None:
        rows.append(
            [label, *(cells.get(n, "n/a") for n in names)] + [ratios.get(p, "") for p in peers]
        )

    def steps_by_name(name: str) -> dict[str, dict[str, Any]]:
        return {n: s for n in names for s in fan[n].get("steps", []) if s["step"] == name}

    def nsat(n: str) -> int:
        return len(fan[n].get("saturation", []))

    sat = {n: fan[n].get("saturation_median") for n in names}
    add(
        "saturation deliveries/s, median (runs)",
        {n: f"{fmt(sat[n])} ({nsat(n)})" for n in names},
        {p: ratio(sat.get("herald"), sat[p]) for p in peers},
    )
    add(
        "saturation min–max",
        {
            n: f"{fmt(fan[n].get('saturation_min'))}–{fmt(fan[n].get('saturation_max'))}"
            for n in names
        },
        {},
    )
    add(
        "saturation lost / duplicates",
        {
            n: f"{sum(s['deliveries_lost'] for s in fan[n].get('saturation', [])):,} / "
            f"{sum(s['duplicates'] for s in fan[n].get('saturation', [])):,}"
            for n in names
        },
        {},
    )

    def sat_last(n: str, key: str) -> Any:
        runs = fan[n].get("saturation", [])
        return runs[-1][key] if runs else None

    add(
        "saturation p50/p99 latency ms (last run)",
        {n: lat(fan[n]["saturation"][-1]) if fan[n].get("saturation") else "n/a" for n in names},
        {},
    )
    add(
        "server CPU µs per delivery (last run)",
        {n: fmt(sat_last(n, "server_cpu_us_per_delivery")) for n in names},
        {
            p: ratio(
                sat_last("herald", "server_cpu_us_per_delivery"),
                sat_last(p, "server_cpu_us_per_delivery"),
            )
            for p in peers
        }
        if "herald" in names
        else {},
    )
    labels = list(dict.fromkeys(s["step"] for n in names for s in fan[n].get("steps", [])))
    for label in labels:
        by = steps_by_name(label)
        p99 = {n: by[n]["latency_ms"]["p99"] for n in by}
        add(
            f"{label}: p50/p99/p99.9 ms",
            {
                n: lat(by.get(n)) if n in by else fan[n].get("high_rate_skipped", "n/a")[:30]
                for n in names
            },
            {p: ratio(p99.get("herald"), p99.get(p)) for p in peers},
        )
    for label in labels:
        by = steps_by_name(label)
        add(
            f"{label}: send→1st / 1st→last p50 ms",
            {n: spread(by.get(n)) for n in names},
            {},
        )
    add(
        "frame bytes (avg, last ladder step)",
        {
            n: fmt(fan[n]["steps"][-1]["frame_bytes_avg"]) if fan[n].get("steps") else "n/a"
            for n in names
        },
        {},
    )
    add(
        "server RSS per connection (KiB)",
        {n: fmt(fan[n].get("rss_per_connection_kib")) for n in names},
        {
            p: ratio(
                fan.get("herald", {}).get("rss_per_connection_kib"),
                fan[p].get("rss_per_connection_kib"),
            )
            for p in peers
        },
    )
    add("client CPU/wall, busiest process (step)", {n: busiest(fan[n]) for n in names}, {})
    add("connect time (s)", {n: fmt(fan[n].get("connect_s")) for n in names}, {})
    add(
        "other processes, busy cores (last run)",
        {
            n: fmt(sat_last(n, "cpu").get("other_processes")) if fan[n].get("saturation") else "n/a"
            for n in names
        },
        {},
    )
    out = tabulate(
        "Scenario 3: fan-out (ratios: throughput > 1 means Herald is faster; latency and "
        "memory < 1 means Herald is lower)",
        header,
        rows,
    )
    return out + "\n" + cpu_lines(names, fan)


def cpu_lines(names: list[str], fan: dict[str, Any]) -> str:
    lines = ["CPU/wall during the last saturation run (cores; SATURATED above 0.9):"]
    for n in names:
        runs = fan[n].get("saturation", [])
        if not runs:
            continue
        cpu = runs[-1]["cpu"]
        clients = [
            f"{fmt(cpu[k])}{' SATURATED' if (cpu[k] or 0) > SATURATED else ''}"
            for k in sorted(cpu)
            if k.startswith("client")
        ]
        busy = [fmt(c["cpu"]["cpu_per_wall"]) for c in runs[-1]["clients"]]
        extra = f", redis {fmt(cpu['redis'])}" if "redis" in cpu else ""
        lines.append(
            f"  {n}: server {fmt(cpu.get('server'))}{extra}, clients {' + '.join(clients)} "
            f"(while receiving: {' + '.join(busy)}), publisher {fmt(cpu.get('publisher'))}, "
            f"other processes {fmt(cpu.get('other_processes'))}, machine "
            f"{fmt(cpu.get('machine'))} over {fmt(cpu.get('wall_s'))} s"
        )
    return "\n".join(lines)


def step_rows(
    key: str, names: list[str], con: dict[str, Any], row: Callable[..., list[str]]
) -> list[list[str]]:
    """Scenario 4's rows for one step (``paced`` or ``saturation``) of every system."""
    steps = {n: dict(con[n].get(key) or {}) for n in names}
    label = next((steps[n]["step"] for n in names if steps[n]), key)

    def rate(n: str) -> Any:
        return steps[n].get("deliveries_per_s")

    def p99(n: str) -> Any:
        return (steps[n].get("latency_ms") or {}).get("p99")

    def loss(n: str) -> str:
        return f"{fmt(steps[n].get('deliveries_lost'))} / {fmt(steps[n].get('duplicates'))}"

    return [
        row(f"{label}: deliveries/s", lambda n: fmt(rate(n)), rate),
        row(f"{label}: p50/p99/p99.9 ms", lambda n: lat(steps[n] or None), p99),
        row(f"{label}: lost / duplicates", loss),
    ]


def connections_table(run: Run) -> str:
    systems = run.figures["systems"]
    names = [n for n in SYSTEMS if n in systems and systems[n].get("connections")]
    if not names:
        return "Scenario 4: not run"
    con = {n: systems[n]["connections"] for n in names}
    peers = [n for n in names if n != "herald"]
    has_herald = "herald" in names

    def row(
        label: str, cell: Callable[[str], str], key: Callable[[str], Any] | None = None
    ) -> list[str]:
        ratios = [ratio(key("herald"), key(p)) if key and has_herald else "" for p in peers]
        return [label, *(cell(n) for n in names), *ratios]

    def idle(n: str, part: str) -> Any:
        return con[n].get("idle", {}).get("cpu", {}).get(part)

    rows = [
        row("subscribers connected", lambda n: f"{con[n]['connected']:,}"),
        row("connect time (s)", lambda n: fmt(con[n].get("connect_s"))),
        row("connect errors", lambda n: json.dumps(con[n].get("connect_errors") or {})),
        row(
            "server RSS before → connected (MiB)",
            lambda n: (
                f"{fmt(con[n].get('rss_before_mib'))} → {fmt(con[n].get('rss_connected_mib'))}"
            ),
        ),
        row(
            "server RSS per connection (KiB)",
            lambda n: fmt(con[n].get("rss_per_connection_kib")),
            lambda n: con[n].get("rss_per_connection_kib"),
        ),
        row(
            "idle: server CPU/wall (other procs)",
            lambda n: f"{fmt(idle(n, 'server'))} ({fmt(idle(n, 'other_processes'))})",
            lambda n: idle(n, "server"),
        ),
        row("idle window (s)", lambda n: fmt(idle(n, "wall_s"))),
        row(
            "heartbeats/pings seen by clients",
            lambda n: fmt(con[n].get("close", {}).get("heartbeats")),
        ),
    ]
    for key in ("paced", "saturation"):
        rows += step_rows(key, names, con, row)
    facts = systems.get("herald", {}).get("facts", {})
    header = [f"{con[names[0]]['subscribers']:,} subscribers", *names]
    header += [f"herald/{p}" for p in peers] if has_herald else []
    if not has_herald:
        rows = [r[: 1 + len(names)] for r in rows]
    title = "Scenario 4: idle connections, then fan-out at this size"
    if facts.get("tokens_minted"):
        title += (
            f" (Herald tokens: {fmt(facts.get('tokens_minted'))} minted in "
            f"{fmt(facts.get('token_mint_s'))} s)"
        )
    return tabulate(title, header, rows)


def report(run: Run, failed: bool) -> None:
    figs = run.figures
    print()
    if figs.get("systems"):
        print(fanout_table(run))
        print()
        print(connections_table(run))
    facts = figs.get("machine", {})
    versions = {n: s.get("facts", {}).get("version") for n, s in figs.get("systems", {}).items()}
    print(
        f"machine: {facts.get('cpu_count')} cores, {facts.get('platform')}, python "
        f"{facts.get('python')}; versions: {json.dumps(versions)}; load average (1/5/15 min) "
        f"before {figs.get('load_before')} after {figs.get('load_after')}"
    )
    print(f"status: {run.status}")
    for note in run.notes:
        print("note:", note.rstrip()[-2000:])
    for name, sysfig in figs.get("systems", {}).items():
        if sysfig.get("log_problems"):
            print(f"{name} log warnings/errors (last lines):")
            for line in sysfig["log_problems"][-10:]:
                print("  " + line[:300])
    path = write_results(
        "fanout", status=run.status, failed=failed, args=run.args, notes=run.notes, **figs
    )
    print(f"results: {path}")


# -- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--big-subscribers", type=int, default=10000, help="0 skips scenario 4")
    parser.add_argument(
        "--rates",
        default="100,1000,10000,20000",
        help="fixed delivered rates (deliveries/s = msgs/s × subscribers)",
    )
    parser.add_argument(
        "--high-rate",
        type=int,
        default=100000,
        help="delivered rate run only when the saturation median reaches it (0: never)",
    )
    parser.add_argument("--step-seconds", type=float, default=3.0, help="length of a rate step")
    parser.add_argument("--runs", type=int, default=5, help="saturation runs (after a probe)")
    parser.add_argument(
        "--saturation-messages", type=int, default=30, help="messages in the probe burst"
    )
    parser.add_argument(
        "--saturation-seconds", type=float, default=3.0, help="target length of later runs"
    )
    parser.add_argument("--batch-size", type=int, default=50, help="Herald batch publishes")
    parser.add_argument(
        "--big-systems",
        default="herald,mosquitto",
        help="systems run at --big-subscribers (default: herald,mosquitto)",
    )
    parser.add_argument("--big-rate", type=int, default=20000, help="deliveries/s at 10,000")
    parser.add_argument(
        "--big-messages", type=int, default=20, help="saturation messages at 10,000"
    )
    parser.add_argument("--idle-seconds", type=float, default=25.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="paced publishes in flight")
    parser.add_argument("--connect-concurrency", type=int, default=64, help="per client process")
    parser.add_argument(
        "--drain", type=float, default=15.0, help="seconds after a step's last send"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--mqtt-client",
        choices=("raw", "aiomqtt"),
        default="raw",
        help="Mosquitto subscribers: a minimal MQTT 3.1.1 client on an asyncio protocol "
        "(default; as lean as the raw websockets clients) or aiomqtt",
    )
    parser.add_argument("--timeout", type=float, default=0.0, help="hard limit (s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1-2 minutes")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers = min(args.subscribers, 200)
        args.big_subscribers = min(args.big_subscribers, 1000)
        args.rates, args.runs, args.high_rate = "1000,4000", 1, 0
        args.saturation_messages, args.idle_seconds = 50, 5.0
        args.step_seconds = 2.0
        args.big_rate, args.big_messages = 5000, 10
    if not args.timeout:
        args.timeout = 240.0 if args.quick else 720.0
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.big_systems = [s.strip() for s in args.big_systems.split(",") if s.strip()]
    unknown = (set(args.systems) | set(args.big_systems)) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.rates = [int(r) for r in str(args.rates).split(",") if r.strip()]
    if args.subscribers < 1 or args.client_procs < 1 or args.runs < 1:
        parser.error("--subscribers, --client-procs and --runs must be at least 1")
    if not args.redis_url.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("--redis-url must point at the loopback interface")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Last resort: whatever hangs, SIGALRM unwinds us (finally blocks stop everything).
    signal.signal(signal.SIGALRM, raise_keyboard_interrupt)
    signal.alarm(int(args.timeout) + ALARM_GRACE)
    run = Run(args=args, deadline=time.time() + args.timeout)
    needed = max(args.subscribers, args.big_subscribers) + 256  # servers inherit the limit
    soft = raise_nofile(needed)
    if soft < needed:
        print(f"open-file limit {soft} < {needed} needed; raise ulimit -Hn", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="herald-fanout-"))
    failed = False
    run.figures["load_before"] = [round(x, 2) for x in os.getloadavg()]
    if importlib.util.find_spec("psutil") is None:
        print("package 'psutil' is not installed (pip install psutil): RSS figures are n/a")
    try:
        tls = make_tls(tmp)
        with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
            runner.run(run_all(run, tls, tmp))
        run.status = "TIMED OUT (--timeout)" if run.timed_out else "finished"
    except KeyboardInterrupt:
        run.timed_out = time.time() >= run.deadline
        cause = "SIGALRM after --timeout" if run.timed_out else "interrupted"
        run.status = f"{cause} while {run.status}"
        failed = True
    except ImportError as exc:  # trustme (the CA) is needed by every system
        run.status = (
            f"cannot run: package {exc.name!r} is not installed (pip install {pip_name(exc.name)})"
        )
        failed = True
    except Exception as exc:
        run.status = f"failed while {run.status}: {type(exc).__name__}: {exc}"
        run.notes.append(traceback.format_exc())
        failed = True
    finally:
        if run.procs:
            stop_processes(run.procs, run.stop, run.queue)
        for system in run.systems:
            with contextlib.suppress(Exception):
                system.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.alarm(0)
    run.figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    failed = failed or any("error" in s for s in run.figures.get("systems", {}).values())
    report(run, failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
