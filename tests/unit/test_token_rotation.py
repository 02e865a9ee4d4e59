"""Token-signing key rotation in TokenService: pre-publication, activation, retirement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from herald.core.scopes import ScopeSet
from herald.crypto.signing import LoadedSigningKey, jwk_thumbprint
from herald.crypto.tokens import TokenService
from herald.errors import InvalidToken

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ISSUER = "https://herald.test"


def key(
    created: datetime, *, activates: datetime | None = None, retired: datetime | None = None
) -> LoadedSigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return LoadedSigningKey(jwk_thumbprint(raw), "token", private, raw, created, activates, retired)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


def service(clock: Clock, *keys: LoadedSigningKey) -> TokenService:
    counter = iter(range(1_000_000))
    return TokenService(
        issuer=ISSUER, keys=keys, clock=clock, new_jti=lambda: f"jti-{next(counter)}"
    )


def issue(tokens: TokenService) -> str:
    token, _ = tokens.issue_access(
        tenant_id="t", client_id="c", scopes=ScopeSet.parse("publish:>"), ttl=600
    )
    return token


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def published(tokens: TokenService) -> set[str]:
    return {k["kid"] for k in tokens.jwks()["keys"]}


def test_a_prepublished_key_is_in_the_jwks_but_does_not_sign_yet() -> None:
    clock = Clock(T0)
    old = key(T0 - timedelta(days=30))
    new = key(T0, activates=T0 + timedelta(minutes=5))
    tokens = service(clock, old, new)
    assert published(tokens) == {old.kid, new.kid}
    assert kid(issue(tokens)) == old.kid
    clock.at = T0 + timedelta(minutes=5)
    assert kid(issue(tokens)) == new.kid


def test_old_tokens_verify_until_the_old_key_retires() -> None:
    clock = Clock(T0)
    retire = T0 + timedelta(hours=1)
    old = key(T0 - timedelta(days=30), retired=retire)
    new = key(T0, activates=T0)
    signer = service(clock, old)  # a node that signed before the rotation
    before = issue(signer)
    tokens = service(clock, old, new)
    assert kid(issue(tokens)) == new.kid
    assert tokens.verify_access(before).client_id == "c"
    clock.at = retire
    with pytest.raises(InvalidToken):
        tokens.verify_access(before)
    assert published(tokens) == {new.kid}


def test_a_retired_key_never_signs() -> None:
    clock = Clock(T0)
    retired = key(T0 - timedelta(days=2), retired=T0 - timedelta(seconds=1))
    current = key(T0 - timedelta(days=3))
    tokens = service(clock, retired, current)
    assert kid(issue(tokens)) == current.kid
    assert published(tokens) == {current.kid}


def test_the_newest_activated_key_signs() -> None:
    clock = Clock(T0)
    first = key(T0 - timedelta(days=3))
    second = key(T0 - timedelta(days=2), activates=T0 - timedelta(days=1))
    third = key(T0 - timedelta(hours=1), activates=T0 + timedelta(hours=1))
    tokens = service(clock, third, first, second)
    assert kid(issue(tokens)) == second.kid
    assert tokens.kids == frozenset({first.kid, second.kid, third.kid})


def test_a_key_superseded_while_prepublished_never_signs() -> None:
    # rotate-signing --prepublish 300 (B), then within those 300 s --prepublish 1 (C):
    # C signs from its activation, and B — retiring 24 h after C's activation — never does.
    clock = Clock(T0)
    first = key(T0 - timedelta(days=3), retired=T0 + timedelta(days=1, seconds=41))
    b = key(T0, activates=T0 + timedelta(seconds=300), retired=T0 + timedelta(days=1, seconds=41))
    c = key(T0 + timedelta(seconds=10), activates=T0 + timedelta(seconds=11))
    tokens = service(clock, first, b, c)
    for offset in (0, 10):
        clock.at = T0 + timedelta(seconds=offset)
        assert kid(issue(tokens)) == first.kid
    for offset in (11, 301, 86_400):
        clock.at = T0 + timedelta(seconds=offset)
        assert kid(issue(tokens)) == c.kid


# -- the cache of verified tokens ------------------------------------------------------------
def test_a_verified_token_is_served_from_the_cache_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(T0)
    tokens = service(clock, key(T0 - timedelta(days=1)))
    token = issue(tokens)
    first = tokens.verify_access(token)
    calls: list[str] = []
    real_decode = jwt.decode

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("decode")
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    assert tokens.verify_access(token) is first  # no signature check the second time
    assert calls == []
    clock.at = T0 + timedelta(seconds=600 + 31)  # past exp and the 30 s leeway
    with pytest.raises(InvalidToken):
        tokens.verify_access(token)


def test_a_cached_token_dies_with_its_key_and_is_not_another_kind() -> None:
    clock = Clock(T0)
    signing = key(T0 - timedelta(days=1), retired=T0 + timedelta(seconds=60))
    tokens = service(clock, signing)
    token = issue(tokens)
    tokens.verify_access(token)
    with pytest.raises(InvalidToken):
        tokens.verify_subscriber(token)  # cached as an access token: still refused here
    with pytest.raises(InvalidToken):
        tokens.verify_operator(token)
    clock.at = T0 + timedelta(seconds=61)
    with pytest.raises(InvalidToken):
        tokens.verify_access(token)  # the key retired: cached or not, refused


def test_a_tampered_token_is_not_served_from_the_cache() -> None:
    tokens = service(Clock(T0), key(T0 - timedelta(days=1)))
    token = issue(tokens)
    tokens.verify_access(token)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(InvalidToken):
        tokens.verify_access(forged)
