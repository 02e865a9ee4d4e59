"""Regression tests for what the parser fuzzers (``fuzzing/``) found: each input once made a
parser of untrusted input raise something other than its typed refusal."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from herald.channels import _http
from herald.channels.base import Failed, Retry
from herald.channels.egress import EgressPolicy, EgressRefused, EgressResponse
from herald.channels.robots import DingTalkChannel, FeishuChannel, WeComChannel
from herald.channels.webpush import WebPushChannel
from herald.crypto.assertions import parse_assertion
from herald.crypto.e2e import decode_plaintext, open_for_device, seal_for_device
from herald.errors import BadRequest, DecryptionFailed, InvalidClient
from herald.service.signatures import parse_ed25519_public_key


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ['["EdDSA"]', '{"EdDSA":1}'])
def test_client_assertion_with_an_unhashable_alg_is_invalid_client(alg: str) -> None:
    header = _b64url(f'{{"alg":{alg},"kid":"hk_1"}}'.encode())
    with pytest.raises(InvalidClient):
        parse_assertion(f"{header}.{_b64url(b'{}')}.{_b64url(bytes(64))}")


def test_pem_key_of_an_unknown_algorithm_is_a_bad_request() -> None:
    # A P-256 SubjectPublicKeyInfo whose algorithm OID was changed to one nobody knows:
    # cryptography raises UnsupportedAlgorithm, not ValueError.
    der = (
        ec.derive_private_key(7, ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    unknown = der.replace(bytes.fromhex("2a8648ce3d0201"), bytes.fromhex("2a8648ce3d0209"))
    assert unknown != der
    body = base64.encodebytes(unknown).decode()
    pem = f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n".encode()
    with pytest.raises(BadRequest, match="Ed25519"):
        parse_ed25519_public_key(pem)


def test_e2e_plaintext_that_is_not_utf8_fails_to_open() -> None:
    # End-to-end payloads are not sender-authenticated (HPKE base mode): anyone holding the
    # device's public key can seal bytes that are not UTF-8; msgspec raises
    # UnicodeDecodeError for them, which the SDK must report as DecryptionFailed.
    with pytest.raises(DecryptionFailed):
        decode_plaintext(b'{"title":"Hi","data":{"k\xff":1}}')
    device = X25519PrivateKey.generate()
    ids = {"message_id": "m", "recipient": "r", "device_id": "d"}
    enc, ct = seal_for_device(device.public_key().public_bytes_raw(), b'{"title":"\xff"}', **ids)
    with pytest.raises(DecryptionFailed):
        decode_plaintext(open_for_device(device, enc, ct, **ids))


@pytest.mark.parametrize("endpoint", ["https://[::1/push", "https://]/"])
def test_web_push_endpoint_with_a_broken_ipv6_literal_is_refused(endpoint: str) -> None:
    channel = WebPushChannel(
        EgressPolicy(), ec.generate_private_key(ec.SECP256R1()), subject="mailto:o@herald.test"
    )
    subscription = {"endpoint": endpoint, "keys": {"p256dh": "x", "auth": "x"}}
    with pytest.raises(EgressRefused):
        channel.validate({"subscription": subscription})


@pytest.mark.parametrize("channel_type", [DingTalkChannel, FeishuChannel, WeComChannel])
def test_robot_answer_that_is_not_utf8_is_a_failure_not_an_exception(
    channel_type: type[DingTalkChannel],
) -> None:
    channel = channel_type(EgressPolicy())
    answer = EgressResponse(200, {}, b'{"errcode\xff":0,"code\xff":0}', truncated=False)
    outcome = channel._outcome(answer)
    assert isinstance(outcome, Failed)
    assert "without a result code" in outcome.reason


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 21 Oct 2027 07:24444444444444444448:00 GMT",
        "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",
    ],
)
def test_retry_after_date_with_huge_fields_is_ignored(value: str) -> None:
    # A receiver's Retry-After HTTP-date with a field too large for a C long made
    # parsedate_to_datetime raise OverflowError out of the channel.
    assert _http.retry_after({"retry-after": value}, now=1_800_000_000) is None
    outcome = _http.status_outcome(
        503, {"retry-after": value}, peer="receiver", clock=lambda: 1_800_000_000
    )
    assert outcome == Retry("receiver answered HTTP 503", after=None)
