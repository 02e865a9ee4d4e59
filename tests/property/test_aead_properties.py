"""Hypothesis properties of herald.crypto.aead: round trips, tamper detection, AAD injectivity."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.crypto.aead import (
    KEY_VERSION_MAX,
    OVERHEAD,
    Sealer,
    aad_for,
    open_sealed,
    peek_key_version,
    seal,
)
from herald.errors import DecryptionFailed

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=12, max_size=12)
versions = st.integers(min_value=0, max_value=KEY_VERSION_MAX)
plaintexts = st.binary(max_size=512)
aads = st.binary(max_size=256)
parts = st.text(max_size=40)


def fixed(nonce: bytes) -> Callable[[int], bytes]:
    return lambda n: nonce[:n]


@given(key=keys, version=versions, plaintext=plaintexts, aad=aads, nonce=nonces)
def test_seal_open_round_trip(
    key: bytes, version: int, plaintext: bytes, aad: bytes, nonce: bytes
) -> None:
    blob = seal(key, version, plaintext, aad, fixed(nonce))
    assert len(blob) == len(plaintext) + OVERHEAD
    assert peek_key_version(blob) == version
    assert open_sealed(key, blob, aad) == plaintext


@given(
    key=keys,
    version=versions,
    plaintext=st.binary(max_size=64),
    aad=aads,
    nonce=nonces,
    data=st.data(),
)
def test_any_single_bit_flip_in_the_blob_fails(
    *, key: bytes, version: int, plaintext: bytes, aad: bytes, nonce: bytes, data: st.DataObject
) -> None:
    blob = bytearray(seal(key, version, plaintext, aad, fixed(nonce)))
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1), label="bit")
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionFailed):
        open_sealed(key, bytes(blob), aad)


@given(key=keys, plaintext=st.binary(max_size=64), aad=st.binary(min_size=1), data=st.data())
def test_any_single_bit_flip_in_the_aad_fails(
    key: bytes, plaintext: bytes, aad: bytes, data: st.DataObject
) -> None:
    blob = seal(key, 1, plaintext, aad, fixed(b"\x00" * 12))
    bit = data.draw(st.integers(min_value=0, max_value=len(aad) * 8 - 1), label="bit")
    other = bytearray(aad)
    other[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionFailed):
        open_sealed(key, blob, bytes(other))


@given(key=keys, other=keys, plaintext=plaintexts, aad=aads, nonce=nonces)
def test_another_key_fails(
    *, key: bytes, other: bytes, plaintext: bytes, aad: bytes, nonce: bytes
) -> None:
    blob = seal(key, 1, plaintext, aad, fixed(nonce))
    if other != key:
        with pytest.raises(DecryptionFailed):
            open_sealed(other, blob, aad)


@given(blob=st.binary(max_size=80), key=keys, aad=aads)
def test_arbitrary_bytes_never_open_and_only_raise_decryption_failed(
    blob: bytes, key: bytes, aad: bytes
) -> None:
    with pytest.raises(DecryptionFailed):
        open_sealed(key, blob, aad)


@given(a=st.tuples(parts, parts, parts, parts), b=st.tuples(parts, parts, parts, parts))
def test_aad_for_is_injective(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    def encode(p: tuple[str, ...]) -> bytes:
        return aad_for(tenant_id=p[0], record_id=p[1], field=p[2], purpose=p[3])

    assert (encode(a) == encode(b)) == (a == b)


@given(
    keyset=st.dictionaries(versions, keys, min_size=1, max_size=4),
    plaintext=plaintexts,
    aad=aads,
    data=st.data(),
)
def test_sealer_round_trip_with_any_current_version(
    keyset: dict[int, bytes], plaintext: bytes, aad: bytes, data: st.DataObject
) -> None:
    current = data.draw(st.sampled_from(sorted(keyset)), label="current")
    sealer = Sealer(keyset, current, fixed(data.draw(nonces, label="nonce")))
    blob = sealer.seal(plaintext, aad)
    assert peek_key_version(blob) == current
    assert sealer.open(blob, aad) == plaintext
    assert open_sealed(keyset[current], blob, aad) == plaintext
