"""Hypothesis properties of herald.crypto.e2e: round trips, tamper and move detection, strict
base64url, injective info."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from herald.crypto.e2e import (
    ENC_LEN,
    MAX_PLAINTEXT,
    TAG_LEN,
    b64url_decode,
    b64url_encode,
    decode_plaintext,
    e2e_info,
    encode_plaintext,
    open_for_device,
    seal_for_device,
)
from herald.errors import BadRequest, DecryptionFailed

DEVICE = X25519PrivateKey.generate()
PUBLIC = DEVICE.public_key().public_bytes_raw()

plaintexts = st.binary(max_size=2048)
ids = st.text(max_size=64)
id_triples = st.tuples(ids, ids, ids)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_objects = st.dictionaries(st.text(max_size=10), json_scalars, max_size=5)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(plaintext=plaintexts, triple=id_triples)
def test_seal_open_round_trip(plaintext: bytes, triple: tuple[str, str, str]) -> None:
    message_id, recipient, device_id = triple
    enc, ct = seal_for_device(
        PUBLIC, plaintext, message_id=message_id, recipient=recipient, device_id=device_id
    )
    assert len(enc) == ENC_LEN
    assert len(ct) == len(plaintext) + TAG_LEN
    opened = open_for_device(
        DEVICE, enc, ct, message_id=message_id, recipient=recipient, device_id=device_id
    )
    assert opened == plaintext


@given(plaintext=st.binary(max_size=256), triple=id_triples, data=st.data())
def test_any_single_bit_flip_fails(
    plaintext: bytes, triple: tuple[str, str, str], data: st.DataObject
) -> None:
    message_id, recipient, device_id = triple
    enc, ct = seal_for_device(
        PUBLIC, plaintext, message_id=message_id, recipient=recipient, device_id=device_id
    )
    bit = data.draw(st.integers(0, (len(enc) + len(ct)) * 8 - 1), label="bit")
    blob = flip(enc + ct, bit)
    with pytest.raises(DecryptionFailed):
        open_for_device(
            DEVICE,
            blob[:ENC_LEN],
            blob[ENC_LEN:],
            message_id=message_id,
            recipient=recipient,
            device_id=device_id,
        )


@given(plaintext=st.binary(max_size=64), sealed_for=id_triples, opened_as=id_triples)
def test_other_ids_fail(
    plaintext: bytes, sealed_for: tuple[str, str, str], opened_as: tuple[str, str, str]
) -> None:
    assume(sealed_for != opened_as)
    enc, ct = seal_for_device(
        PUBLIC,
        plaintext,
        message_id=sealed_for[0],
        recipient=sealed_for[1],
        device_id=sealed_for[2],
    )
    with pytest.raises(DecryptionFailed):
        open_for_device(
            DEVICE,
            enc,
            ct,
            message_id=opened_as[0],
            recipient=opened_as[1],
            device_id=opened_as[2],
        )


@given(a=id_triples, b=id_triples)
def test_info_is_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert (e2e_info(*a) == e2e_info(*b)) == (a == b)


@given(data=st.binary(max_size=300))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert b64url_decode(text) == data


@given(text=st.text(alphabet="ABCabc019-_+/= \n", max_size=12))
def test_b64url_decode_accepts_only_canonical_text(text: str) -> None:
    try:
        data = b64url_decode(text)
    except BadRequest:
        return
    assert b64url_encode(data) == text


@given(
    title=st.none() | st.text(max_size=50),
    body=st.none() | st.text(max_size=50),
    data=st.none() | json_objects,
)
def test_plaintext_round_trip(
    title: str | None, body: str | None, data: dict[str, object] | None
) -> None:
    encoded = encode_plaintext(title, body, data)
    assert len(encoded) <= MAX_PLAINTEXT
    assert decode_plaintext(encoded) == (title, body, data)
