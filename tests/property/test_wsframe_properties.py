"""The pre-built WebSocket text frames against ``websockets``' own serialiser and parser.

A frame Herald writes to many sockets must be exactly what ``websockets`` would have
written for that one message, and a client must read it back as the same text, for every
length encoding (RFC 6455 §5.2: 7-bit, 16-bit and 64-bit payload lengths).
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from herald.bus.base import LiveMessage
from herald.core.wsframe import text_frame

# Around every boundary of the length encodings, and some way beyond them.
_BOUNDARIES = (0, 1, 125, 126, 127, 65_535, 65_536, 65_537)
lengths = st.one_of(
    st.sampled_from(_BOUNDARIES),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=65_530, max_value=70_000),
)
texts = st.text(max_size=300)


def _client() -> ClientProtocol:
    """A client past its handshake: it refuses masked server frames and invalid UTF-8."""
    return ClientProtocol(parse_uri("wss://127.0.0.1/v1/stream"), state=State.OPEN, max_size=None)


def _read_one(data: bytes) -> Frame:
    client = _client()
    client.receive_data(data)
    events = client.events_received()
    assert client.parser_exc is None
    assert len(events) == 1
    frame = events[0]
    assert isinstance(frame, Frame)
    return frame


@settings(max_examples=200)
@given(texts)
@example("")
@example("é" * 63)  # 126 bytes: the first 16-bit length
def test_text_frame_is_what_websockets_serialises_and_reads_back(text: str) -> None:
    payload = text.encode()
    frame = text_frame(payload)
    assert frame == Frame(Opcode.TEXT, payload).serialize(mask=False)
    parsed = _read_one(frame)
    assert parsed.opcode is Opcode.TEXT
    assert parsed.fin
    assert (parsed.rsv1, parsed.rsv2, parsed.rsv3) == (False, False, False)
    assert bytes(parsed.data).decode() == text


@settings(max_examples=60)
@given(lengths)
def test_every_length_encoding_is_minimal_and_parses(length: int) -> None:
    payload = b"x" * length
    frame = text_frame(payload)
    header = 2 if length < 126 else 4 if length < 65_536 else 10
    assert len(frame) == header + length
    assert frame[0] == 0x81  # FIN, no RSV bits, opcode 1 (text)
    assert frame[1] & 0x80 == 0  # server frames are not masked (RFC 6455 §5.1)
    assert frame == Frame(Opcode.TEXT, payload).serialize(mask=False)
    assert bytes(_read_one(frame).data) == payload


@settings(max_examples=50)
@given(st.lists(texts, min_size=1, max_size=8))
def test_back_to_back_frames_in_one_write_read_as_separate_messages(items: list[str]) -> None:
    """The raw sender joins queued frames into one write: a client still sees each one."""
    client = _client()
    client.receive_data(b"".join(text_frame(item.encode()) for item in items))
    got = [
        bytes(event.data).decode() for event in client.events_received() if isinstance(event, Frame)
    ]
    assert client.parser_exc is None
    assert got == items


def _message(frame: str, per_recipient: dict[str, tuple[str, bytes]] | None = None) -> LiveMessage:
    return LiveMessage(
        tenant_id="t",
        topic="a.b",
        seq=1,
        id="m",
        recipients=tuple(per_recipient or ()),
        frame=frame,
        sse=b"",
        published_at=0.0,
        per_recipient=per_recipient,
    )


@given(texts)
def test_live_message_frames_once_for_everyone(text: str) -> None:
    message = _message(text)
    first = message.ws_frame("alice")
    assert first is message.ws_frame("bob")  # one object: framed once, written many times
    assert bytes(_read_one(first).data).decode() == text


@given(texts, texts)
def test_live_message_frames_each_recipient_its_own_text(alice: str, bob: str) -> None:
    message = _message("", {"alice": (alice, b""), "bob": (bob, b"")})
    assert bytes(_read_one(message.ws_frame("alice")).data).decode() == alice
    assert bytes(_read_one(message.ws_frame("bob")).data).decode() == bob
    assert message.ws_frame("alice") is message.ws_frame("alice")
