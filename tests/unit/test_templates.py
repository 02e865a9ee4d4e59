from __future__ import annotations

from typing import Any

import msgspec
import pytest

from herald.core import templates
from herald.core.templates import (
    OUTPUT_MAX,
    RANGE_MAX,
    RENDER_STEPS_MAX,
    SOURCE_MAX,
    VALUE_MAX,
    VARIANTS_MAX,
    CompiledTemplate,
    Rendered,
    TemplateRefused,
    TemplateRenderFailed,
    TemplateSpec,
    TemplateVariant,
    compile_template,
    parse_spec,
)
from herald.errors import BadRequest

SECRET = "alice.secret@example.com"


def one(source: str, field: str = "body") -> CompiledTemplate:
    """A template with one ("*", "en") variant holding ``source`` in ``field``."""
    variant = TemplateVariant(locale="en", **{field: source})
    return compile_template(TemplateSpec(default_locale="en", variants=[variant]))


def render(source: str, variables: dict[str, Any] | None = None, field: str = "body") -> str:
    out = getattr(one(source, field).render("email", "en", variables or {}), field)
    assert isinstance(out, str)
    return out


def refused(source: str, field: str = "body") -> str:
    with pytest.raises(TemplateRefused) as info:
        one(source, field)
    assert info.value.slug == "invalid-template"
    return info.value.detail


def doubling(expr: str, tail: str = "", start: str = "'ab'") -> str:
    """A template that sets ``ns.s = <expr>`` 40 times: 2**40 times the start, unless capped."""
    return (
        f"{{% set ns = namespace(s={start}) %}}{{% for i in range(40) %}}"
        f"{{% set ns.s = {expr} %}}{{% endfor %}}{tail}"
    )


def render_failure(source: str, variables: dict[str, Any] | None = None) -> str:
    compiled = one(source)
    with pytest.raises(TemplateRenderFailed) as info:
        compiled.render("email", "en", variables or {})
    assert info.value.slug == "template-render-failed"
    assert "\n" not in info.value.detail
    return info.value.detail


def test_exports() -> None:
    assert set(templates.__all__) == {
        "DESCRIPTION_MAX",
        "LOOP_DEPTH_MAX",
        "OUTPUT_MAX",
        "RANGE_MAX",
        "RENDER_STEPS_MAX",
        "SOURCE_MAX",
        "VALUE_MAX",
        "VARIANTS_MAX",
        "CompiledTemplate",
        "Rendered",
        "TemplateRefused",
        "TemplateRenderFailed",
        "TemplateSpec",
        "TemplateVariant",
        "compile_template",
        "parse_spec",
    }
    for name in templates.__all__:
        assert hasattr(templates, name)


@pytest.mark.parametrize(
    ("error", "slug"),
    [(TemplateRefused, "invalid-template"), (TemplateRenderFailed, "template-render-failed")],
)
def test_errors_are_422_problems(error: type[BadRequest], slug: str) -> None:
    exc = error("x")
    assert isinstance(exc, BadRequest)
    assert exc.status == 422
    assert exc.slug == slug
    assert exc.type_uri == f"urn:herald:problem:{slug}"


# --- static sandbox checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ ''.__class__.__mro__ }}", "'__class__'"),
        ("{{ x['__globals__'] }}", "'__globals__'"),
        ("{{ x['__glo' ~ 'bals__'] }}", "'__globals__'"),
        ("{{ x|attr('__class__') }}", "'__class__'"),
        ("{{ f.func_globals }}", "'func_globals'"),
        ("{{ cycler.__init__ }}", "'__init__'"),
        ("{{ x.mro() }}", "'mro'"),
        ("{{ ''.format_map }}", "'format_map'"),
        ("{{ g.gi_frame }}", "'gi_frame'"),
        ("{{ c.cr_code }}", "'cr_code'"),
        ("{{ a.ag_frame }}", "'ag_frame'"),
        ("{{ t.tb_frame }}", "'tb_frame'"),
        ("{{ x._private }}", "'_private'"),
        ("{{ x|map(attribute='__class__')|list }}", "'__class__'"),
        ("{{ x|selectattr('a.__dict__')|list }}", "'__dict__'"),
        ("{{ x|groupby('__class__') }}", "'__class__'"),
        ("{{ x|sort(attribute='__len__') }}", "'__len__'"),
        ("{% set ns = namespace() %}{% set ns.__x = 1 %}", "'__x'"),
        ("{% if x %}{{ x.y.__class__ }}{% endif %}", "'__class__'"),
    ],
)
@pytest.mark.parametrize("field", ["title", "body", "html"])
def test_static_escapes_refused(source: str, name: str, field: str) -> None:
    detail = refused(source, field)
    assert detail == f"variant (*, en) {field} line 1: {name} is outside the sandbox"


def test_escape_reports_its_line() -> None:
    detail = refused("Hello\n{{ name }}\n{{ name.__class__ }}")
    assert detail == "variant (*, en) body line 3: '__class__' is outside the sandbox"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% include 'other' %}", "{% include %} is not allowed"),
        ("{% extends 'base' %}", "{% extends %} is not allowed"),
        ("{% import 'macros' as m %}", "{% import %} is not allowed"),
        ("{% from 'macros' import m %}", "{% from … import %} is not allowed"),
        ("{% for x in y recursive %}{{ loop(x) }}{% endfor %}", "recursive loops"),
        ("{{ [1, 2]|random }}", "No filter named 'random'"),
        ("{{ x|no_such_filter }}", "No filter named 'no_such_filter'"),
        ("{{ x is no_such_test }}", "No test named 'no_such_test'"),
        ("{{ x", "unexpected end of template"),
        ("{% endfor %}", "unknown tag 'endfor'"),
        ("{% do x.append(1) %}", "unknown tag 'do'"),
    ],
)
def test_constructs_refused(source: str, reason: str) -> None:
    detail = refused(source)
    assert detail.startswith("variant (*, en) body line 1: ")
    assert reason in detail


def test_syntax_error_reports_its_line() -> None:
    assert refused("a\nb\n{{ x }\n").startswith("variant (*, en) body line 3: ")


def test_loop_nesting() -> None:
    loop = "{% for a in x %}{}{% endfor %}"
    three = loop.replace("{}", loop.replace("{}", loop.replace("{}", "{{ a }}")))
    assert render(three, {"x": [1]}) == "1"
    four = loop.replace("{}", three)
    assert "loops nest deeper than 3" in refused(four)
    # A loop after a loop, or in a loop's else branch, does not nest.
    siblings = f"{three}{three}{{% for b in x %}}{{% else %}}{three}{{% endfor %}}"
    assert render(siblings, {"x": [1]}) == "11"


def test_deeply_nested_source_is_refused_not_crashed() -> None:
    source = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    assert "nests too deeply" in refused(source)


def test_uncompilable_literal_is_refused() -> None:
    assert "cannot be compiled" in refused("{{ 1" + "0" * 5000 + " }}")


# --- runtime sandbox ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        ("{{ x[name] }}", {"x": {}, "name": "__class__"}),
        ("{{ (''|attr(n)) }}", {"n": "__class__"}),
        ("{{ x[n][m] }}", {"x": "", "n": "__class__", "m": "__mro__"}),
        ("{{ '{0.__class__}'.format(x) }}", {"x": 1}),
        ("{{ x|map(attribute=n)|list }}", {"x": [1], "n": "__class__"}),
    ],
)
def test_runtime_escapes_fail_at_render(source: str, variables: dict[str, Any]) -> None:
    detail = render_failure(source, variables)
    assert detail.startswith("variant (*, en) body line 1: ")
    # The attribute name came from a variable: it is a value, so it is not repeated.
    assert "__class__" not in detail or "__class__" in source


@pytest.mark.parametrize(
    ("source", "variables", "name"),
    [
        ("{{ x.append(1) }}", {"x": []}, "append"),
        ("{{ d.update(a=1) }}", {"d": {}}, "update"),
        ("{{ s.add(1) }}", {"s": set()}, "add"),
    ],
)
def test_variables_are_immutable(source: str, variables: dict[str, Any], name: str) -> None:
    assert render_failure(source, variables).endswith(f"{name!r} is outside the sandbox")


def test_undefined_variable_fails() -> None:
    assert (
        render_failure("a\nb\n{{ missing }}")
        == "variant (*, en) body line 3: 'missing' is undefined"
    )
    assert "is undefined" in render_failure("{% if missing %}x{% endif %}")
    assert render_failure("{{ x.nope }}", {"x": {}}).endswith("no attribute or key 'nope'")
    # Inside a printed container too (a list prints the repr of its items, which is quiet).
    assert render_failure("{{ [x.nope] }}", {"x": {}}).endswith("no attribute or key 'nope'")


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        ("{{ d[k] }}", {"d": {}, "k": SECRET}),
        ("{{ n + 1 }}", {"n": SECRET}),
        ("{{ n|float + [] }}", {"n": SECRET}),
        ("{{ x|attr(n) }}", {"x": 1, "n": SECRET}),
        ("{{ d[n].x }}", {"d": {SECRET: 1}, "n": SECRET}),
        ("{{ 1 // n }}", {"n": 0}),
        ("{{ xs.index(n) }}", {"xs": [], "n": SECRET}),  # ValueError quotes the value
        ("{{ ('{' ~ n ~ '}').format() }}", {"n": SECRET}),  # KeyError is the value
    ],
)
def test_messages_never_quote_values(source: str, variables: dict[str, Any]) -> None:
    compiled = one(source)
    with pytest.raises(TemplateRenderFailed) as info:
        compiled.render("email", "en", variables)
    assert SECRET not in info.value.detail
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_runtime_line_is_innermost() -> None:
    source = "{% macro m() %}\n{{ missing }}\n{% endmacro %}\n{{ m() }}"
    assert render_failure(source) == "variant (*, en) body line 2: 'missing' is undefined"


def test_recursion_fails_cleanly() -> None:
    detail = render_failure("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
    assert detail.endswith(("recursion too deep", "loop iterations and calls"))


# --- escaping -----------------------------------------------------------------------------


def test_html_is_autoescaped_text_is_not() -> None:
    spec = TemplateSpec(
        default_locale="en",
        variants=[
            TemplateVariant(
                locale="en", title="{{ v }}", body="{{ v }}", html="<p>{{ v }}</p>{{ v ~ v }}"
            )
        ],
    )
    out = compile_template(spec).render("email", "en", {"v": "<script>&'\""})
    assert out.title == "<script>&'\""
    assert out.body == "<script>&'\""
    escaped = "&lt;script&gt;&amp;&#39;&#34;"
    assert out.html == f"<p>{escaped}</p>{escaped}{escaped}"


def test_html_literals_are_kept() -> None:
    assert render("<b>{{ 'x' }}</b>", field="html") == "<b>x</b>"


# --- variant selection --------------------------------------------------------------------


def _spec(*pairs: tuple[str, str], default: str = "en") -> CompiledTemplate:
    variants = [TemplateVariant(channel=c, locale=loc, body=f"{c}/{loc}") for c, loc in pairs]
    return compile_template(TemplateSpec(default_locale=default, variants=variants))


SELECTION = _spec(
    ("*", "en"),
    ("email", "en"),
    ("*", "zh"),
    ("*", "zh-Hant"),
    ("sms", "zh-CN"),
    ("*", "fr"),
    ("push", "de"),
)


@pytest.mark.parametrize(
    ("channel", "locale", "expected"),
    [
        ("push", None, ("*", "en")),
        ("email", None, ("email", "en")),
        ("push", "en", ("*", "en")),
        ("email", "en-GB", ("email", "en")),
        ("push", "zh-CN", ("*", "zh")),  # zh-CN only has an sms variant
        ("sms", "zh-CN", ("sms", "zh-CN")),
        ("sms", "ZH-cn", ("sms", "zh-CN")),  # tags are matched case-insensitively
        ("sms", "zh-TW", ("*", "zh")),
        ("push", "zh-Hant-TW", ("*", "zh-Hant")),  # RFC 4647 §3.4: zh-Hant-TW → zh-Hant
        ("push", "zh-x-private", ("*", "zh")),  # §3.4: a trailing singleton is dropped too
        ("email", "fr", ("*", "fr")),  # the locale beats the channel
        ("email", "FR-ca", ("*", "fr")),
        ("push", "de", ("push", "de")),
        ("email", "de", ("email", "en")),  # de has no email or * variant
        ("email", "ja", ("email", "en")),
        ("push", "not a tag", ("*", "en")),
        ("push", "", ("*", "en")),
        ("push", "x" * 10_000, ("*", "en")),
    ],
)
def test_select(channel: str, locale: str | None, expected: tuple[str, str]) -> None:
    variant = SELECTION.select(channel, locale)
    assert (variant.channel, variant.locale) == expected
    rendered = SELECTION.render(channel, locale, {})
    assert (rendered.channel, rendered.locale) == expected
    assert rendered.body == "/".join(expected)


def test_default_locale_is_matched_case_insensitively() -> None:
    compiled = _spec(("*", "EN"), ("*", "fr"), default="en")
    assert compiled.select("push", "de").locale == "EN"


def test_locales_attribute() -> None:
    assert SELECTION.locales == ("en", "zh", "zh-Hant", "zh-CN", "fr", "de")
    assert SELECTION.spec.default_locale == "en"


def test_compiled_template_is_immutable() -> None:
    with pytest.raises(AttributeError):
        SELECTION.spec = SELECTION.spec  # type: ignore[misc]
    with pytest.raises(AttributeError):
        SELECTION.select = None  # type: ignore[method-assign]
    with pytest.raises(AttributeError):
        SELECTION.spec.variants[0].body = "x"  # type: ignore[misc]


# --- rendering ----------------------------------------------------------------------------


def test_render_fields_and_context() -> None:
    spec = TemplateSpec(
        default_locale="en",
        variants=[TemplateVariant(locale="en", title="Hi {{ name }}", body="{{ items|length }}")],
    )
    out = compile_template(spec).render(
        "email", "en", {"name": "Bob", "items": [1, 2], "not-an-identifier": 1, "": 2}
    )
    assert out == Rendered(title="Hi Bob", body="2", html=None, locale="en", channel="*")


def test_keys_that_are_not_identifiers_are_unreachable() -> None:
    assert "is undefined" in render_failure("{{ a }}", {"a-b": 1})


@pytest.mark.parametrize(
    ("source", "variables", "expected"),
    [
        (
            "{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}",
            {"d": {"b": 2, "a": 1}},
            "a=1;b=2;",
        ),
        ("{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}", {"d": {"a": 1}}, "a1"),
        (
            "{% for x in xs if x %}{{ loop.index }}/{{ loop.length }} {% endfor %}",
            {"xs": [0, 1, 2]},
            "1/2 2/2 ",
        ),
        ("{% for x in xs %}{{ x }}{% else %}none{% endfor %}", {"xs": []}, "none"),
        (
            (
                "{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}"
                "{% endfor %}{{ ns.n }}"
            ),
            {"xs": [1, 2, 3]},
            "6",
        ),
        ("{% macro hi(n) %}Hi {{ n }}{% endmacro %}{{ hi(name) }}", {"name": "Bob"}, "Hi Bob"),
        ("{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}x{% endcall %}", {}, "[x]"),
        (
            "{{ '-' * 5 }}|{{ 2 ** 10 }}|{{ 3 * 4 }}|{{ 'a' + 'b' }}|{{ [1] + [2] }}",
            {},
            "-----|1024|12|ab|[1, 2]",
        ),
        ("{{ '%s: %d' % ('a', 3) }} {{ '%05.1f'|format(3.14159) }}", {}, "a: 3 003.1"),
        ("{{ '{:,}'.format(1234567) }} {{ '{0}-{x}'.format(1, x=2) }}", {}, "1,234,567 1-2"),
        (
            "{{ 'a,b'.replace(',', ';') }} {{ ', '.join(xs) }} {{ xs|join('+') }}",
            {"xs": ["p", "q"]},
            "a;b p, q p+q",
        ),
        (
            "{{ 'x'|center(5) }}|{{ 'x'.rjust(3, '.') }}|{{ 'a\nb'|indent(2) }}",
            {},
            "  x  |..x|a\n  b",
        ),
        (
            "{{ 'aa bb cc'|wordwrap(5) }}|{{ [1, 2, 3]|batch(2, 0)|list }}",
            {},
            "aa bb\ncc|[[1, 2], [3, 0]]",
        ),
        (
            "{{ [1, 2, 3]|slice(2)|list }}|{{ d|tojson }}|{{ d|tojson(2)|length }}",
            {"d": {"a": 1}},
            '[[1, 2], [3]]|{"a": 1}|12',
        ),
        (
            "{{ 'see example.com'|urlize }}",
            {},
            'see <a href="https://example.com" rel="noopener">example.com</a>',
        ),
        (
            "{{ text|truncate(8, leeway=0) }} {{ text|upper }} {{ text|replace('o', '0') }}",
            {"text": "hello world"},
            "hello... HELLO WORLD hell0 w0rld",
        ),
        ("{{ range(3)|list }} {{ range(1, 10, 4)|list }}", {}, "[0, 1, 2] [1, 5, 9]"),
        (
            "{{ 'a\tb'.expandtabs(4) }}|{{ 'ab'.translate({97: 'xy'}) }}|{{ '7'.zfill(3) }}",
            {},
            "a   b|xyb|007",
        ),
        ("{{ d }}", {"d": {"k": [1, "v"]}}, "{'k': [1, 'v']}"),
        ("{{ none }}|{{ x|default('d') }}", {"x": None}, "None|None"),
    ],
)
def test_ordinary_templates_render(source: str, variables: dict[str, Any], expected: str) -> None:
    assert render(source, variables) == expected


def test_render_all() -> None:
    spec = TemplateSpec(
        default_locale="en",
        variants=[
            TemplateVariant(locale="en", body="{{ a }}"),
            TemplateVariant(channel="email", locale="en", title="{{ a }}", html="{{ b }}"),
            TemplateVariant(locale="fr", body="{{ c }}"),
        ],
    )
    compiled = compile_template(spec)
    compiled.render_all({"a": 1, "b": 2, "c": 3})
    with pytest.raises(TemplateRenderFailed) as info:
        compiled.render_all({"a": 1, "c": 3})
    assert info.value.detail == "variant (email, en) html line 1: 'b' is undefined"
    # render() of another variant does not need b.
    assert compiled.render("push", "fr", {"c": 3}).body == "3"


# --- resource limits ----------------------------------------------------------------------


def test_output_cap() -> None:
    assert len(render("{{ s }}", {"s": "a" * OUTPUT_MAX})) == OUTPUT_MAX
    detail = render_failure("{{ s }}", {"s": "a" * (OUTPUT_MAX + 1)})
    assert detail == f"variant (*, en) body: longer than {OUTPUT_MAX} characters"
    detail = render_failure("{% for i in range(1000) %}{{ s }}{% endfor %}", {"s": "a" * 100})
    assert detail.endswith(f"longer than {OUTPUT_MAX} characters")


def test_range_cap() -> None:
    assert render(f"{{{{ range({RANGE_MAX})|list|length }}}}") == str(RANGE_MAX)
    assert render_failure(f"{{{{ range({RANGE_MAX + 1})|list }}}}").endswith(
        f"range() of more than {RANGE_MAX} items"
    )
    assert "range() of more than" in render_failure("{{ range(10 ** 30) }}")


def test_step_budget() -> None:
    two_levels = "{% for a in range(50) %}{% for b in range(50) %}.{% endfor %}{% endfor %}"
    assert render(two_levels) == "." * 2500
    cube = (
        "{% for a in range(100) %}{% for b in range(100) %}{% for c in range(100) %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    assert render_failure(cube).endswith(f"more than {RENDER_STEPS_MAX} loop iterations and calls")
    exponential = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    )
    assert render_failure(exponential).endswith("loop iterations and calls")
    # Iterations alone, without a single call, count too.
    cube_of_data = (
        "{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}"
    )
    assert render(cube_of_data, {"x": list(range(21))}) == ""  # 9,723 iterations
    assert render_failure(cube_of_data, {"x": list(range(22))}).endswith(  # 11,154
        "loop iterations and calls"
    )


def test_step_budget_is_per_field() -> None:
    # 500 + 500 * 9 iterations and 501 calls to range: 5,501 steps per field.
    loop = "{% for a in range(500) %}{% for b in range(9) %}{% endfor %}{% endfor %}"
    spec = TemplateSpec(
        default_locale="en", variants=[TemplateVariant(locale="en", title=loop, body=loop)]
    )
    out = compile_template(spec).render("email", "en", {})
    assert out.title == out.body == ""


@pytest.mark.parametrize(
    ("source", "variables", "what"),
    [
        ("{{ 'a' * 1000000000 }}", {}, "a repetition"),
        ("{{ 1000000000 * 'a' }}", {}, "a repetition"),
        ("{{ [s] * 1000000000 }}", {"s": "x"}, "a repetition"),
        ("{{ 2 ** 100000 }}", {}, "a power larger than 4096 bits"),
        ("{{ 3 ** (10 ** 30) }}", {}, "a power larger than 4096 bits"),
        (doubling("ns.s * ns.s", start="2"), {}, "a product larger"),
        (doubling("ns.s ~ ns.s"), {}, "a ~ concatenation"),
        (doubling("ns.s + ns.s"), {}, "a sum"),
        (doubling("'%s%s' % (ns.s, ns.s)"), {}, "a %-format"),
        (doubling("'%s%s'|format(ns.s, ns.s)"), {}, "|format"),
        (doubling("'{0}{0}'.format(ns.s)"), {}, "str.format"),
        (doubling("[ns.s, ns.s]|join"), {}, "|join"),
        (doubling("''.join([ns.s, ns.s])"), {}, "str.join"),
        (doubling("ns.s|replace('a', 'aa')"), {}, "|replace"),
        (doubling("ns.s.replace('a', 'aa')"), {}, "str.replace"),
        (doubling("[ns.s, ns.s]", "{{ ns.s }}"), {}, "a printed value"),
        (doubling("[ns.s, ns.s]", "{{ ns.s|string }}"), {}, "the input of |string"),
        ("{{ '%100000000d' % 1 }}", {}, "a %-format"),
        ("{{ '%*d' % (5, 1) }}", {}, "a %-format"),
        ("{{ '%.100000000f'|format(1) }}", {}, "|format"),
        ("{{ '{:>100000000}'.format(1) }}", {}, "str.format"),
        ("{{ '{:>{w}}'.format(1, w=100000000) }}", {}, "str.format"),
        (
            "{{ ('{x:>100000000}'|attr(n))(d) }}",
            {"d": {"x": 1}, "n": "format_map"},
            "str.format_map",
        ),
        ("{{ 'x'.center(100000000) }}", {}, "str.center"),
        ("{{ 'x'.ljust(100000000) }}", {}, "str.ljust"),
        ("{{ '7'.zfill(100000000) }}", {}, "str.zfill"),
        ("{{ ('\t' * 1000).expandtabs(100000) }}", {}, "str.expandtabs"),
        ("{{ ('a' * 1000).translate({97: s}) }}", {"s": "b" * 1000}, "str.translate"),
        ("{{ 'x'|center(100000000) }}", {}, "|center"),
        ("{{ ('a\\n' * 1000)|indent(1000) }}", {}, "|indent"),
        ("{{ ('a\\n' * 1000)|indent(s) }}", {"s": " " * 1000}, "|indent"),
        ("{{ ('a' * 1000)|wordwrap(1, true, s) }}", {"s": "-" * 1000}, "|wordwrap"),
        ("{{ [1]|batch(100000000, 0)|list }}", {}, "|batch"),
        ("{{ [1]|slice(100000000)|list }}", {}, "|slice"),
        ("{{ {'a': 1}|tojson(100) }}", {}, "|tojson"),
        ("{{ ('a.b ' * 1000)|urlize(target=s) }}", {"s": "t" * 1000}, "|urlize"),
        ("{{ range(1000)|join(s) }}", {"s": "x" * 1000}, "|join"),
    ],
)
def test_size_limits(source: str, variables: dict[str, Any], what: str) -> None:
    detail = render_failure(source, variables)
    assert what in detail
    assert detail.startswith("variant (*, en) body line 1: ")


def test_shared_structure_is_measured_not_printed() -> None:
    # Four nested lists of ten references print 10**4 copies of a 1,000-character string.
    source = (
        "{% set a = [s, s, s, s, s, s, s, s, s, s] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
        "{{ d|length }}:{{ d }}"
    )
    assert f"longer than {VALUE_MAX} characters" in render_failure(source, {"s": "x" * 1000})


def test_renders_are_deterministic() -> None:
    assert "'lipsum' is undefined" in render_failure("{{ lipsum() }}")
    assert "No filter named 'random'" in refused("{{ [1, 2]|random }}")


# --- spec validation ----------------------------------------------------------------------


def _variant(**fields: Any) -> TemplateVariant:
    fields.setdefault("locale", "en")
    if not {"title", "body", "html"} & fields.keys():
        fields["body"] = "x"
    return TemplateVariant(**fields)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            TemplateSpec(default_locale="en", variants=[]),
            f"a template has 1 to {VARIANTS_MAX} variants",
        ),
        (
            TemplateSpec(
                default_locale="en",
                variants=[_variant(locale=f"l{i:x}{i:x}") for i in range(VARIANTS_MAX)]
                + [_variant()],
            ),
            f"a template has 1 to {VARIANTS_MAX} variants",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant()], description="d" * 257),
            "the description is longer than 256 characters",
        ),
        (
            TemplateSpec(default_locale="en_US", variants=[_variant()]),
            "default_locale 'en_US' is not a language tag",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(channel="Email")]),
            "variant 0: channel 'Email' is neither '*' nor a channel name",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(channel="")]),
            "variant 0: channel '' is neither",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(channel="a" * 33)]),
            "is neither '*' nor a channel name",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(), _variant(locale="e")]),
            "variant 1: locale 'e' is not a language tag",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(locale="en-")]),
            "variant 0: locale 'en-' is not a language tag",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(locale="en\n")]),
            "variant 0: locale 'en\\n' is not a language tag",
        ),
        (
            TemplateSpec(default_locale="en", variants=[TemplateVariant(locale="en")]),
            "variant (*, en): has none of title, body and html",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(html="x" * (SOURCE_MAX + 1))]),
            f"variant (*, en) html: longer than {SOURCE_MAX} characters",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(), _variant(locale="EN")]),
            "variant (*, EN): appears twice",
        ),
        (
            TemplateSpec(
                default_locale="en",
                variants=[_variant(), _variant(channel="sms"), _variant(channel="sms")],
            ),
            "variant (sms, en): appears twice",
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(channel="email")]),
            (
                "no variant for channel '*' in the default locale 'en': every channel and "
                "locale needs that fallback"
            ),
        ),
        (
            TemplateSpec(default_locale="en", variants=[_variant(locale="fr")]),
            "no variant for channel '*' in the default locale 'en'",
        ),
    ],
)
def test_invalid_specs_refused(spec: TemplateSpec, message: str) -> None:
    with pytest.raises(TemplateRefused) as info:
        compile_template(spec)
    assert message in info.value.detail
    assert info.value.status == 422


def test_source_at_the_limit_is_accepted() -> None:
    assert len(render("x" * SOURCE_MAX)) == SOURCE_MAX


def test_spec_types_are_frozen() -> None:
    with pytest.raises(AttributeError):
        _variant().body = "y"  # type: ignore[misc]


# --- parse_spec ---------------------------------------------------------------------------


def test_parse_spec() -> None:
    raw = msgspec.json.encode(
        {
            "default_locale": "en",
            "description": "order shipped",
            "variants": [
                {"locale": "en", "title": "Shipped", "body": "Order {{ id }}"},
                {"channel": "email", "locale": "en", "html": "<p>Order {{ id }}</p>"},
            ],
        }
    )
    spec = parse_spec(raw)
    assert spec.variants[1].channel == "email"
    assert spec.variants[0].channel == "*"
    assert compile_template(spec).render("email", None, {"id": 7}).html == "<p>Order 7</p>"


def _json(variants: list[dict[str, Any]], **extra: Any) -> bytes:
    return msgspec.json.encode({"default_locale": "en", "variants": variants, **extra})


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        (b"{", "malformed-json"),
        (_json([{"locale": "en", "body": "x"}], x=1), "invalid-request"),
        (_json([{"locale": "en", "text": "x"}]), "invalid-request"),
        (_json([]), "invalid-request"),
        (_json([{"channel": "Email", "locale": "en", "body": "x"}]), "invalid-request"),
        (_json([{"locale": "en", "body": "x" * (SOURCE_MAX + 1)}]), "invalid-request"),
        (_json([{"locale": "en", "body": "{{ x.__class__ }}"}]), "invalid-template"),
        (_json([{"locale": "fr", "body": "x"}]), "invalid-template"),
        (_json([{"locale": "en", "body": "x"}, {"locale": "EN", "body": "y"}]), "invalid-template"),
    ],
)
def test_parse_spec_refusals(raw: bytes, slug: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_spec(raw)
    assert info.value.slug == slug
