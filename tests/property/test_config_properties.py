"""Hypothesis properties of the JWKS Herald publishes and of channel endpoint configurations.

JWKS: the document ``/.well-known/jwks.json`` serves is what a verifier parses. Whatever the
mix of active, pre-published and retired keys, it lists exactly the keys not retired, each
JWK is public-only and its ``kid`` is its RFC 7638 thumbprint (computed by joserfc, an
independent implementation), and a verifier that knows only the JWKS (PyJWT's ``PyJWKSet``)
verifies every token the service issues.

Endpoint configurations (webhook/recipient JSON): each channel's ``validate`` refuses any
JSON value with ``BadRequest`` only; what it accepts is a fixed point (validated again at
delivery time, it stays the same); and the redacted view never shows a secret.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fuzzing.targets._channels import CHANNELS as ALL_CHANNELS
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import OKPKey

from herald.channels.base import Channel, redact_endpoint
from herald.core.scopes import ScopeSet
from herald.crypto.signing import PURPOSE_TOKEN, LoadedSigningKey, jwk_thumbprint
from herald.crypto.tokens import TokenService
from herald.errors import BadRequest

NOW = datetime(2027, 1, 1, tzinfo=UTC)
ISSUER = "https://herald.test"

# --- JWKS --------------------------------------------------------------------------------

# Each key: (seconds created before now, activation offset or None, retirement offset or None)
# relative to now; negative offsets are in the past.
key_specs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),
        st.one_of(st.none(), st.integers(min_value=-(10**6), max_value=10**6)),
        st.one_of(st.none(), st.integers(min_value=-(10**6), max_value=10**6)),
    ),
    min_size=1,
    max_size=5,
)


def build_keys(specs: list[tuple[int, int | None, int | None]]) -> list[LoadedSigningKey]:
    keys = []
    for age, activates, retires in specs:
        private = Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        keys.append(
            LoadedSigningKey(
                jwk_thumbprint(raw),
                PURPOSE_TOKEN,
                private,
                raw,
                NOW - timedelta(seconds=age),
                None if activates is None else NOW + timedelta(seconds=activates),
                None if retires is None else NOW + timedelta(seconds=retires),
            )
        )
    return keys


@settings(max_examples=60, deadline=None)
@given(key_specs)
def test_jwks_lists_exactly_the_keys_not_retired_as_public_jwks(
    specs: list[tuple[int, int | None, int | None]],
) -> None:
    keys = build_keys(specs)
    service = TokenService(issuer=ISSUER, keys=keys, clock=NOW.timestamp, new_jti=lambda: "jti")
    document = json.loads(json.dumps(service.jwks()))  # exactly what is served
    assert set(document) == {"keys"}
    published = {jwk["kid"] for jwk in document["keys"]}
    assert published == {k.kid for k in keys if not k.retired(NOW)}
    for jwk in document["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}  # no private "d"
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == (
            "OKP",
            "Ed25519",
            "sig",
            "EdDSA",
        )
        # RFC 7638 thumbprint by an independent implementation.
        assert OKPKey.import_key(jwk).thumbprint() == jwk["kid"]


@settings(max_examples=40, deadline=None)
@given(key_specs, st.sampled_from(["access", "subscriber", "operator"]))
def test_a_verifier_holding_only_the_jwks_verifies_issued_tokens(
    specs: list[tuple[int, int | None, int | None]], kind: str
) -> None:
    keys = build_keys(specs)
    service = TokenService(issuer=ISSUER, keys=keys, clock=NOW.timestamp, new_jti=lambda: "jti")
    signing = [k for k in keys if k.active(NOW) and not k.retired(NOW)]
    if not signing:
        return  # no key may sign now: nothing is issued (an operator error, not input)
    if kind == "access":
        token, _ = service.issue_access(
            tenant_id="t", client_id="c", scopes=ScopeSet.parse("admin"), ttl=600
        )
    elif kind == "subscriber":
        token, _ = service.issue_subscriber(
            tenant_id="t", client_id="c", recipient="r", patterns=(), ttl=600
        )
    else:
        token, _ = service.issue_operator(operator_id="o", tenant_id=None, ttl=600)
    jwk_set = jwt.PyJWKSet.from_dict(service.jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwk_set.keys if k.key_id == kid)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        options={
            "verify_aud": False,
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        },
    )
    assert claims["iss"] == ISSUER


# --- endpoint configurations -----------------------------------------------------------

#: One of each built-in channel, as the channel fuzz targets build them.
CHANNELS: dict[str, Channel] = {c.name: c for c in ALL_CHANNELS}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
url_like = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}{path}",
        st.sampled_from(["https", "http", "HTTPS", "ftp", "tgram", "jsons", ""]),
        st.one_of(
            st.from_regex(r"[a-z0-9.\-\[\]:@%]{0,30}", fullmatch=True),
            st.sampled_from(
                ["hooks.slack.com", "oapi.dingtalk.com", "127.0.0.1", "[::1]", "0x7f.1", "[::1"]
            ),
        ),
        st.from_regex(r"[/?#a-zA-Z0-9=&%.\-]{0,30}", fullmatch=True),
    ),
)
# Objects with the fields the channels know, holding values of the right and wrong shapes.
endpoint_like = st.dictionaries(
    st.sampled_from(
        [
            "url",
            "webhook",
            "secret",
            "secrets",
            "ed25519_private_key",
            "subscription",
            "address",
            "name",
            "locale",
            "channel",
            "other",
        ]
    ),
    st.one_of(url_like, json_values),
    max_size=4,
)

# Web push subscriptions (RFC 8030 / the Push API's PushSubscription JSON).
subscription_like = st.fixed_dictionaries(
    {
        "subscription": st.fixed_dictionaries(
            {},
            optional={
                "endpoint": url_like,
                "expirationTime": st.one_of(st.none(), st.integers(), st.floats(), st.text()),
                "keys": st.one_of(
                    json_values,
                    st.fixed_dictionaries(
                        {"p256dh": st.text(max_size=90), "auth": st.text(max_size=24)}
                    ),
                ),
            },
        )
    }
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(CHANNELS)), st.one_of(endpoint_like, subscription_like, json_values))
def test_endpoint_validation_refuses_only_with_bad_request(name: str, endpoint: Any) -> None:
    channel = CHANNELS[name]
    try:
        normal = channel.validate(endpoint)
    except BadRequest:
        return
    assert channel.validate(normal) == normal


def _whsec(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


hosts = st.from_regex(r"[a-z][a-z0-9]{0,10}\.(com|net|org|example)", fullmatch=True)
tokens = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    min_size=8,
    max_size=24,
)


@settings(max_examples=150, deadline=None)
@given(
    host=hosts,
    path=st.from_regex(r"(/[a-z0-9]{1,8}){0,3}", fullmatch=True),
    token=tokens,
    secret=st.binary(min_size=24, max_size=64),
    previous=st.lists(st.binary(min_size=24, max_size=64), max_size=4),
    seed=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
)
def test_valid_webhook_configs_are_fixed_points_and_redact_every_secret(
    *, host: str, path: str, token: str, secret: bytes, previous: list[bytes], seed: bytes | None
) -> None:
    channel = CHANNELS["webhook"]
    endpoint: dict[str, Any] = {
        "url": f"https://{host}{path}?token={token}",
        "secret": _whsec(secret),
        "secrets": [_whsec(p) for p in previous],
    }
    if seed is not None:
        endpoint["ed25519_private_key"] = base64.b64encode(seed).decode()
    normal = channel.validate(endpoint)
    assert channel.validate(normal) == normal
    shown = json.dumps(redact_endpoint(channel, normal))
    for value in (token, _whsec(secret), *(_whsec(p) for p in previous)):
        assert value not in shown
    if seed is not None:
        assert base64.b64encode(seed).decode() not in shown


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(["dingtalk", "feishu", "wecom", "slack"]),
    token=tokens,
)
def test_valid_robot_configs_are_fixed_points_and_redact_the_webhook(kind: str, token: str) -> None:
    channel = CHANNELS[kind]
    webhook, secret = {
        "dingtalk": (f"https://oapi.dingtalk.com/robot/send?access_token={token}", "SEC" + token),
        "feishu": (f"https://open.feishu.cn/open-apis/bot/v2/hook/{token}", token),
        "wecom": (f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={token}", None),
        "slack": (f"https://hooks.slack.com/services/T0/B0/{token}", None),
    }[kind]
    endpoint = {"webhook": webhook} | ({"secret": secret} if secret else {})
    normal = channel.validate(endpoint)
    assert channel.validate(normal) == normal
    shown = json.dumps(redact_endpoint(channel, normal))
    assert token not in shown
