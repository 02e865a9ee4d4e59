"""Parsers of untrusted input refuse anything with their typed refusal, and nothing else.

Bearer tokens (all three kinds), WebSocket client frames, publish requests and recipient
requests: whatever the bytes, the only exception is the boundary's own (``InvalidToken``,
a msgspec decode error the stream answers as a problem, or ``BadRequest``), never a crash.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.messages import PublishRequest, decode_json, validate_publish
from herald.crypto.signing import PURPOSE_TOKEN, LoadedSigningKey, jwk_thumbprint
from herald.crypto.tokens import TokenService
from herald.errors import BadRequest, InvalidToken
from herald.server.streams import _FRAME_DECODER
from herald.service.recipients import RecipientRequest


def make_key() -> LoadedSigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return LoadedSigningKey(jwk_thumbprint(raw), PURPOSE_TOKEN, private, raw, datetime.now(UTC))


_SERVICE = TokenService(
    issuer="https://herald.test",
    keys=[make_key()],
    clock=time.time,
    new_jti=lambda: "jti",
)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def _segment(value: Any) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_jwt_shaped = st.builds(
    lambda header, claims, sig: f"{_segment(header)}.{_segment(claims)}.{sig}",
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "jku", "jwk", "crit", "x5u"]),
        _json_values,
        max_size=5,
    ),
    st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "jti", "tenant", "scope"]),
        _json_values,
        max_size=9,
    ),
    st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=90),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), _jwt_shaped))
def test_any_bearer_text_is_an_invalid_token_or_nothing(token: str) -> None:
    for verify in (_SERVICE.verify_access, _SERVICE.verify_subscriber, _SERVICE.verify_operator):
        try:
            verify(token)
        except InvalidToken:
            continue
        raise AssertionError(f"accepted {token!r}")  # nothing here is signed by the key
    assert _SERVICE.kind_of(token) in {None, "access", "subscriber", "operator"}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), _json_values.map(json.dumps)))
def test_client_frames_are_decoded_or_refused_by_msgspec(text: str) -> None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        _FRAME_DECODER.decode(text)


def test_deeply_nested_client_frames_are_refused() -> None:
    for text in ("[" * 100_000, '{"type":"subscribe","topics":' + "[" * 100_000):
        try:
            _FRAME_DECODER.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        raise AssertionError("a hostile frame decoded")


_publish_like = st.fixed_dictionaries(
    {},
    optional={
        "topic": _json_values,
        "title": _json_values,
        "body": _json_values,
        "data": _json_values,
        "priority": st.sampled_from(["low", "normal", "high", "urgent", "x", 3]),
        "ttl": _json_values,
        "recipients": _json_values,
        "channels": _json_values,
        "deliver_at": _json_values,
        "id": _json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _publish_like.map(lambda v: json.dumps(v).encode())))
def test_publish_requests_are_valid_or_a_bad_request(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):
        validate_publish(decode_json(raw, PublishRequest))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.fixed_dictionaries(
            {}, optional={"endpoints": _json_values, "preferences": _json_values}
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_recipient_requests_decode_or_are_a_bad_request(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):  # the 400 of every decode failure
        decode_json(raw, RecipientRequest)
