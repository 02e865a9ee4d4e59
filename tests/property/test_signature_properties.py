"""Hypothesis properties of herald.core.signatures: the parsers never fail in an unexpected
way, ``signature_params`` and ``parse_signature`` round-trip, and the signature base is the
plain join of RFC 9421 §2.5."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.signatures import (
    ALGORITHMS,
    NONCE_MIN_BYTES,
    ParsedSignature,
    check_content_digest,
    parse_signature,
    signature_base,
    signature_params,
)
from herald.errors import DigestMismatch, SignatureInvalid, SignatureMissing

EXPECTED_SIGNATURE_ERRORS = (SignatureMissing, SignatureInvalid)

# --- strategies -------------------------------------------------------------------------

# Characters that make up structured fields, so random text gets past the first byte.
SF_ALPHABET = 'sigabcdekynoqrt-_*@=();:",. ?!/+019\\\t%é\x00\n'
sf_text = st.text(alphabet=SF_ALPHABET, max_size=200)
latin1_text = st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
any_header = st.one_of(st.none(), st.text(max_size=200), sf_text, latin1_text)

component_names = st.from_regex(r"@?[a-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True)
components = st.lists(component_names, max_size=16, unique=True)
labels = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,15}", fullmatch=True)
# RFC 8941 sf-string: printable ASCII (the serializer escapes '"' and '\').
sf_strings = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)
nonces = st.binary(min_size=NONCE_MIN_BYTES, max_size=96).map(
    lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
)
sf_integers = st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@st.composite
def mutated_valid_input(draw: st.DrawFn) -> tuple[str, str]:
    """A valid header pair with a few random characters replaced, inserted or deleted."""
    params = signature_params(
        draw(components),
        created=draw(sf_integers),
        nonce=draw(nonces),
        keyid=draw(sf_strings),
        alg=draw(st.sampled_from(sorted(ALGORITHMS))),
    )
    text = list(f"sig={params}")
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        i = draw(st.integers(min_value=0, max_value=len(text)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        char = draw(st.sampled_from(SF_ALPHABET))
        if op == "insert":
            text.insert(i, char)
        elif i < len(text):
            if op == "replace":
                text[i] = char
            else:
                del text[i]
    signature = draw(st.sampled_from(["sig=:AAAA:", "sig=:", "sig=(:AA==:)", "sig=1", "x=:AA==:"]))
    return "".join(text), signature


# --- parsers fail only with their own errors --------------------------------------------


@settings(max_examples=300)
@given(any_header, any_header)
def test_parse_signature_raises_only_signature_errors(
    signature_input: str | None, signature: str | None
) -> None:
    try:
        result = parse_signature(signature_input, signature)
    except EXPECTED_SIGNATURE_ERRORS:
        return
    assert isinstance(result, ParsedSignature)


@settings(max_examples=200)
@given(mutated_valid_input())
def test_parse_signature_mutated_raises_only_signature_errors(pair: tuple[str, str]) -> None:
    try:
        result = parse_signature(*pair)
    except EXPECTED_SIGNATURE_ERRORS:
        return
    assert isinstance(result, ParsedSignature)


@settings(max_examples=300)
@given(
    st.one_of(
        any_header,
        st.builds(
            lambda name, data: f"{name}=:{base64.b64encode(data).decode()}:",
            st.sampled_from(["sha-256", "sha-512", "md5", "SHA-256"]),
            st.binary(max_size=80),
        ),
    ),
    st.binary(max_size=64),
)
def test_check_content_digest_raises_only_digest_mismatch(header: str | None, body: bytes) -> None:
    try:
        check_content_digest(header, body)
    except DigestMismatch:
        return


# --- round trips --------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    label=labels,
    names=components,
    created=sf_integers,
    expires=st.one_of(st.none(), sf_integers),
    nonce=nonces,
    keyid=sf_strings,
    alg=st.sampled_from(sorted(ALGORITHMS)),
    signature=st.binary(max_size=128),
)
def test_signature_params_parse_round_trip(
    *,
    label: str,
    names: list[str],
    created: int,
    expires: int | None,
    nonce: str,
    keyid: str,
    alg: str,
    signature: bytes,
) -> None:
    params = signature_params(
        names, created=created, nonce=nonce, keyid=keyid, alg=alg, expires=expires
    )
    header = f"{label}=:{base64.b64encode(signature).decode()}:"
    parsed = parse_signature(f"{label}={params}", header)
    assert parsed == ParsedSignature(
        label=label,
        components=tuple(names),
        created=created,
        expires=expires,
        nonce=nonce,
        keyid=keyid,
        alg=alg,
        params=params,
        signature=signature,
    )


@settings(max_examples=150)
@given(
    names=components,
    data=st.data(),
    nonce=nonces,
    keyid=sf_strings,
    created=sf_integers,
)
def test_signature_base_is_the_plain_join(
    names: list[str], data: st.DataObject, nonce: str, keyid: str, created: int
) -> None:
    values = {name: data.draw(header_values, label=name) for name in names}
    params = signature_params(names, created=created, nonce=nonce, keyid=keyid, alg="ed25519")
    base = signature_base(names, values.get, params)
    lines = base.decode("ascii").split("\n")
    # One line per component plus the @signature-params line: no value spills over.
    assert len(lines) == len(names) + 1
    for line, name in zip(lines, names, strict=False):
        assert line == f'"{name}": {values[name]}'
    assert lines[-1] == f'"@signature-params": {params}'
    expected = "\n".join(
        [*(f'"{name}": {values[name]}' for name in names), f'"@signature-params": {params}']
    )
    assert base == expected.encode("ascii")
