"""Audit entries' canonical JSON (herald.audit.entry.canonical_json) against a reference.

The writer encodes with msgspec; the standard library's ``json.dumps`` with sorted keys,
compact separators and ``ensure_ascii=False`` is the reference (it escapes strings as
ECMAScript ``JSON.stringify`` does, RFC 8785 §3.2.2.2), and ``herald audit verify``
re-encodes with it. Any difference would make verifiers reject genuine entries.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.audit.entry import canonical_json

# Strings: every code point except lone surrogates (not encodable as UTF-8 by either).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
scalars = st.none() | st.booleans() | st.integers() | text
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(max_codepoint=0x7F), max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def reference(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@settings(max_examples=500)
@given(values)
def test_canonical_json_equals_the_reference_encoding(value: Any) -> None:
    assert canonical_json(value) == reference(value)


@pytest.mark.parametrize(
    "value",
    [
        '\u2028\u2029\x7f\x00\x1f"\\/',
        "é中😀",
        2**64,
        -(2**63) - 1,
        {"b": 1, "a": [True, None, {"z": "", "y": 0}]},
    ],
)
def test_canonical_json_edge_values(value: Any) -> None:
    assert canonical_json({"v": value}) == reference({"v": value})


@pytest.mark.parametrize("bad", [1.5, float("nan"), b"bytes", {1: "int key"}, {"é": 1}])
def test_values_outside_the_canonical_set_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json({"v": bad})
