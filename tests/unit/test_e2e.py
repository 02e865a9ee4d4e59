"""End-to-end mode: the HPKE recipe (RFC 9180 known answers, interop with pyhpke, tamper and
move detection, strict parsing) and the SDK around it (publish against httpx.MockTransport,
subscribe against a real websockets server on loopback)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cryptography_vectors
import httpx
import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.server import ServerConnection as SyncServerConnection
from websockets.sync.server import serve as sync_serve

from herald.client import (
    AsyncPublisher,
    AsyncSubscriber,
    AuthenticationError,
    ConnectionFailed,
    DeviceKey,
    E2EDecryptionError,
    HeraldClientError,
    ProblemError,
    Publisher,
    Subscriber,
    register_device_with_token,
)
from herald.client._e2e import open_e2e_frame
from herald.core.ids import parse_message_id
from herald.crypto.e2e import (
    ENC_LEN,
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    SUITE_ID,
    TAG_LEN,
    b64url_decode,
    b64url_encode,
    decode_plaintext,
    e2e_info,
    encode_plaintext,
    is_valid_public_key,
    open_for_device,
    parse_public_key,
    seal_for_device,
)
from herald.errors import BadRequest, DecryptionFailed

# -- RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base ----

A11 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikmE": "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
    "pkEm": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "ikmR": "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "key": "4531685d41d65f03dc48f6b8302c05b0",
    "base_nonce": "56d890e5accaaf011cff4b7d",
}
# A.1.1.1, sequence number 0.
A11_PT = "4265617574792069732074727574682c20747275746820626561757479"
A11_AAD = "436f756e742d30"
A11_CT = (
    "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
)


def h(name: str) -> bytes:
    return bytes.fromhex(A11[name])


def pyhpke_suite() -> CipherSuite:
    return CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)


def test_a11_constants_match_the_cfrg_vector_file() -> None:
    with cryptography_vectors.open_vector_file("HPKE/test-vectors.json", "r") as f:
        vectors = json.load(f)
    (vector,) = [
        v for v in vectors if (v["mode"], v["kem_id"], v["kdf_id"], v["aead_id"]) == (0, 32, 1, 1)
    ]
    for name, value in A11.items():
        assert vector[name] == value, name
    first = vector["encryptions"][0]
    assert (first["pt"], first["aad"], first["ct"]) == (A11_PT, A11_AAD, A11_CT)


def test_pyhpke_reproduces_rfc9180_a11_with_the_fixed_ephemeral_key() -> None:
    suite = pyhpke_suite()
    ephemeral = suite.kem.derive_key_pair(h("ikmE"))
    receiver = suite.kem.derive_key_pair(h("ikmR"))
    assert ephemeral.private_key.to_private_bytes() == h("skEm")
    assert receiver.private_key.to_private_bytes() == h("skRm")
    assert receiver.public_key.to_public_bytes() == h("pkRm")
    enc, sender = suite.create_sender_context(receiver.public_key, h("info"), eks=ephemeral)
    assert enc == h("enc") == h("pkEm")
    assert sender.seal(bytes.fromhex(A11_PT), bytes.fromhex(A11_AAD)) == bytes.fromhex(A11_CT)


def test_no_aad_variant_uses_the_rfc_key_schedule() -> None:
    # cryptography's single-shot API seals with aad = "" (RFC 9180 §6.1). With A.1.1's keys
    # and info the first message must then be AES-128-GCM under the vector's key and
    # base_nonce with empty AAD: pyhpke produces exactly that, and cryptography opens it.
    pt = bytes.fromhex(A11_PT)
    expected = AESGCM(h("key")).encrypt(h("base_nonce"), pt, b"")
    suite = pyhpke_suite()
    ephemeral = suite.kem.derive_key_pair(h("ikmE"))
    receiver = suite.kem.derive_key_pair(h("ikmR"))
    enc, sender = suite.create_sender_context(receiver.public_key, h("info"), eks=ephemeral)
    assert sender.seal(pt) == expected
    ours = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    sk_r = X25519PrivateKey.from_private_bytes(h("skRm"))
    assert ours.decrypt(enc + expected, sk_r, info=h("info")) == pt
    # ...and cryptography's own seal to pkRm opens with the RFC's receiver key in pyhpke.
    sealed = ours.encrypt(pt, sk_r.public_key(), info=h("info"))
    recipient = suite.create_recipient_context(sealed[:ENC_LEN], receiver.private_key, h("info"))
    assert recipient.open(sealed[ENC_LEN:]) == pt


IDS = {"message_id": "0190a000-0000-7000-8000-000000000001", "recipient": "user-42"}


def test_pyhpke_seal_opens_with_open_for_device() -> None:
    suite = pyhpke_suite()
    receiver = suite.kem.derive_key_pair(h("ikmR"))
    ephemeral = suite.kem.derive_key_pair(h("ikmE"))
    info = e2e_info(IDS["message_id"], IDS["recipient"], "dev-1")
    enc, sender = suite.create_sender_context(receiver.public_key, info, eks=ephemeral)
    ct = sender.seal(b"hello device")
    assert enc == h("enc")  # enc depends on the ephemeral key alone
    sk_r = X25519PrivateKey.from_private_bytes(h("skRm"))
    assert open_for_device(sk_r, enc, ct, device_id="dev-1", **IDS) == b"hello device"


def test_seal_for_device_opens_in_pyhpke() -> None:
    device = X25519PrivateKey.generate()
    enc, ct = seal_for_device(
        device.public_key().public_bytes_raw(), b"hello pyhpke", device_id="dev-2", **IDS
    )
    assert len(enc) == ENC_LEN
    assert len(ct) == len(b"hello pyhpke") + TAG_LEN
    suite = pyhpke_suite()
    skr = KEMKey.from_pyca_cryptography_key(device)
    info = e2e_info(IDS["message_id"], IDS["recipient"], "dev-2")
    assert suite.create_recipient_context(enc, skr, info).open(ct) == b"hello pyhpke"


# -- info, round trip, failures ----------------------------------------------------------------


def test_e2e_info_layout() -> None:
    assert e2e_info("m", "ré", "") == b"herald-e2e/v1\x00\x01m\x00\x03r\xc3\xa9\x00\x00"
    assert e2e_info("a", "bc", "d") != e2e_info("ab", "c", "d")
    with pytest.raises(ValueError, match="65535"):
        e2e_info("x" * 65536, "r", "d")
    assert e2e_info("x" * 65535, "r", "d").startswith(b"herald-e2e/v1\xff\xff")


@pytest.fixture(scope="module")
def device() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def seal(device: X25519PrivateKey, plaintext: bytes = b"secret", **ids: str) -> tuple[bytes, bytes]:
    params = {**IDS, "device_id": "dev-1", **ids}
    return seal_for_device(device.public_key().public_bytes_raw(), plaintext, **params)


def open_(device: X25519PrivateKey, enc: bytes, ct: bytes, **ids: str) -> bytes:
    params = {**IDS, "device_id": "dev-1", **ids}
    return open_for_device(device, enc, ct, **params)


def test_round_trip_and_fresh_ephemeral_keys(device: X25519PrivateKey) -> None:
    enc, ct = seal(device)
    assert open_(device, enc, ct) == b"secret"
    enc2, ct2 = seal(device)
    assert enc2 != enc
    assert ct2 != ct
    enc3, ct3 = seal(device, b"")
    assert open_(device, enc3, ct3) == b""
    big = b"x" * MAX_PLAINTEXT
    assert open_(device, *seal(device, big)) == big


def test_wrong_device_key_fails(device: X25519PrivateKey) -> None:
    enc, ct = seal(device)
    with pytest.raises(DecryptionFailed) as info:
        open_(X25519PrivateKey.generate(), enc, ct)
    assert str(info.value) == "decryption failed"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    "moved",
    [
        {"message_id": "0190a000-0000-7000-8000-000000000002"},
        {"recipient": "user-43"},
        {"device_id": "dev-2"},
    ],
)
def test_payload_moved_to_another_message_recipient_or_device_fails(
    device: X25519PrivateKey, moved: dict[str, str]
) -> None:
    enc, ct = seal(device)
    with pytest.raises(DecryptionFailed):
        open_(device, enc, ct, **moved)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_tampered_or_truncated_payloads_fail(device: X25519PrivateKey) -> None:
    enc, ct = seal(device)
    bad = [
        (enc[:-1], ct),
        (enc + b"\x00", ct),
        (b"", ct),
        (bytes(32), ct),  # the all-zero (small-order) point
        (enc, ct[:-1]),
        (enc, ct[:TAG_LEN]),
        (enc, ct[: TAG_LEN - 1]),
        (enc, b""),
        (enc, ct + b"\x00"),
        (ct[:ENC_LEN], enc + ct[ENC_LEN:]),
        (flip(enc, 0), ct),
        (flip(enc, 255), ct),  # X25519 ignores the top bit, HPKE's kem_context does not
        (enc, flip(ct, 0)),
        (enc, flip(ct, len(ct) * 8 - 1)),
        (enc, b"\x00" * (MAX_CIPHERTEXT + 1)),
    ]
    for bad_enc, bad_ct in bad:
        with pytest.raises(DecryptionFailed):
            open_(device, bad_enc, bad_ct)
    with pytest.raises(DecryptionFailed):
        open_(device, enc, ct, recipient="\ud800")  # not encodable: same opaque error


def test_seal_refuses_bad_input(device: X25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="at most 32768 bytes"):
        seal(device, b"x" * (MAX_PLAINTEXT + 1))
    with pytest.raises(ValueError, match="not a valid X25519 public key"):
        seal_for_device(bytes(32), b"x", device_id="d", **IDS)
    with pytest.raises(ValueError, match="65535"):
        seal(device, recipient="r" * 70000)


# -- encodings and keys ------------------------------------------------------------------------


def test_b64url_round_trip_and_strictness() -> None:
    for data in (b"", b"\x00", b"\xff\xfe", b"abc", bytes(range(256))):
        text = b64url_encode(data)
        assert "=" not in text
        assert b64url_decode(text) == data
    assert b64url_encode(b"\xfb\xff") == "-_8"
    refused = ["AA==", "AA=", "+/8", "A", "AAAAA", "AA AA", " AA", "AA\n", "AB", "-_9", "é", "A*"]
    for text in refused:
        with pytest.raises(BadRequest, match="ct must be unpadded base64url"):
            b64url_decode(text, name="ct")
    with pytest.raises(BadRequest):
        b64url_decode(b"AA")  # type: ignore[arg-type]


P = 2**255 - 19
SMALL_ORDER = [
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
]


def u_bytes(u: int) -> bytes:
    return u.to_bytes(32, "little")


def test_small_order_points_really_are_refused_by_x25519() -> None:
    # The refused list is right: DH with each gives the all-zero secret (which OpenSSL
    # refuses), whatever the private key.
    for u in SMALL_ORDER:
        with pytest.raises(ValueError, match="shared key"):
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(u_bytes(u)))


def test_parse_public_key() -> None:
    good = X25519PrivateKey.generate().public_key().public_bytes_raw()
    assert parse_public_key(b64url_encode(good)) == good
    assert is_valid_public_key(good)
    refused = [
        b"",
        good[:31],
        good + b"\x00",
        *(u_bytes(u) for u in SMALL_ORDER),
        u_bytes(P),  # non-canonical encodings of 0 and 1 and of a good key
        u_bytes(P + 1),
        good[:31] + bytes([good[31] | 0x80]),
    ]
    for raw in refused:
        assert not is_valid_public_key(raw)
        with pytest.raises(BadRequest, match="public_key must be"):
            parse_public_key(b64url_encode(raw))
    with pytest.raises(BadRequest, match="base64url"):
        parse_public_key(b64url_encode(good) + "=")


def test_plaintext_encoding() -> None:
    encoded = encode_plaintext("Hi", None, {"n": 1, "s": "é"})
    assert encoded == '{"title":"Hi","body":null,"data":{"n":1,"s":"é"}}'.encode()
    assert decode_plaintext(encoded) == ("Hi", None, {"n": 1, "s": "é"})
    assert decode_plaintext(b'{"title":"t","future":1}') == ("t", None, None)
    for bad in (b"", b"not json", b"[]", b'{"title":1}', b'{"body":[]}', b'{"data":"x"}'):
        with pytest.raises(DecryptionFailed):
            decode_plaintext(bad)


# -- SDK: publishing ---------------------------------------------------------------------------

BASE = "https://herald.test"
MARKER = "TOP-SECRET-MARKER-7f3a"
ACCEPTED = {
    "id": "0190a000-0000-7000-8000-000000000001",
    "topic": "orders.shipped",
    "audit": {"index": 3, "leaf_hash": "ab" * 32},
}


class DeviceApi:
    """A MockTransport handler with a device registry and an accepting messages endpoint."""

    def __init__(self, devices: dict[str, list[DeviceKey]], *answers: httpx.Response) -> None:
        self.devices = devices
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            body = {"access_token": "tok", "token_type": "Bearer", "expires_in": 600}
            return httpx.Response(200, json=body)
        self.requests.append(request)
        parts = request.url.raw_path.decode().split("/")
        if request.method == "GET" and parts[1:3] == ["v1", "recipients"]:
            recipient = httpx.URL(f"/{parts[3]}").path[1:]
            keys = self.devices.get(recipient, [])
            listed = [
                {
                    "device_id": k.device_id,
                    "public_key": b64url_encode(k.public_key_raw),
                    "created_at": "2026-01-01T00:00:00Z",
                }
                for k in keys
            ]
            return httpx.Response(200, json={"devices": listed})
        if self.answers:
            return self.answers.pop(0)
        if request.method == "POST" and parts[1:3] == ["v1", "recipients"]:
            return httpx.Response(201, json={"device_id": "dev-new", "recipient": parts[3]})
        return httpx.Response(202, json=ACCEPTED)

    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]


async def no_sleep(delay: float) -> None:
    return None


def new_key(device_id: str) -> DeviceKey:
    return DeviceKey.generate().with_device_id(device_id)


def e2e_publisher(api: DeviceApi) -> AsyncPublisher:
    return AsyncPublisher(BASE, "app", "s", transport=httpx.MockTransport(api), sleep=no_sleep)


def open_payload(message: dict[str, Any], payload: dict[str, str], key: DeviceKey) -> bytes:
    return open_for_device(
        key.private_key,
        b64url_decode(payload["enc"]),
        b64url_decode(payload["ct"]),
        message_id=message["id"],
        recipient=payload["recipient"],
        device_id=payload["device_id"],
    )


async def test_publish_e2e_fetches_devices_and_seals_per_device() -> None:
    keys = {"user-1": [new_key("d1"), new_key("d2")], "user/2": [new_key("d3")]}
    api = DeviceApi(keys)
    async with e2e_publisher(api) as pub:
        result = await pub.publish_e2e(
            "orders.shipped",
            recipients=["user-1", "user/2"],
            title=f"title {MARKER}",
            body=f"body {MARKER}",
            data={"note": MARKER},
            priority="high",
            ttl=60,
        )
    assert result.id == ACCEPTED["id"]
    gets = [r.url.raw_path for r in api.requests if r.method == "GET"]
    assert sorted(gets) == [b"/v1/recipients/user%2F2/devices", b"/v1/recipients/user-1/devices"]
    (post,) = api.posts()
    assert post.url.path == "/v1/messages"
    assert uuid.UUID(post.headers["idempotency-key"]).version == 4
    message = json.loads(post.content)
    assert set(message) == {"id", "topic", "recipients", "priority", "ttl", "e2e"}
    assert parse_message_id(message["id"]) == message["id"]
    assert (message["topic"], message["recipients"]) == ("orders.shipped", ["user-1", "user/2"])
    assert (message["priority"], message["ttl"]) == ("high", 60)
    assert message["e2e"]["suite"] == SUITE_ID == "hpke-base-x25519-sha256-aes128gcm"
    payloads = message["e2e"]["payloads"]
    assert [(p["recipient"], p["device_id"]) for p in payloads] == [
        ("user-1", "d1"),
        ("user-1", "d2"),
        ("user/2", "d3"),
    ]
    expected = encode_plaintext(f"title {MARKER}", f"body {MARKER}", {"note": MARKER})
    by_id = {k.device_id: k for ks in keys.values() for k in ks}
    for payload in payloads:
        assert set(payload) == {"recipient", "device_id", "enc", "ct"}
        assert len(b64url_decode(payload["enc"])) == ENC_LEN
        assert open_payload(message, payload, by_id[payload["device_id"]]) == expected
    # Payload of d1 does not open as d2's: each is bound to its device.
    with pytest.raises(DecryptionFailed):
        open_payload(message, {**payloads[0], "device_id": "d2"}, by_id["d2"])
    for request in api.requests:
        wire = request.content + str(request.url).encode() + str(request.headers).encode()
        assert MARKER.encode() not in wire


async def test_publish_e2e_retries_the_same_sealed_body() -> None:
    key = new_key("d1")
    api = DeviceApi({}, httpx.Response(503), httpx.Response(202, json=ACCEPTED))
    async with e2e_publisher(api) as pub:
        await pub.publish_e2e(
            "t", recipients=["u"], body="b", devices={"u": [("d1", key.public_key_raw)]}
        )
        await pub.publish_e2e(
            "t", recipients=["u"], body="b", devices={"u": [("d1", key.public_key_raw)]}
        )
    first, retry, second = api.posts()
    assert first.content == retry.content
    assert first.headers["idempotency-key"] == retry.headers["idempotency-key"]
    assert [r.method for r in api.requests] == ["POST"] * 3  # devices given: nothing fetched
    ids = [json.loads(r.content)["id"] for r in (first, second)]
    assert ids[0] < ids[1]  # UUIDv7 from one monotonic generator


async def test_publish_e2e_refusals() -> None:
    good = new_key("d1").public_key_raw
    api = DeviceApi({"has-one": [new_key("d9")]})
    async with e2e_publisher(api) as pub:
        with pytest.raises(HeraldClientError, match="'nobody' has no registered device"):
            await pub.publish_e2e("t", recipients=["has-one", "nobody"], title="x")
        cases: list[tuple[list[str], dict[str, list[tuple[str, bytes]]], str]] = [
            ([], {}, "at least one recipient"),
            (["u", "u"], {"u": [("d", good)]}, "must not repeat"),
            (["u"], {"u": [("d", good)], "v": [("e", good)]}, "not in recipients"),
            (["u"], {"u": []}, "'u' has no registered device"),
            (["u"], {"u": [("d", bytes(32))]}, "invalid public key"),
            (["u", "v"], {"u": [("d", good)], "v": [("d", good)]}, "listed twice"),
        ]
        for recipients, devices, match in cases:
            with pytest.raises(HeraldClientError, match=match):
                await pub.publish_e2e("t", recipients=recipients, title="x", devices=devices)
        with pytest.raises(HeraldClientError, match="the limit is 32768"):
            await pub.publish_e2e(
                "t", recipients=["u"], body="x" * MAX_PLAINTEXT, devices={"u": [("d", good)]}
            )
    assert api.posts() == []


async def test_publish_e2e_refuses_an_invalid_key_from_the_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            body = {"access_token": "tok", "token_type": "Bearer", "expires_in": 600}
            return httpx.Response(200, json=body)
        devices = [{"device_id": "d", "public_key": b64url_encode(bytes(32))}]
        return httpx.Response(200, json={"devices": devices})

    async with AsyncPublisher(BASE, "a", "s", transport=httpx.MockTransport(handler)) as pub:
        with pytest.raises(HeraldClientError, match="invalid public key for device 'd'"):
            await pub.publish_e2e("t", recipients=["u"], title="x")


async def test_list_and_register_devices() -> None:
    key = new_key("d1")
    api = DeviceApi({"u 1": [key]})
    async with e2e_publisher(api) as pub:
        (listed,) = await pub.list_devices("u 1")
        assert listed["device_id"] == "d1"
        assert parse_public_key(listed["public_key"]) == key.public_key_raw
        created = await pub.register_device("u 1", key.public_key_raw, label="phone")
        assert created["device_id"] == "dev-new"
        with pytest.raises(HeraldClientError, match="not a valid"):
            await pub.register_device("u 1", b"short")
    (post,) = api.posts()
    assert post.url.raw_path == b"/v1/recipients/u%201/devices"
    assert post.headers["authorization"] == "Bearer tok"
    assert "idempotency-key" not in post.headers
    assert json.loads(post.content) == {
        "public_key": b64url_encode(key.public_key_raw),
        "label": "phone",
    }


def test_sync_publisher_e2e() -> None:
    key = new_key("d1")
    api = DeviceApi({"u": [key]})
    with Publisher(BASE, "a", "s", transport=httpx.MockTransport(api)) as pub:
        assert pub.publish_e2e("t", recipients=["u"], title="x").audit_index == 3
        assert [d["device_id"] for d in pub.list_devices("u")] == ["d1"]
        assert pub.register_device("u", key.public_key_raw)["device_id"] == "dev-new"


async def test_register_device_with_token() -> None:
    key = DeviceKey.generate()
    assert key.device_id is None
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers["authorization"] != "Bearer sub-tok":
            body = {"type": "urn:herald:problem:invalid-token", "status": 401, "detail": "no"}
            return httpx.Response(
                401, json=body, headers={"content-type": "application/problem+json"}
            )
        answer = {
            "device_id": "dev-7",
            "recipient": "user-42",
            "public_key": json.loads(request.content)["public_key"],
            "created_at": "2026-01-01T00:00:00Z",
        }
        return httpx.Response(201, json=answer)

    transport = httpx.MockTransport(handler)
    device = await register_device_with_token(
        BASE + "/", "sub-tok", "user-42", key.public_key_raw, label="tablet", transport=transport
    )
    key = key.with_device_id(device["device_id"])
    assert key.device_id == "dev-7"
    assert parse_public_key(device["public_key"]) == key.public_key_raw
    request = seen[0]
    assert str(request.url) == f"{BASE}/v1/recipients/user-42/devices"
    assert "signature" not in request.headers
    assert json.loads(request.content) == {
        "public_key": b64url_encode(key.public_key_raw),
        "label": "tablet",
    }
    with pytest.raises(AuthenticationError):
        await register_device_with_token(
            BASE, "bad", "user-42", key.public_key_raw, transport=transport
        )
    with pytest.raises(HeraldClientError, match="not a valid"):
        await register_device_with_token(BASE, "sub-tok", "u", bytes(32), transport=transport)
    assert len(seen) == 2
    assert "private_key" not in repr(key)


# -- SDK: subscribing --------------------------------------------------------------------------

M = [f"0190a000-0000-7000-8000-00000000000{n}" for n in range(8)]


def e2e_frame(message_id: str, keys: dict[str, list[DeviceKey]], title: str) -> dict[str, Any]:
    plaintext = encode_plaintext(title, "sealed body", {"n": 1})
    payloads = []
    for recipient, recipient_keys in keys.items():
        for key in recipient_keys:
            assert key.device_id is not None
            enc, ct = seal_for_device(
                key.public_key_raw,
                plaintext,
                message_id=message_id,
                recipient=recipient,
                device_id=key.device_id,
            )
            payloads.append(
                {
                    "recipient": recipient,
                    "device_id": key.device_id,
                    "enc": b64url_encode(enc),
                    "ct": b64url_encode(ct),
                }
            )
    return {
        "type": "message",
        "id": message_id,
        "topic": "orders.shipped",
        "title": None,
        "body": None,
        "data": None,
        "priority": "normal",
        "created_at": "2026-01-01T00:00:00Z",
        "audit": {"index": 1, "leaf_hash": "cd" * 32},
        "e2e": {"suite": SUITE_ID, "payloads": payloads},
    }


def plain_frame(message_id: str) -> dict[str, Any]:
    frame = e2e_frame(message_id, {}, "")
    del frame["e2e"]
    return {**frame, "title": "plain"}


MINE, OTHER = new_key("dev-mine"), new_key("dev-other")


def scripted_frames() -> list[dict[str, Any]]:
    """M1 opens; M2 tampered; M3 a payload moved from M1; M4 none for us; M5 opens; M6 plain."""
    keys = {"user-42": [MINE], "user-7": [OTHER]}
    tampered = e2e_frame(M[2], keys, "two")
    ct = b64url_decode(tampered["e2e"]["payloads"][0]["ct"])
    tampered["e2e"]["payloads"][0]["ct"] = b64url_encode(flip(ct, 3))
    first = e2e_frame(M[1], keys, "one")
    moved = {**e2e_frame(M[3], keys, "three"), "e2e": first["e2e"]}
    return [
        first,
        tampered,
        moved,
        e2e_frame(M[4], {"user-7": [OTHER]}, "four"),
        e2e_frame(M[5], keys, "five"),
        plain_frame(M[6]),
    ]


@pytest.fixture
async def e2e_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    acks: list[dict[str, Any]] = []
    frames = scripted_frames()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "ready", "topics": ["orders.>"], "resumed": 0}))
        for frame in frames:
            await ws.send(json.dumps(frame))
        async for raw in ws:
            acks.append(json.loads(raw))
            if acks[-1]["id"] == M[6]:
                break
        await ws.close(1000)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", acks


async def test_subscriber_opens_e2e_messages_and_survives_bad_ones(
    e2e_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, acks = e2e_server
    async with AsyncSubscriber(url, "t", device_key=MINE, auto_ack=True) as sub:
        first = await anext(sub)
        assert (first.id, first.title, first.body, first.data, first.e2e) == (
            M[1],
            "one",
            "sealed body",
            {"n": 1},
            True,
        )
        for expected in (M[2], M[3], M[4]):
            with pytest.raises(E2EDecryptionError) as info:
                await anext(sub)
            assert info.value.message_id == expected
            assert info.value.message.title is None
            assert info.value.__cause__ is None
            assert sub.last_id == expected
        fifth = await anext(sub)
        assert (fifth.id, fifth.title, fifth.e2e) == (M[5], "five", True)
        plain = await anext(sub)
        assert (plain.id, plain.title, plain.e2e) == (M[6], "plain", False)
        assert [m async for m in sub] == []
    # Failed messages are not acknowledged automatically.
    assert acks == [{"type": "ack", "id": i} for i in (M[1], M[5], M[6])]


async def test_subscriber_without_device_key_yields_sealed_messages(
    e2e_server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = e2e_server
    async with AsyncSubscriber(url, "t", auto_ack=True) as sub:
        messages = [m async for m in sub]
    assert [m.id for m in messages] == M[1:7]
    sealed = messages[0]
    assert (sealed.title, sealed.body, sealed.data, sealed.e2e) == (None, None, None, True)
    assert sealed.raw["e2e"]["payloads"][0]["device_id"] == "dev-mine"


def test_subscriber_needs_a_registered_device_key() -> None:
    with pytest.raises(ValueError, match="register the device first"):
        AsyncSubscriber("http://127.0.0.1:1", "t", device_key=DeviceKey.generate())


@pytest.fixture
def sync_e2e_server() -> Iterator[str]:
    frames = scripted_frames()

    def handler(ws: SyncServerConnection) -> None:
        for frame in (frames[0], frames[1], frames[4]):
            ws.send(json.dumps(frame))
        ws.close(1000)

    with sync_serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        server.shutdown()
        thread.join(timeout=5)


def test_sync_subscriber_with_device_key(sync_e2e_server: str) -> None:
    with Subscriber(sync_e2e_server, "t", device_key=MINE) as sub:
        assert next(sub).title == "one"
        with pytest.raises(E2EDecryptionError, match=M[2]):
            next(sub)
        assert [m.title for m in sub] == ["five"]


async def test_device_list_failures() -> None:
    answers = {
        "/v1/recipients/bad-body/devices": httpx.Response(200, json={"devices": {}}),
        "/v1/recipients/bad-item/devices": httpx.Response(200, json={"devices": [["d"]]}),
        "/v1/recipients/no-key/devices": httpx.Response(
            200, json={"devices": [{"device_id": "d"}]}
        ),
        "/v1/recipients/gone/devices": httpx.Response(404),
    }
    slow_started: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            body = {"access_token": "tok", "token_type": "Bearer", "expires_in": 600}
            return httpx.Response(200, json=body)
        if request.url.path == "/v1/recipients/slow/devices":
            slow_started.append("slow")
            await asyncio.sleep(30)  # cancelled when the other fetch fails
        return answers[request.url.path]

    transport = httpx.MockTransport(handler)
    async with AsyncPublisher(BASE, "a", "s", transport=transport, sleep=no_sleep) as pub:
        for recipient in ("bad-body", "bad-item", "no-key"):
            with pytest.raises(HeraldClientError, match="unexpected body"):
                await pub.publish_e2e("t", recipients=[recipient], title="x")
        with pytest.raises(HeraldClientError, match="unexpected body"):
            await pub.list_devices("bad-item")
        with pytest.raises(ProblemError) as info:
            await asyncio.wait_for(
                pub.publish_e2e("t", recipients=["slow", "gone"], title="x"), timeout=10
            )
        assert info.value.status == 404
        assert slow_started == ["slow"]


async def test_register_device_with_token_failures() -> None:
    key = new_key("d").public_key_raw

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectionFailed, match=r"cannot reach https://herald\.test"):
        await register_device_with_token(
            BASE, "t", "u", key, transport=httpx.MockTransport(refused)
        )
    for answer in (httpx.Response(201, content=b"<html>"), httpx.Response(201, json=[1])):
        transport = httpx.MockTransport(lambda _request, answer=answer: answer)
        with pytest.raises(HeraldClientError, match="body"):
            await register_device_with_token(BASE, "t", "u", key, transport=transport)


def test_open_e2e_frame_refuses_malformed_frames() -> None:
    good = e2e_frame(M[1], {"user-42": [MINE]}, "one")
    assert open_e2e_frame(good, M[1], MINE) == ("one", "sealed body", {"n": 1})
    payload = good["e2e"]["payloads"][0]
    variants: list[dict[str, Any]] = [
        {**good, "e2e": None},
        {**good, "e2e": {**good["e2e"], "suite": "hpke-base-x25519-sha256-chacha20poly1305"}},
        {**good, "e2e": {"suite": SUITE_ID, "payloads": {}}},
        {**good, "e2e": {"suite": SUITE_ID, "payloads": ["x"]}},
        {**good, "e2e": {"suite": SUITE_ID, "payloads": [{**payload, "recipient": None}]}},
        {**good, "e2e": {"suite": SUITE_ID, "payloads": [{**payload, "enc": "A"}]}},
        {**good, "e2e": {"suite": SUITE_ID, "payloads": [{**payload, "ct": payload["ct"] + "="}]}},
        {**good, "e2e": {"suite": SUITE_ID, "payloads": [{**payload, "recipient": "user-7"}]}},
    ]
    for frame in variants:
        with pytest.raises(DecryptionFailed):
            open_e2e_frame(frame, M[1], MINE)
    with pytest.raises(DecryptionFailed):
        open_e2e_frame(good, M[2], MINE)
    with pytest.raises(DecryptionFailed):
        open_e2e_frame(good, M[1], DeviceKey(device_id=None, private_key=MINE.private_key))
