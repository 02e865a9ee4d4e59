"""Write the seed corpora under ``fuzzing/corpus/<target>/``: small valid and near-valid inputs.

Run ``python -m fuzzing.make_corpus`` (with Herald importable) after changing a target's
input format. Seeds are built with Herald's own encoders and the targets' fixed keys, so a
valid seed reaches deep into its parser; near-valid ones are the same with one thing wrong.
Most seeds are deterministic; the end-to-end ones are not (HPKE draws its ephemeral key).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fuzzing._input import SEPARATOR, b64url
from fuzzing.targets import CORPUS_DIR, TARGETS

_SEP = SEPARATOR
NOW = 1_800_000_000


def _j(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _join(*parts: bytes | str) -> bytes:
    return _SEP.join(p.encode("latin-1") if isinstance(p, str) else p for p in parts)


def _signature_headers() -> dict[str, bytes]:
    from herald.core.signatures import signature_params  # noqa: PLC0415

    nonce = b64url(bytes(range(16)))
    params = signature_params(
        ["@method", "@target-uri", "content-digest", "content-type"],
        created=NOW,
        nonce=nonce,
        keyid="hk_0123456789abcdef",
        alg="ed25519",
        expires=NOW + 60,
    )
    sig = "sig=:" + base64.b64encode(bytes(64)).decode() + ":"
    headers = b"content-digest: sha-256=:AAAA:\ncontent-type: application/json"
    hmac_params = params.replace('"ed25519"', '"hmac-sha256"')
    return {
        "valid": b"\x00" + _join(f"sig={params}", sig, headers),
        "fixed-signature": b"\x01" + _join(f"sig={params}", "", headers),
        "hmac": b"\x01" + _join(f"sig={hmac_params}", "", headers),
        "short-nonce": b"\x00" + _join(f"sig={params.replace(nonce, 'AAAA')}", sig, headers),
        "two-labels": b"\x00" + _join(f"a=();created=1, sig={params}", sig, b""),
        "inner-list-signature": b"\x00" + _join(f"sig={params}", "sig=(:AAAA:)", b""),
    }


def _content_digest() -> dict[str, bytes]:
    from herald.core.signatures import content_digest as digest  # noqa: PLC0415

    body = b'{"topic":"orders.eu"}'
    sha512 = base64.b64encode(__import__("hashlib").sha512(body).digest()).decode()
    return {
        "valid": _join(digest(body), body),
        "sha512": _join(f"sha-512=:{sha512}:", body),
        "both": _join(f"{digest(body)}, sha-512=:{sha512}:", body),
        "mismatch": _join(digest(b"other"), body),
        "unknown-only": _join("md5=:AAAA:", body),
        "not-bytes": _join("sha-256=1", body),
    }


def _jws_modes(header: dict[str, Any], claims: dict[str, Any]) -> Iterable[bytes]:
    yield b"\x01" + _join(_j(header), _j(claims), bytes(64))
    yield b"\x02" + _join(_j(header), _j(claims))


def _bearer_tokens() -> dict[str, bytes]:
    from fuzzing.targets.bearer_tokens import ISSUER, KID, SERVICE  # noqa: PLC0415
    from herald.core.scopes import ScopeSet  # noqa: PLC0415
    from herald.core.topics import TopicPattern  # noqa: PLC0415
    from herald.crypto.certbinding import thumbprint  # noqa: PLC0415

    access, _ = SERVICE.issue_access(
        tenant_id="t_1", client_id="app_1", scopes=ScopeSet.parse("publish:orders.>"), ttl=600
    )
    bound, _ = SERVICE.issue_access(
        tenant_id="t_1",
        client_id="app_1",
        scopes=ScopeSet.parse("admin"),
        ttl=600,
        bound_to=thumbprint(b"cert"),
    )
    sub, _ = SERVICE.issue_subscriber(
        tenant_id="t_1",
        client_id="app_1",
        recipient="user-1",
        patterns=[TopicPattern.parse("orders.*")],
        ttl=600,
    )
    operator, _ = SERVICE.issue_operator(operator_id="op_1", tenant_id=None, ttl=600)
    times = {"iat": NOW, "nbf": NOW, "exp": NOW + 600, "jti": "j1"}
    access_claims = {
        "iss": ISSUER,
        "aud": ISSUER,
        "sub": "app_1",
        "client_id": "app_1",
        "tenant": "t_1",
        "scope": "publish:orders.> subscribe:orders.*",
        "cnf": {"x5t#S256": thumbprint(b"cert")},
        **times,
    }
    sub_claims = {
        "iss": ISSUER,
        "aud": ISSUER + "/v1/stream",
        "sub": "user-1",
        "client_id": "app_1",
        "tenant": "t_1",
        "topics": ["orders.>", "alerts.*"],
        **times,
    }
    op_claims = {"iss": ISSUER, "aud": ISSUER + "/v1/admin", "sub": "op_1", **times}
    seeds = {
        "access": b"\x00" + access.encode(),
        "access-bound": b"\x00" + bound.encode(),
        "subscriber": b"\x00" + sub.encode(),
        "operator": b"\x00" + operator.encode(),
        "truncated": b"\x00" + access[:-10].encode(),
    }
    for name, typ, claims in (
        ("access", "at+jwt", access_claims),
        ("subscriber", "herald-sub+jwt", sub_claims),
        ("operator", "herald-op+jwt", op_claims),
    ):
        header = {"alg": "EdDSA", "typ": typ, "kid": KID}
        for i, seed in enumerate(_jws_modes(header, claims)):
            seeds[f"{name}-jws-{i}"] = seed
    header = {"alg": "EdDSA", "typ": "application/at+jwt", "kid": KID}
    seeds["access-float-exp"] = b"\x02" + _join(_j(header), _j({**access_claims, "exp": 1e30}))
    return seeds


def _client_assertions() -> dict[str, bytes]:
    from fuzzing.targets.client_assertions import BASE, CLIENT  # noqa: PLC0415

    header = {"alg": "EdDSA", "typ": "JWT", "kid": "hk_0123456789abcdef"}
    claims = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": [BASE + "/oauth/token"],
        "iat": NOW - 10,
        "exp": NOW + 60,
        "nbf": NOW - 10,
        "jti": "a1b2c3",
    }
    seeds = {}
    for i, seed in enumerate(_jws_modes(header, claims)):
        seeds[f"jws-{i}"] = seed
    seeds["rfc9864-alg"] = b"\x02" + _join(_j({**header, "alg": "Ed25519"}), _j(claims))
    seeds["crit"] = b"\x02" + _join(_j({**header, "crit": ["x"]}), _j(claims))
    seeds["float-times"] = b"\x02" + _join(_j(header), _j({**claims, "exp": NOW + 0.5}))
    seeds["raw"] = (
        b"\x00" + f"{b64url(_j(header))}.{b64url(_j(claims))}.{b64url(bytes(64))}".encode()
    )
    return seeds


def _app_keys() -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    ed = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes(pem, spki)
    p256 = ec.derive_private_key(7, ec.SECP256R1()).public_key().public_bytes(pem, spki)
    return {
        "ed25519": ed,
        "p256": p256,
        "truncated": ed[:60],
        "garbage-body": ed.replace(b"A", b"B", 3),
    }


def _topic_patterns() -> dict[str, bytes]:
    return {
        "patterns": b"\x00" + _join("orders.>", "orders.*.created", "orders.eu.created"),
        "star": b"\x00" + _join("*.eu", "orders.eu", "orders.eu"),
        "bad-tail": b"\x00" + _join("orders.>.x", "a..b", "x."),
        "scopes": b"\x01"
        + _join(
            "publish:orders.> subscribe:orders.* messages:read admin",
            "subscribe:orders.eu",
            "orders.eu",
        ),
        "scope-unknown": b"\x01" + _join("publish:", "read", ""),
        "query": b"\x02" + _join("orders.*, alerts.>", "", ""),
    }


def _aead_envelope() -> dict[str, bytes]:
    from fuzzing.targets.aead_envelope import AAD, SEALER  # noqa: PLC0415

    blob = SEALER.seal(b"hello", AAD)
    return {
        "valid": b"\x00" + _join(blob, AAD),
        "wrong-aad": b"\x00" + _join(blob, b"herald/aad/v1"),
        "unknown-version": b"\x00" + _join(b"\x01\x00\x00\x00\x09" + blob[5:], AAD),
        "short": b"\x00" + _join(blob[:20], AAD),
        "tamper-none": b"\x01" + _join(b"plaintext", b""),
        "tamper-one": b"\x01" + _join(b"plaintext", b"\x05\x01"),
    }


def _e2e_envelope() -> dict[str, bytes]:
    from fuzzing.targets.e2e_envelope import DEVICE, DEVICE_KEY, MESSAGE_ID  # noqa: PLC0415
    from herald.crypto.e2e import (  # noqa: PLC0415
        b64url_encode,
        encode_plaintext,
        seal_for_device,
    )

    public = DEVICE.public_key().public_bytes_raw()
    plaintext = encode_plaintext("Hi", "Body", {"k": 1})
    enc, ct = seal_for_device(
        public, plaintext, message_id=MESSAGE_ID, recipient="user-1", device_id="dev_1"
    )
    frame = {
        "type": "message",
        "id": MESSAGE_ID,
        "e2e": {
            "suite": "hpke-base-x25519-sha256-aes128gcm",
            "payloads": [
                {
                    "recipient": "user-1",
                    "device_id": DEVICE_KEY.device_id,
                    "enc": b64url_encode(enc),
                    "ct": b64url_encode(ct),
                }
            ],
        },
        "devices": [{"device_id": "dev_1", "public_key": b64url_encode(public)}],
    }
    return {
        "open": b"\x00" + _join(enc, ct, MESSAGE_ID, "user-1", "dev_1"),
        "open-other-device": b"\x00" + _join(enc, ct, MESSAGE_ID, "user-1", "dev_2"),
        "plaintext": b"\x01" + plaintext,
        "plaintext-array": b"\x01" + b"[1,2]",
        "public-key": b"\x02" + b64url_encode(public).encode(),
        "public-key-zero": b"\x02" + b64url_encode(bytes(32)).encode(),
        "frame": b"\x03" + _j(frame),
    }


def _signed_note() -> dict[str, bytes]:
    from fuzzing.targets.signed_note import ORIGIN, SIGNER  # noqa: PLC0415
    from herald.audit.note import Checkpoint, sign_checkpoint  # noqa: PLC0415

    checkpoint = Checkpoint(ORIGIN, 8, bytes(range(32)))
    note = sign_checkpoint(SIGNER, checkpoint).encode()
    # Another key's signature line (a witness): ignored by the verifier, but parsed.
    witness = base64.b64encode(bytes(68)).decode()
    witnessed = note + f"— witness.test {witness}\n".encode()
    text = checkpoint.to_text().encode()
    return {
        "note": b"\x00" + note,
        "witnessed": b"\x00" + witnessed,
        "no-blank-line": b"\x00" + note.replace(b"\n\n", b"\n"),
        "checkpoint": b"\x01" + text,
        "checkpoint-extension": b"\x01" + text + b"ext line\n",
        "checkpoint-leading-zero": b"\x01" + text.replace(b"\n8\n", b"\n08\n"),
        "verifier-key": b"\x02" + SIGNER.verifier_key().encode(),
        "signer-key": b"\x02"
        b"PRIVATE+KEY+" + SIGNER.verifier_key().encode().split(b"+", 1)[0] + b"+00000000+AQ==",
        "sign": b"\x03" + text,
    }


def _channel_endpoints() -> dict[str, bytes]:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    point = (
        ec.derive_private_key(5, ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "webhook": b"\x00" + _j({"url": "https://hooks.example.com/h?x=1", "secret": secret}),
        "webhook-ip": b"\x00" + _j({"url": "https://10.0.0.1/h", "secret": secret}),
        "webhook-ed25519": b"\x00"
        + _j(
            {
                "url": "https://example.com/",
                "ed25519_private_key": b64url(bytes(32)),
                "secrets": [secret],
            }
        ),
        "dingtalk": b"\x01"
        + _j(
            {
                "webhook": "https://oapi.dingtalk.com/robot/send?access_token=x",
                "secret": "SEC0123456789",
            }
        ),
        "feishu": b"\x02"
        + _j({"webhook": "https://open.feishu.cn/open-apis/bot/v2/hook/x", "secret": "abcdefgh12"}),
        "wecom": b"\x03"
        + _j({"webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x"}),
        "slack": b"\x04" + _j({"webhook": "https://hooks.slack.com/services/T/B/x"}),
        "apprise": b"\x05" + _j({"url": "tgram://123456789:abcdefg_hijklmnop/12345"}),
        "apprise-json": b"\x05" + _j({"url": "jsons://example.com/notify"}),
        "webpush": b"\x06"
        + _j(
            {
                "subscription": {
                    "endpoint": "https://push.example.net/send/abc",
                    "expirationTime": None,
                    "keys": {"p256dh": b64url(point), "auth": b64url(bytes(16))},
                }
            }
        ),
        "email": b"\x07"
        + _j({"address": "Ada.L+tag@Example.ORG", "name": " Ada ", "locale": "pt-BR"}),
        "email-idn": b"\x07" + _j({"address": "a@bücher.de"}),
    }


def _channel_responses() -> dict[str, bytes]:
    def answer(channel: int, status: int, headers: str, body: bytes, truncated: int = 0) -> bytes:
        return (
            bytes([channel])
            + (status - 100).to_bytes(2, "big")
            + bytes([truncated])
            + _join(headers, body)
        )

    return {
        "dingtalk-ok": answer(0, 200, "content-type: application/json", b'{"errcode":0}'),
        "dingtalk-rate": answer(0, 200, "", b'{"errcode":130101,"errmsg":"too fast"}'),
        "feishu-code": answer(1, 200, "", b'{"code":9499,"msg":"bad"}'),
        "wecom-truncated": answer(2, 200, "", b'{"errcode":0', 1),
        "slack-ok": answer(3, 200, "", b"ok"),
        "slack-gone": answer(3, 410, "", b"channel_is_archived"),
        "retry-seconds": answer(4, 503, "retry-after: 120", b""),
        "retry-date": answer(4, 429, "retry-after: Wed, 21 Oct 2026 07:28:00 GMT", b""),
        "redirect": answer(4, 302, "location: https://elsewhere.example/", b""),
    }


def _recipient_body() -> dict[str, bytes]:
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    return {
        "full": _j(
            {
                "endpoints": [
                    {"channel": "webhook", "url": "https://example.com/h", "secret": secret},
                    {"channel": "email", "address": "user@example.com"},
                    {"channel": "slack", "webhook": "https://hooks.slack.com/services/T/B/x"},
                ],
                "preferences": {"locale": "en", "timezone": "Europe/Paris"},
            }
        ),
        "empty": _j({"endpoints": []}),
        "unknown-channel": _j({"endpoints": [{"channel": "pager"}]}),
        "bad-preferences": _j({"endpoints": [], "preferences": {"locale": 5}}),
    }


def _stream_frames() -> dict[str, bytes]:
    return {
        "ack": b"\x00" + _j({"type": "ack", "id": "01890a5d-ac96-774b-bcce-b302099a8057"}),
        "subscribe": b"\x00" + _j({"type": "subscribe", "topics": ["orders.eu", "alerts.x.high"]}),
        "subscribe-forbidden": b"\x00" + _j({"type": "subscribe", "topics": ["secrets.>"]}),
        "unknown-type": b"\x00" + _j({"type": "nack", "id": "x"}),
        "query": b"\x01" + _join("orders.*,alerts.a.high", "01890a5d-ac96-774b-bcce-b302099a8057"),
    }


def _publish_body() -> dict[str, bytes]:
    message = {
        "topic": "orders.eu",
        "title": "Hi",
        "body": "Body",
        "data": {"a": [1, {"b": None}]},
        "priority": "high",
        "ttl": 60,
        "recipients": ["user-1", "user-2"],
        "channels": ["webhook"],
        "category": "billing",
        "deliver_at": "2027-01-01T00:00:00Z",
        "dedup_window": 60,
    }
    e2e = {
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "topic": "orders.eu",
        "recipients": ["user-1"],
        "e2e": {
            "suite": "hpke-base-x25519-sha256-aes128gcm",
            "payloads": [{"recipient": "user-1", "device_id": "d1", "enc": "AAAA", "ct": "AAAA"}],
        },
    }
    template = {
        "topic": "a.b",
        "template": {"name": "welcome", "version": 1, "locale": "en", "variables": {"x": 1}},
    }
    fallback = {
        "topic": "a.b",
        "fallback": [{"channels": ["webpush"]}, {"channels": ["email"], "after": 300}],
    }
    return {
        "publish": b"\x00" + _j(message),
        "e2e": b"\x00" + _j(e2e),
        "template": b"\x00" + _j(template),
        "fallback": b"\x00" + _j(fallback),
        "deep-data": b"\x00" + _j({"topic": "a", "data": {"a": [[[[[[[[[[[[1]]]]]]]]]]]]}}),
        "batch": b"\x01" + _j({"messages": [message, {"topic": "x..y"}]}),
        "subscriber-token": b"\x02"
        + _j({"recipient": "user-1", "topics": ["orders.>"], "ttl": 600}),
        "device": b"\x03" + _j({"public_key": b64url(bytes(range(9, 41))), "label": "phone"}),
    }


def _audit_bundle() -> dict[str, bytes]:
    from fuzzing.targets.audit_bundle import ORIGIN, SIGNER  # noqa: PLC0415
    from herald.audit.bundle import BundleHeader, checkpoint_line, entry_line  # noqa: PLC0415
    from herald.audit.entry import canonical_json  # noqa: PLC0415
    from herald.audit.merkle import leaf_hash, root_hash  # noqa: PLC0415
    from herald.audit.note import Checkpoint, sign_checkpoint  # noqa: PLC0415

    entries = [canonical_json({"index": i, "action": "message.published"}) for i in range(3)]
    leaves = [leaf_hash(e) for e in entries]
    header = BundleHeader(ORIGIN, SIGNER.verifier_key(), len(entries)).to_line()
    lines = [entry_line(i, e, h) for i, (e, h) in enumerate(zip(entries, leaves, strict=True))]
    notes = [
        checkpoint_line(sign_checkpoint(SIGNER, Checkpoint(ORIGIN, n, root_hash(leaves[:n]))))
        for n in (2, 3)
    ]
    intact = header + "".join(lines) + "".join(notes)
    return {
        "intact": intact.encode(),
        "no-checkpoint": (header + "".join(lines)).encode(),
        "entry-edited": intact.replace(lines[1], lines[1].replace('"h":"', '"h":"00')).encode(),
        "size-lies": intact.replace(f'"size":{len(entries)}', '"size":7').encode(),
        "not-json-line": (header + lines[0] + "{not json\n" + notes[0]).encode(),
        "not-a-bundle": b'{"format": "something-else"}\n',
    }


SEEDS = {
    "signature_headers": _signature_headers,
    "content_digest": _content_digest,
    "bearer_tokens": _bearer_tokens,
    "client_assertions": _client_assertions,
    "app_keys": _app_keys,
    "topic_patterns": _topic_patterns,
    "aead_envelope": _aead_envelope,
    "e2e_envelope": _e2e_envelope,
    "signed_note": _signed_note,
    "channel_endpoints": _channel_endpoints,
    "channel_responses": _channel_responses,
    "recipient_body": _recipient_body,
    "stream_frames": _stream_frames,
    "publish_body": _publish_body,
    "audit_bundle": _audit_bundle,
}


def write(root: Path = CORPUS_DIR) -> None:
    """Rewrite every target's seed directory."""
    missing = set(TARGETS) - set(SEEDS)
    if missing:
        raise SystemExit(f"no seeds for targets: {sorted(missing)}")
    for name, make in SEEDS.items():
        directory = root / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for seed_name, data in make().items():
            (directory / seed_name).write_bytes(data)


if __name__ == "__main__":
    write()
