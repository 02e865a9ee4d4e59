"""herald.crypto.aead: layout, binding, opaque failures, and known-answer vectors."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from herald.crypto import aead
from herald.crypto.aead import (
    FORMAT_V1,
    HEADER_LEN,
    OVERHEAD,
    SEAL_SOFT_LIMIT,
    KeyExhausted,
    Sealer,
    aad_for,
    open_sealed,
    peek_key_version,
    seal,
)
from herald.errors import DecryptionFailed, HeraldError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AAD = aad_for(tenant_id="t1", record_id="r1", field="body")


def counter_randbytes() -> Callable[[int], bytes]:
    """Deterministic, never-repeating fake RNG: 0, 1, 2, ... as big-endian n-byte strings."""
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def fixed(value: bytes) -> Callable[[int], bytes]:
    def randbytes(n: int) -> bytes:
        assert n == len(value)
        return value

    return randbytes


def expect_fail(fn: Callable[[], object]) -> DecryptionFailed:
    with pytest.raises(DecryptionFailed) as info:
        fn()
    return info.value


# --- constants and layout -------------------------------------------------------------------


def test_constants() -> None:
    assert (FORMAT_V1, HEADER_LEN, OVERHEAD) == (1, 17, 33)
    assert aead.SEAL_LIMIT == 2**32
    assert SEAL_SOFT_LIMIT == 2**31
    assert issubclass(KeyExhausted, HeraldError)


def test_all_exports_exist() -> None:
    assert sorted(aead.__all__) == sorted(set(aead.__all__))
    for name in aead.__all__:
        assert hasattr(aead, name)


def test_layout_byte_by_byte() -> None:
    nonce = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
    blob = seal(KEY, 0x01020304, b"hello", AAD, fixed(nonce))
    assert len(blob) == len(b"hello") + OVERHEAD
    assert blob[0] == 0x01
    assert blob[1:5] == bytes([1, 2, 3, 4])
    assert blob[5:17] == nonce
    # Independent reconstruction: GCM over (version byte || key version || aad).
    expected = AESGCM(KEY).encrypt(nonce, b"hello", b"\x01\x01\x02\x03\x04" + AAD)
    assert blob[HEADER_LEN:] == expected
    assert peek_key_version(blob) == 0x01020304


def test_round_trip_and_empty_plaintext() -> None:
    rb = counter_randbytes()
    for plaintext in (b"", b"x", b"hello world" * 100):
        blob = seal(KEY, 7, plaintext, AAD, rb)
        assert open_sealed(KEY, blob, AAD) == plaintext


def test_nonces_come_from_randbytes() -> None:
    rb = counter_randbytes()
    first = seal(KEY, 1, b"same", AAD, rb)
    second = seal(KEY, 1, b"same", AAD, rb)
    assert first[5:17] == (0).to_bytes(12, "big")
    assert second[5:17] == (1).to_bytes(12, "big")
    assert first != second


def test_seal_rejects_caller_bugs() -> None:
    rb = counter_randbytes()
    with pytest.raises(ValueError, match="32 bytes"):
        seal(b"k" * 16, 1, b"x", AAD, rb)
    with pytest.raises(ValueError, match="32-bit"):
        seal(KEY, -1, b"x", AAD, rb)
    with pytest.raises(ValueError, match="32-bit"):
        seal(KEY, 2**32, b"x", AAD, rb)
    with pytest.raises(ValueError, match="wrong number"):
        seal(KEY, 1, b"x", AAD, lambda n: b"\x00" * (n - 1))
    assert peek_key_version(seal(KEY, 2**32 - 1, b"x", AAD, rb)) == 2**32 - 1


# --- aad_for ----------------------------------------------------------------------------------


def test_aad_for_layout() -> None:
    got = aad_for(tenant_id="t", record_id="r1", field="fé")
    assert got == (b"herald/aad/v1\x00\x07content\x00\x01t\x00\x02r1\x00\x03f\xc3\xa9")


def test_aad_for_is_unambiguous() -> None:
    variants = {
        aad_for(tenant_id="a", record_id="bc", field="f"),
        aad_for(tenant_id="ab", record_id="c", field="f"),
        aad_for(tenant_id="a", record_id="b", field="cf"),
        aad_for(tenant_id="", record_id="abc", field="f"),
        aad_for(tenant_id="a", record_id="bc", field="f", purpose="contact"),
        aad_for(tenant_id="bc", record_id="a", field="f"),
    }
    assert len(variants) == 6


def test_aad_for_rejects_overlong_part() -> None:
    aad_for(tenant_id="x" * 0xFFFF, record_id="r", field="f")
    with pytest.raises(ValueError, match="65535"):
        aad_for(tenant_id="x" * 0x10000, record_id="r", field="f")


# --- failures are one opaque error ------------------------------------------------------------


def test_wrong_key() -> None:
    blob = seal(KEY, 1, b"secret", AAD, counter_randbytes())
    expect_fail(lambda: open_sealed(OTHER_KEY, blob, AAD))


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_wrong_key_length_on_open(length: int) -> None:
    blob = seal(KEY, 1, b"secret", AAD, counter_randbytes())
    expect_fail(lambda: open_sealed(b"k" * length, blob, AAD))


@pytest.mark.parametrize(
    "moved",
    [
        pytest.param({"record_id": "r2"}, id="another-row"),
        pytest.param({"tenant_id": "t2"}, id="another-tenant"),
        pytest.param({"field": "title"}, id="another-field"),
        pytest.param({"purpose": "contact"}, id="another-purpose"),
    ],
)
def test_moved_ciphertext_fails(moved: dict[str, str]) -> None:
    where = {"tenant_id": "t1", "record_id": "r1", "field": "body", "purpose": "content"}
    blob = seal(KEY, 1, b"secret", aad_for(**where), counter_randbytes())
    expect_fail(lambda: open_sealed(KEY, blob, aad_for(**(where | moved))))


def test_key_version_swapped_in_header_fails_even_with_the_same_key() -> None:
    # Versions 1 and 2 deliberately share key bytes: only the header binding stops the swap.
    sealer = Sealer({1: KEY, 2: KEY}, 1, counter_randbytes())
    blob = sealer.seal(b"secret", AAD)
    swapped = blob[:1] + (2).to_bytes(4, "big") + blob[5:]
    assert peek_key_version(swapped) == 2
    expect_fail(lambda: sealer.open(swapped, AAD))
    expect_fail(lambda: open_sealed(KEY, swapped, AAD))
    assert sealer.open(blob, AAD) == b"secret"


def test_unknown_format_version() -> None:
    blob = seal(KEY, 1, b"secret", AAD, counter_randbytes())
    for version in (0, 2, 0xFF):
        bad = bytes([version]) + blob[1:]
        with pytest.raises(DecryptionFailed):
            peek_key_version(bad)
        with pytest.raises(DecryptionFailed):
            open_sealed(KEY, bad, AAD)


def test_every_truncation_and_an_extension_fail() -> None:
    blob = seal(KEY, 1, b"abc", AAD, counter_randbytes())
    for cut in range(len(blob)):
        with pytest.raises(DecryptionFailed):
            open_sealed(KEY, blob[:cut], AAD)
    expect_fail(lambda: open_sealed(KEY, blob + b"\x00", AAD))
    expect_fail(lambda: peek_key_version(blob[: OVERHEAD - 1]))


def test_every_bit_flip_of_a_short_blob_fails() -> None:
    blob = seal(KEY, 1, b"abc", AAD, counter_randbytes())
    flips = 0
    for position in range(len(blob)):
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[position] ^= 1 << bit
            with pytest.raises(DecryptionFailed):
                open_sealed(KEY, bytes(tampered), AAD)
            flips += 1
    assert flips == (3 + OVERHEAD) * 8


def test_failure_is_opaque() -> None:
    blob = seal(KEY, 1, b"secret", AAD, counter_randbytes())
    errors = [
        expect_fail(lambda: open_sealed(OTHER_KEY, blob, AAD)),
        expect_fail(lambda: open_sealed(KEY, blob[:10], AAD)),
        expect_fail(lambda: open_sealed(KEY, blob, AAD + b"x")),
        expect_fail(lambda: open_sealed(b"short", blob, AAD)),
    ]
    for error in errors:
        assert str(error) == "decryption failed"
        assert error.__cause__ is None
        assert error.__suppress_context__ or error.__context__ is None


# --- Sealer -------------------------------------------------------------------------------------


def test_sealer_round_trip_across_versions() -> None:
    rb = counter_randbytes()
    old = Sealer({1: OTHER_KEY}, 1, rb)
    old_blob = old.seal(b"old", AAD)
    sealer = Sealer({1: OTHER_KEY, 2: KEY}, 2, rb)
    new_blob = sealer.seal(b"new", AAD)
    assert peek_key_version(new_blob) == 2
    assert sealer.open(new_blob, AAD) == b"new"
    assert sealer.open(old_blob, AAD) == b"old"
    assert sealer.current_version == 2
    assert sealer.versions == frozenset({1, 2})
    expect_fail(lambda: old.open(new_blob, AAD))  # unknown version


def test_sealer_interoperates_with_functions() -> None:
    rb = counter_randbytes()
    sealer = Sealer({5: KEY}, 5, rb)
    assert open_sealed(KEY, sealer.seal(b"a", AAD), AAD) == b"a"
    assert sealer.open(seal(KEY, 5, b"b", AAD, rb), AAD) == b"b"


def test_sealer_counts_seals_and_enforces_the_limit() -> None:
    sealer = Sealer({1: OTHER_KEY, 2: KEY}, 2, counter_randbytes(), seal_limit=3)
    assert dict(sealer.seal_count) == {1: 0, 2: 0}
    for _ in range(3):
        sealer.seal(b"x", AAD)
    assert dict(sealer.seal_count) == {1: 0, 2: 3}
    with pytest.raises(KeyExhausted) as info:
        sealer.seal(b"x", AAD)
    assert info.value.key_version == 2
    assert "rotate" in str(info.value)
    assert sealer.seal_count[2] == 3
    with pytest.raises(TypeError):
        sealer.seal_count[2] = 0  # type: ignore[index]


def test_sealer_default_limit_is_the_soft_limit() -> None:
    sealer = Sealer({1: KEY}, 1, counter_randbytes())
    assert sealer._seal_limit == SEAL_SOFT_LIMIT


def test_sealer_builds_one_cipher_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[bytes] = []

    def counting_aesgcm(key: bytes) -> AESGCM:
        built.append(key)
        return AESGCM(key)

    monkeypatch.setattr(aead, "AESGCM", counting_aesgcm)
    sealer = Sealer({1: OTHER_KEY, 2: KEY}, 2, counter_randbytes())
    for _ in range(10):
        sealer.open(sealer.seal(b"x", AAD), AAD)
    assert len(built) == 2


@pytest.mark.parametrize(
    ("keys", "current", "limit", "match"),
    [
        ({1: KEY}, 2, SEAL_SOFT_LIMIT, "current"),
        ({1: b"short"}, 1, SEAL_SOFT_LIMIT, "32 bytes"),
        ({-1: KEY}, -1, SEAL_SOFT_LIMIT, "32-bit"),
        ({2**32: KEY}, 2**32, SEAL_SOFT_LIMIT, "32-bit"),
        ({1: KEY}, 1, 0, "seal_limit"),
        ({1: KEY}, 1, 2**32 + 1, "seal_limit"),
    ],
)
def test_sealer_rejects_bad_construction(
    keys: dict[int, bytes], current: int, limit: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Sealer(keys, current, counter_randbytes(), seal_limit=limit)


def test_sealer_open_rejects_garbage() -> None:
    sealer = Sealer({1: KEY}, 1, counter_randbytes())
    for garbage in (b"", b"\x01", b"\x01" * OVERHEAD, b"\x02" + b"\x00" * 40):
        with pytest.raises(DecryptionFailed):
            sealer.open(garbage, AAD)


# --- known-answer vectors through the module's own GCM calls ------------------------------------

# A subset of Wycheproof testvectors_v1/aes_gcm_test.json (C2SP/wycheproof,
# commit 6fc4a87a4c4e2264b2f0d6862bbd900b5b25717e): group ivSize 96, keySize 256, tagSize 128.
# cryptography-vectors does not ship the Wycheproof files (pyca/cryptography reads them from a
# separate checkout), so the cases are copied here verbatim: (tcId, key, iv, aad, msg, ct, tag).
WYCHEPROOF_AES256_GCM = [
    (94, "cc56b680552eb75008f5484b4cb803fa5063ebd6eab91f6ab6aef4916a766273",
     "99e23ec48985bccdeeab60f1", "", "2a", "06", "633c1e9703ef744ffffb40edf9d14355"),
    (95, "51e4bf2bad92b7aff1a4bc05550ba81df4b96fabf41c12c7b00e60e48db7e152",
     "4f07afedfdc3b6c2361823d3", "", "be3308f72a2c6aed", "cf332a12fdee800b",
     "602e8d7c4799d62c140c9bb834876b09"),
    (96, "67119627bd988eda906219e08c0d0d779a07d208ce8a4fe0709af755eeec6dcb",
     "68ab7fdbf61901dad461d23c", "", "51f8c1f731ea14acdb210a6d973e07",
     "43fc101bff4b32bfadd3daf57a590e", "ec04aacb7148a8b8be44cb7eaf4efa69"),
    (97, "59d4eafb4de0cfc7d3db99a8f54b15d7b39f0acc8da69763b019c1699f87674a",
     "2fcb1b38a99e71b84740ad9b", "", "549b365af913f3b081131ccb6b825588",
     "f58c16690122d75356907fd96b570fca", "28752c20153092818faba2a334640d6e"),
    (98, "3b2458d8176e1621c0cc24c0c0e24c1e80d72f7ee9149a4b166176629616d011",
     "45aaa3e5d16d2d42dc03445d", "", "3ff1514b1c503915918f0c0c31094a6e1f",
     "73a6b6f45f6ccc5131e07f2caa1f2e2f56", "2d7379ec1db5952d4e95d30c340b1b1d"),
    (99, "0212a8de5007ed87b33f1a7090b6114f9e08cefd9607f2c276bdcfdbc5ce9cd7",
     "e6b1adf2fd58a8762c65f31b", "", "10f1ecf9c60584665d9ae5efe279e7f7377eea6916d2b111",
     "0843fff52d934fc7a071ea62c0bd351ce85678cde3ea2c9e", "7355fde599006715053813ce696237a8"),
    (100, "b279f57e19c8f53f2f963f5f2519fdb7c1779be2ca2b3ae8e1128b7d6c627fc4",
     "98bc2c7438d5cd7665d76f6e", "c0", "fcc515b294408c8645c9183e3f4ecee5127846d1",
     "eb5500e3825952866d911253f8de860c00831c81", "ecb660e1fb0541ec41e8d68a64141b3a"),
    (101, "cdccfe3f46d782ef47df4e72f0c02d9c7f774def970d23486f11a57f54247f17",
     "376187894605a8d45e30de51", "956846a209e087ed", "e28e0e9f9d22463ac0e42639b530f42102fded75",
     "feca44952447015b5df1f456df8ca4bb4eee2ce2", "082e91924deeb77880e1b1c84f9b8d30"),
    (102, "f32364b1d339d82e4f132d8f4a0ec1ff7e746517fa07ef1a7f422f4e25a48194",
     "5a86a50a0e8a179c734b996d", "ab2ac7c44c60bdf8228c7884adb20184",
     "43891bccb522b1e72a6b53cf31c074e9d6c2df8e", "43dda832e942e286da314daa99bef5071d9d2c78",
     "c3922583476ced575404ddb85dd8cd44"),
    (103, "ff0089ee870a4a39f645b0a5da774f7a5911e9696fc9cad646452c2aa8595a12",
     "bc2a7757d0ce2d8b1f14ccd9", "972ab4e06390caae8f99dd6e2187be6c7ff2c08a24be16ef",
     "748b28031621d95ee61812b4b4f47d04c6fc2ff3", "a929ee7e67c7a2f91bbcec6389a3caf43ab49305",
     "ebec6774b955e789591c822dab739e12"),
    (116, "0f112e59cdccd851c3b8e76c9f05a3b7c2e4feca5846afeb351c1cbcace82f04",
     "7147973339d86789a2c9a958",
     ("37128be45f0a7f329546e1492c3c9c2d2534d5b1f5147e49ab91221e7c3edea21bbe47bfe3619437ce3c61e6"
      "e946c504f348296918219e51bf2c5598589cff"),
     "102e5804dda1fb5d656077edb15cadb5d0bdee8c", "618ac626ae0e8d06c2fd2fb66be253dc26ed6e38",
     "d8d93ff975cb988f09174dcd439cb6a4"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=f"tc{case[0]}") for case in WYCHEPROOF_AES256_GCM]
)
def test_wycheproof_aes256_gcm(case: tuple[int, str, str, str, str, str, str]) -> None:
    _, key, iv, aad, msg, ct, tag = case
    cipher = aead._cipher(bytes.fromhex(key))
    nonce, associated = bytes.fromhex(iv), bytes.fromhex(aad)
    sealed = bytes.fromhex(ct + tag)
    assert aead._encrypt(cipher, nonce, bytes.fromhex(msg), associated) == sealed
    assert aead._decrypt(cipher, nonce, sealed, associated) == bytes.fromhex(msg)
    # Wycheproof's "ModifiedTag" class, for every bit of the tag.
    for bit in range(128):
        bad = bytearray(sealed)
        bad[len(sealed) - 16 + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionFailed):
            aead._decrypt(cipher, nonce, bytes(bad), associated)


def _cavp_cases(filename: str) -> Iterator[dict[str, str]]:
    """Parse a NIST CAVP ``.rsp`` file into dicts, with the section's [Name = value] merged."""
    with cryptography_vectors.open_vector_file(
        str(Path("ciphers", "AES", "GCM", filename)), "r"
    ) as handle:
        section: dict[str, str] = {}
        case: dict[str, str] = {}
        for raw in [*handle, ""]:
            line = raw.strip()
            if line.startswith("#"):
                continue
            if line.startswith("["):
                name, _, value = line.strip("[]").partition("=")
                section[name.strip()] = value.strip()
            elif "=" in line:  # empty values appear as "CT =" once stripped
                name, _, value = line.partition("=")
                case[name.strip()] = value.strip()
            elif line == "FAIL":
                case["FAIL"] = "1"
            elif not line and "Count" in case:
                yield section | case
                case = {}


def _aes256_iv96_tag128(filename: str) -> list[dict[str, str]]:
    return [
        c
        for c in _cavp_cases(filename)
        if (c["Keylen"], c["IVlen"], c["Taglen"]) == ("256", "96", "128")
    ]


def test_nist_cavp_gcm_encrypt_256() -> None:
    cases = _aes256_iv96_tag128("gcmEncryptExtIV256.rsp")
    assert len(cases) == 375
    for case in cases:
        cipher = aead._cipher(bytes.fromhex(case["Key"]))
        got = aead._encrypt(
            cipher, bytes.fromhex(case["IV"]), bytes.fromhex(case["PT"]), bytes.fromhex(case["AAD"])
        )
        assert got == bytes.fromhex(case["CT"] + case["Tag"]), case["Count"]


def test_nist_cavp_gcm_decrypt_256() -> None:
    cases = _aes256_iv96_tag128("gcmDecrypt256.rsp")
    assert len(cases) == 375
    failures = 0
    for case in cases:
        cipher = aead._cipher(bytes.fromhex(case["Key"]))
        args = (
            cipher,
            bytes.fromhex(case["IV"]),
            bytes.fromhex(case["CT"] + case["Tag"]),
            bytes.fromhex(case["AAD"]),
        )
        if "FAIL" in case:
            failures += 1
            with pytest.raises(DecryptionFailed):
                aead._decrypt(*args)
        else:
            assert aead._decrypt(*args) == bytes.fromhex(case["PT"]), case["Count"]
    assert failures > 0
