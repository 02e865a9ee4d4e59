"""The client harness of ``bench.fanout``: subscriber processes, the same for every system.

Each spawned process (uvloop when installed) opens its share of subscribers, then obeys the
parent's commands on its own queue:

* ``("step", k, lo, hi)``: sequence numbers ``lo … hi-1`` belong to step ``k``; answers
  ``("ack:k", index)`` so the parent publishes only once every process knows the step;
* ``("await", k, expected, until)``: waits until every open subscriber has ``expected``
  messages of step ``k`` (or ``until``), then answers ``("done:k", index, figures,
  latencies, (sent, first, last))``: the receive latencies, and per message of the step its
  send time and this process's first and last receipt, all as packed doubles;
* ``("quit",)``: answers ``("bye", index, counters)`` and closes its connections.

The subscribers speak each system's protocol with as little client work as possible: raw
``websockets`` for Herald's ``/v1/stream`` and for Engine.IO 4 / Socket.IO 5, and a minimal
MQTT 3.1.1 QoS 0 subscriber on an asyncio protocol for Mosquitto (``aiomqtt`` on request).
Every message's payload has ``{"t": send time, "seq": n}``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import queue
import resource
import signal
import ssl
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from bench._common import HOST, open_stream, raise_nofile, uvloop_factory
from bench._peers import EVENT
from bench.publish_deliver import busy_window

MQTT_TOPIC = "bench/fanout"
MAX_STEPS = 64  # steps per client session (warm-up, ladder, saturation runs, ...)
SAMPLE_PERIOD = 0.1  # seconds between CPU samples in the client processes


# -- bookkeeping --------------------------------------------------------------------


class FrameData(msgspec.Struct):
    t: float = 0.0
    seq: int = -1


class HeraldFrame(msgspec.Struct):
    """The parts of a Herald stream frame the subscribers look at (the rest is skipped)."""

    type: str = ""
    data: FrameData | None = None


@dataclass
class ChildConfig:
    system: str
    index: int
    url: str  # wss://… for herald and socketio, the broker's port for mosquitto
    ca: str
    credentials: list[str]  # herald: subscriber tokens; others: client ids
    capacity: int  # sequence numbers 0 … capacity-1 may be published in this session
    connect_concurrency: int
    deadline: float
    mqtt_client: str = "raw"  # or "aiomqtt"


class Sub:
    """One subscriber: which sequence numbers it has and how many per step."""

    __slots__ = ("closed", "conn", "counts", "seen")

    def __init__(self, conn: Any, capacity: int) -> None:
        self.conn = conn
        self.seen = bytearray(capacity)
        self.counts = array.array("i", [0] * MAX_STEPS)
        self.closed = False


@dataclass
class StepState:
    started: float  # monotonic
    sample_index: int
    total_before: int
    lo: int = 0  # the step's sequence numbers: lo … hi-1
    hi: int = 0
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    received: int = 0
    duplicates: int = 0
    frame_bytes: int = 0
    first: float | None = None
    last: float | None = None


async def socketio_handshake(ws: Any) -> None:
    """Engine.IO 4 open packet, then Socket.IO 5 CONNECT to ``/`` until its ack."""
    opened = await asyncio.wait_for(ws.recv(), 20)
    if not isinstance(opened, str) or not opened.startswith("0{"):
        raise RuntimeError(f"expected an Engine.IO open packet, got {str(opened)[:40]!r}")
    await ws.send("40")  # Socket.IO CONNECT to the default namespace
    while True:
        reply = await asyncio.wait_for(ws.recv(), 20)
        if isinstance(reply, str) and reply.startswith("40"):
            return  # CONNECT ack: the server's connect handler has joined the room
        if reply == "2":
            await ws.send("3")
        elif isinstance(reply, str) and reply.startswith("44"):
            raise RuntimeError(f"Socket.IO connect refused: {reply[:80]}")


class Child:
    """The subscribers of one client process and their bookkeeping."""

    def __init__(self, cfg: ChildConfig, out: Any, cmd: Any, stop: Any) -> None:
        self.cfg, self.out, self.cmd, self.stop = cfg, out, cmd, stop
        self.step_of = array.array("i", [-1]) * cfg.capacity
        # Per message: its send time, and this process's first and last receipt.
        self.sent = array.array("d", [0.0]) * cfg.capacity
        self.first_at = array.array("d", [0.0]) * cfg.capacity
        self.last_at = array.array("d", [0.0]) * cfg.capacity
        self.steps: dict[int, StepState] = {}
        self.subs: list[Sub] = []
        self.total = 0
        self.stray = 0
        self.heartbeats = 0
        self.other: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.stopping = False
        self.samples: list[tuple[float, float, int]] = []
        self.stack = contextlib.AsyncExitStack()

    def got(self, sub: Sub, t: float, seq: int, size: int) -> None:
        now = time.time()
        if not 0 <= seq < self.cfg.capacity or (k := self.step_of[seq]) < 0:
            self.stray += 1
            return
        st = self.steps[k]
        if sub.seen[seq]:
            st.duplicates += 1
            return
        sub.seen[seq] = 1
        sub.counts[k] += 1
        self.total += 1
        st.received += 1
        st.frame_bytes += size
        st.latencies.append(now - t)
        self.sent[seq] = t
        if not self.first_at[seq]:  # receipts come in time order within one process
            self.first_at[seq] = now
        self.last_at[seq] = now
        if st.first is None:
            st.first = now
        st.last = now

    def closed(self, sub: Sub, reason: str | None) -> None:
        sub.closed = True
        if not self.stopping:
            self.closes[reason or "closed by the server"] += 1

    # -- connecting, one opener per system -----------------------------------------------

    async def open_herald(self, ctx: ssl.SSLContext, token: str) -> Any:
        return await open_stream(self.cfg.url, ctx, token)

    async def open_socketio(self, ctx: ssl.SSLContext, _cid: str) -> Any:
        from websockets.asyncio.client import connect

        ws = await connect(
            self.cfg.url,
            ssl=ctx,
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=20,
            close_timeout=2,
            max_size=1 << 20,
            user_agent_header="herald-bench",
        )
        try:
            await socketio_handshake(ws)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def open_mqtt_raw(self, ctx: ssl.SSLContext, cid: str) -> Any:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: MqttSubscriber(self, cid),
                HOST,
                int(self.cfg.url),
                ssl=ctx,
                server_hostname=HOST,
            ),
            20,
        )
        try:
            await asyncio.wait_for(proto.ready, 20)
        except BaseException:
            proto.close()
            raise
        return proto

    async def open_mqtt(self, ctx: ssl.SSLContext, cid: str) -> Any:
        import aiomqtt

        client = aiomqtt.Client(
            HOST, int(self.cfg.url), identifier=cid, tls_context=ctx, keepalive=60, timeout=20
        )
        await self.stack.enter_async_context(client)
        await client.subscribe(MQTT_TOPIC, qos=0)
        return client

    # -- reading, one reader per system --------------------------------------------------

    async def read_herald(self, sub: Sub) -> None:
        from websockets.exceptions import ConnectionClosed

        decode = msgspec.json.Decoder(HeraldFrame).decode
        reason = None
        try:
            async for raw in sub.conn:
                frame = decode(raw)
                if frame.type == "message" and frame.data is not None:
                    self.got(sub, frame.data.t, frame.data.seq, len(raw))
                elif frame.type == "heartbeat":
                    self.heartbeats += 1
                else:
                    self.other[frame.type] += 1
            reason = f"close code {sub.conn.close_code}"
        except ConnectionClosed:
            reason = f"close code {sub.conn.close_code}"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:80]}"
        self.closed(sub, reason)

    async def read_socketio(self, sub: Sub) -> None:
        from websockets.exceptions import ConnectionClosed

        decode = msgspec.json.Decoder(tuple[str, FrameData]).decode
        reason = None
        try:
            async for raw in sub.conn:
                if raw == "2":  # Engine.IO ping: answer pong
                    self.heartbeats += 1
                    await sub.conn.send("3")
                elif raw[:2] == "42":  # Socket.IO EVENT ["msg", {...}]
                    name, data = decode(raw[2:])
                    if name == EVENT:
                        self.got(sub, data.t, data.seq, len(raw))
                    else:
                        self.other[name] += 1
                else:
                    self.other[str(raw[:2])] += 1
            reason = f"close code {sub.conn.close_code}"
        except ConnectionClosed:
            reason = f"close code {sub.conn.close_code}"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:80]}"
        self.closed(sub, reason)

    async def read_mqtt_raw(self, sub: Sub) -> None:
        sub.conn.sub = sub
        self.closed(sub, await sub.conn.lost)

    async def read_mqtt(self, sub: Sub) -> None:
        decode = msgspec.json.Decoder(FrameData).decode
        reason = None
        try:
            async for message in sub.conn.messages:
                payload = message.payload
                data = decode(payload)
                self.got(sub, data.t, data.seq, len(payload))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:80]}"
        self.closed(sub, reason)

    # -- the process ---------------------------------------------------------------------

    async def connect_all(self) -> Counter[str]:
        cfg = self.cfg
        ctx = ssl.create_default_context(cafile=cfg.ca)
        opener: Callable[[ssl.SSLContext, str], Any] = {
            "herald": self.open_herald,
            "socketio": self.open_socketio,
            "mosquitto": self.open_mqtt if cfg.mqtt_client == "aiomqtt" else self.open_mqtt_raw,
        }[cfg.system]
        sem = asyncio.Semaphore(cfg.connect_concurrency)
        errors: Counter[str] = Counter()

        async def one(credential: str) -> Any:
            async with sem:
                return await opener(ctx, credential)

        tasks = [asyncio.create_task(one(c)) for c in cfg.credentials]
        _, pending = await asyncio.wait(tasks, timeout=max(0.1, cfg.deadline - time.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task in pending:
                errors["timeout (hard deadline)"] += 1
            elif (exc := task.exception()) is not None:
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            else:
                self.subs.append(Sub(task.result(), cfg.capacity))
        return errors

    async def sampler(self) -> None:
        while True:
            self.samples.append((time.monotonic(), time.process_time(), self.total))
            await asyncio.sleep(SAMPLE_PERIOD)

    async def run(self) -> None:
        cfg = self.cfg
        wall0, cpu0 = time.monotonic(), time.process_time()
        errors = await self.connect_all()
        wall1, cpu1 = time.monotonic(), time.process_time()
        reader = {
            "herald": self.read_herald,
            "socketio": self.read_socketio,
            "mosquitto": self.read_mqtt if cfg.mqtt_client == "aiomqtt" else self.read_mqtt_raw,
        }[cfg.system]
        readers = [asyncio.create_task(reader(sub)) for sub in self.subs]
        sampler = asyncio.create_task(self.sampler())
        info = {
            "connected": len(self.subs),
            "connect_errors": dict(errors),
            "connect_s": round(wall1 - wall0, 3),
            "connect_cpu_per_wall": round((cpu1 - cpu0) / max(wall1 - wall0, 1e-9), 3),
        }
        self.out.put(("ready", cfg.index, info))
        try:
            await self.commands()
        finally:
            self.stopping = True
            sampler.cancel()
            bye = {
                "heartbeats": self.heartbeats,
                "stray_frames": self.stray,
                "other_frames": dict(self.other),
                "unexpected_closes": dict(self.closes),
                "cpu_total_s": round(time.process_time(), 3),
                "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
            self.out.put(("bye", cfg.index, bye))
            await self.close_all(readers)

    async def close_all(self, readers: list[asyncio.Task[None]]) -> None:
        if self.cfg.system == "mosquitto" and self.cfg.mqtt_client == "aiomqtt":
            closing: Any = self.stack.aclose()
        elif self.cfg.system == "mosquitto":
            for sub in self.subs:
                sub.conn.close()
            closing = asyncio.sleep(0.5)  # let the DISCONNECTs and TLS close_notify go out
        else:
            closing = asyncio.gather(*(s.conn.close() for s in self.subs), return_exceptions=True)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(closing, 10)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def commands(self) -> None:
        while True:
            try:
                item = self.cmd.get_nowait()
            except queue.Empty:
                if self.stop.is_set() or time.time() >= self.cfg.deadline:
                    return
                await asyncio.sleep(0.02)
                continue
            if item[0] == "step":
                _, k, lo, hi = item
                self.steps[k] = StepState(
                    time.monotonic(), len(self.samples), self.total, lo=lo, hi=hi
                )
                self.step_of[lo:hi] = array.array("i", [k]) * (hi - lo)
                self.out.put((f"ack:{k}", self.cfg.index))
            elif item[0] == "await":
                await self.await_step(item[1], item[2], item[3])
            else:
                return

    async def await_step(self, k: int, expected: int, until: float) -> None:
        st = self.steps[k]
        outcome = "complete"
        while True:
            open_subs = [s for s in self.subs if not s.closed]
            if st.received >= expected * len(open_subs) and all(
                s.counts[k] >= expected for s in open_subs
            ):
                break
            if time.time() >= min(until, self.cfg.deadline) or self.stop.is_set():
                outcome = "drain timeout" if not self.stop.is_set() else "stopped"
                break
            await asyncio.sleep(0.02)
        self.samples.append((time.monotonic(), time.process_time(), self.total))
        window = [(w, c, n - st.total_before) for w, c, n in self.samples[st.sample_index :]]
        result = {
            "index": self.cfg.index,
            "outcome": outcome,
            "open_conns": sum(not s.closed for s in self.subs),
            "received": st.received,
            "duplicates": st.duplicates,
            "frame_bytes": st.frame_bytes,
            "first_recv": st.first,
            "last_recv": st.last,
            "per_conn_min": min((s.counts[k] for s in self.subs), default=0),
            "cpu": busy_window(window),
        }
        per_message = tuple(
            a[st.lo : st.hi].tobytes() for a in (self.sent, self.first_at, self.last_at)
        )
        self.out.put((f"done:{k}", self.cfg.index, result, st.latencies.tobytes(), per_message))
        del self.steps[k].latencies[:]


# -- a minimal MQTT 3.1.1 subscriber (QoS 0) ---------------------------------------------


def mqtt_length(n: int) -> bytes:
    """MQTT's variable-length "remaining length" (MQTT 3.1.1 §2.2.3)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (128 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt_connect(client_id: str, keepalive: int) -> bytes:
    # §3.1: protocol name "MQTT", level 4, flags: clean session; then the client id.
    body = mqtt_string("MQTT") + bytes([4, 0x02]) + keepalive.to_bytes(2, "big")
    body += mqtt_string(client_id)
    return b"\x10" + mqtt_length(len(body)) + body


def mqtt_subscribe(topic: str) -> bytes:
    body = (1).to_bytes(2, "big") + mqtt_string(topic) + b"\x00"  # §3.8: packet id 1, QoS 0
    return b"\x82" + mqtt_length(len(body)) + body


MQTT_KEEPALIVE = 60  # seconds; a PINGREQ goes out every half of it
MQTT_PINGREQ, MQTT_DISCONNECT = b"\xc0\x00", b"\xe0\x00"


class MqttSubscriber(asyncio.Protocol):
    """CONNECT, SUBSCRIBE (QoS 0), then parse PUBLISH packets straight from the buffer."""

    def __init__(self, child: Child, client_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.child, self.client_id = child, client_id
        self.buf = bytearray()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[str | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.sub: Sub | None = None
        self.decode = msgspec.json.Decoder(FrameData).decode
        self.pinger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        self.transport.write(mqtt_connect(self.client_id, MQTT_KEEPALIVE))
        self.pinger = asyncio.get_running_loop().call_later(MQTT_KEEPALIVE / 2, self.ping)

    def ping(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(MQTT_PINGREQ)
            self.pinger = asyncio.get_running_loop().call_later(MQTT_KEEPALIVE / 2, self.ping)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while i < size:  # §2.2.3 remaining length
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if byte < 0x80:
                    break
            else:
                break
            end = i + length
            if end > size:
                break
            kind = buf[pos] >> 4
            if kind == 3:  # PUBLISH: topic, (packet id for QoS > 0), payload
                start = i + 2 + ((buf[i] << 8) | buf[i + 1])
                if buf[pos] & 0x06:
                    start += 2
                self.message(bytes(buf[start:end]))
            else:
                self.control(kind, bytes(buf[i:end]))
            pos = end
        del buf[:pos]

    def control(self, kind: int, body: bytes) -> None:
        """CONNACK: subscribe; SUBACK: ready. PINGRESP and the rest need nothing."""
        if kind == 2:
            if body[1] != 0:
                self.fail(f"CONNACK return code {body[1]}")
            elif self.transport is not None:
                self.transport.write(mqtt_subscribe(MQTT_TOPIC))
        elif kind == 9 and not self.ready.done():
            if body[-1] == 0x80:
                self.fail("SUBACK refused the subscription")
            else:
                self.ready.set_result(None)

    def message(self, payload: bytes) -> None:
        if self.sub is None:
            self.child.stray += 1
            return
        data = self.decode(payload)
        self.child.got(self.sub, data.t, data.seq, len(payload))

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(reason))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
        reason = None if exc is None else f"{type(exc).__name__}: {str(exc)[:80]}"
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(reason or "closed before SUBACK"))
        if not self.lost.done():
            self.lost.set_result(reason)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(MQTT_DISCONNECT)
            self.transport.close()


def child_main(cfg: ChildConfig, out: Any, cmd: Any, stop: Any) -> None:
    """Entry point of one client process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    raise_nofile(len(cfg.credentials) + 64)
    try:
        with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
            runner.run(Child(cfg, out, cmd, stop).run())
    except BaseException:
        out.put(("error", cfg.index, traceback.format_exc()))
