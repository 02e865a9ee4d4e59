"""Hypothesis properties of herald.core.templates: escaping, compile/render totality, lookup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from herald.core.templates import (
    CompiledTemplate,
    TemplateRefused,
    TemplateRenderFailed,
    TemplateSpec,
    TemplateVariant,
    compile_template,
)
from herald.errors import BadRequest

# --- autoescape -----------------------------------------------------------------------------

HTML = compile_template(
    TemplateSpec(
        default_locale="en",
        variants=[
            TemplateVariant(
                locale="en",
                html=(
                    "<a title=\"{{ v }}\" data-x='{{ v }}'>{{ v }}</a>|{{ v ~ w }}|{{ v|upper }}"
                    "|{{ [v, w]|join }}|{{ v|replace('a', w) }}|{{ '%s' % v }}|{{ v|trim }}"
                ),
            )
        ],
    )
)


@settings(max_examples=300)
@given(st.text(), st.text())
def test_variables_never_break_out_of_html(v: str, w: str) -> None:
    html = HTML.render("email", "en", {"v": v, "w": w}).html
    e = escape
    pieces = [
        e(v + w),
        e(v.upper()),
        e(v) + e(w),
        e(v.replace("a", w)),
        e(v),
        e(v.strip()),
    ]
    assert html == f"<a title=\"{e(v)}\" data-x='{e(v)}'>{e(v)}</a>|" + "|".join(pieces)
    # What is left once the template's own markup is removed holds no markup characters.
    values = html.replace('<a title="', "").replace("\" data-x='", "").replace("'>", "")
    assert not {"<", ">", '"', "'"} & set(values.replace("</a>", ""))


# --- compile and render are total ---------------------------------------------------------

TOKENS = [
    *("{{", "}}", "{%", "%}", "{#", "#}", "{", "}", "(", ")", "[", "]", ",", ":", "=", "."),
    *("|", "~", "+", "-", "*", "**", "/", "//", "%", " ", "\n", "'a'", '"b"', "9", "1000"),
    *(" for ", " in ", " if ", " else ", " endif ", " endfor ", " set ", " not ", " is "),
    *("macro", "endmacro", "call", "endcall", "caller", "filter", "endfilter", "raw"),
    *("endraw", "block", "endblock", "include", "extends", "import", "from", "as", "with"),
    *("endwith", "autoescape", "endautoescape", "recursive", "loop", "namespace", "ns"),
    *("self", "super", "range", "defined", "x", "y", "d", "__class__", "mro", "attr"),
    *("upper", "join", "replace", "center", "format", "indent", "list", "string", "int"),
    *("length", "batch", "slice", "items", "tojson", "wordwrap", "urlize", "e", "safe"),
    *("default", "map", "sum", "first", "sort", "dictsort", "truncate", "true", "none"),
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
sources = st.one_of(st.text(max_size=300), token_soup)


def _detail(error: type[BadRequest], call: Callable[[], object]) -> str | None:
    """The problem detail ``call`` raises as ``error``, or None if it returns."""
    try:
        call()
    except error as exc:
        return exc.detail
    return None


def _single(source: str) -> TemplateSpec:
    return TemplateSpec(
        default_locale="en", variants=[TemplateVariant(locale="en", body=source, html=source)]
    )


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(sources)
def test_any_source_compiles_or_is_refused(source: str) -> None:
    detail = _detail(TemplateRefused, lambda: compile_template(_single(source)))
    assert detail is None or detail.startswith("variant (*, en) ")
    assert detail is None or "\n" not in detail


VARIABLES: dict[str, Any] = {"x": [1, "a", {"k": "<v>"}], "y": "s<&>", "d": {"a": 1}, "ns": 3}


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(token_soup)
def test_any_compiled_template_renders_or_fails_cleanly(source: str) -> None:
    try:
        compiled = compile_template(_single(source))
    except TemplateRefused:
        return
    detail = _detail(TemplateRenderFailed, lambda: compiled.render_all(VARIABLES))
    assert detail is None or detail.startswith("variant (*, en) ")
    assert detail is None or "\n" not in detail


# --- selection --------------------------------------------------------------------------------

channels = st.sampled_from(["*", "email", "sms", "push", "webhook"])
locales = st.sampled_from(["en", "en-GB", "fr", "fr-CA", "zh", "zh-Hant", "zh-Hant-TW", "de"])


@st.composite
def compiled_templates(draw: st.DrawFn) -> CompiledTemplate:
    pairs = draw(st.sets(st.tuples(channels, locales), max_size=12))
    default = draw(locales)
    pairs.add(("*", default))
    variants = [TemplateVariant(channel=c, locale=loc, body=f"{c} {loc}") for c, loc in pairs]
    return compile_template(TemplateSpec(default_locale=default, variants=variants))


@settings(max_examples=300)
@given(compiled_templates(), channels, st.one_of(st.none(), locales, st.text(max_size=20)))
def test_select_always_finds_the_nearest_variant(
    compiled: CompiledTemplate, channel: str, locale: str | None
) -> None:
    variant = compiled.select(channel, locale)
    assert variant in compiled.spec.variants
    assert variant.channel in {channel, "*"}
    chosen = variant.locale.lower()
    requested = (locale or "").lower()
    # The chosen locale is the requested one, a prefix of it, or the default.
    assert (
        chosen == compiled.spec.default_locale.lower()
        or requested == chosen
        or requested.startswith(chosen + "-")
    )
    # A variant for exactly this channel and locale always wins.
    if locale is not None:
        exact = [v for v in compiled.spec.variants if (v.channel, v.locale) == (channel, locale)]
        if exact:
            assert variant == exact[0]
    rendered = compiled.render(channel, locale, {})
    assert (rendered.channel, rendered.locale) == (variant.channel, variant.locale)
