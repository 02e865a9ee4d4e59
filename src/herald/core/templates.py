"""Notification templates: Jinja2 in an immutable sandbox, checked before they are saved.

A :class:`TemplateSpec` holds variants per (channel, locale); each variant has up to three
fields — ``title`` and ``body`` (plain text) and ``html`` (autoescaped). Templates come from
tenants and variables from publishers, so neither is trusted:

* **No escape from the sandbox.** Sources are rendered by Jinja2's
  :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no ``_`` attributes, no mutation of
  lists, dicts and sets). On top of that, :func:`compile_template` walks the parsed AST and
  refuses what the sandbox would only refuse at render time — ``''.__class__``,
  ``x['__globals__']``, ``x|attr('mro')`` — and everything that reaches outside the one
  source (``include``, ``import``, ``extends``).
* **Bounded work.** The sandbox does not bound CPU or memory (Jinja2 says so), so renders
  carry limits of their own (see :mod:`herald.core._sandbox`): a budget of
  :data:`RENDER_STEPS_MAX` loop iterations and calls, :data:`RANGE_MAX` items per
  ``range()``, :data:`LOOP_DEPTH_MAX` nested loops, no value built or printed larger than
  :data:`VALUE_MAX`, and :data:`OUTPUT_MAX` characters per rendered field. They stop the
  known bombs; they are not a proof, so a render must still run where the process has a
  memory and time limit.
* **Deterministic.** ``random`` and ``lipsum`` are removed: the render checked at publish
  time (:meth:`CompiledTemplate.render_all`) is the render delivered.
* **Errors name no values.** Variables may be personal data: error messages name the
  variant, the field, the line and template names that appear in the source, never a
  variable's value.

Variant selection follows RFC 4647 §3.4 *lookup*: the requested tag, then ever shorter
prefixes of it (``zh-Hant-TW`` → ``zh-Hant`` → ``zh``), then the spec's default locale; in
each locale the exact channel is tried before ``"*"``.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, cast

import msgspec
from jinja2 import Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
)

from herald.core._sandbox import (
    HTML_ENV,
    RANGE_MAX,
    RENDER_STEPS_MAX,
    TEXT_ENV,
    VALUE_MAX,
    LimitExceeded,
    Sandbox,
    budget,
    insert_guards,
)
from herald.core.messages import decode_json
from herald.errors import BadRequest

__all__ = [
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
]

#: Characters per template source (one field of one variant).
SOURCE_MAX = 16 * 1024
#: Characters per rendered field; rendering stops as soon as a field passes it.
OUTPUT_MAX = 64 * 1024
#: ``for`` loops nested in one another.
LOOP_DEPTH_MAX = 3
#: Variants per template.
VARIANTS_MAX = 64
#: Characters of a template's description.
DESCRIPTION_MAX = 256

_FIELDS = ("title", "body", "html")
_ANY_CHANNEL = "*"
_CHANNEL_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,3}")

_ChannelSelector = Annotated[
    str, msgspec.Meta(pattern=r"^(\*|[a-z][a-z0-9_-]{0,31})$", description="channel or '*'")
]
_LocaleTag = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}$", description="BCP 47")
]
_Source = Annotated[str, msgspec.Meta(max_length=SOURCE_MAX)]


class TemplateVariant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The fields of a template for one channel (or ``"*"``, any channel) and one locale."""

    channel: _ChannelSelector = _ANY_CHANNEL
    locale: _LocaleTag
    #: Plain text: an email subject, a push title.
    title: _Source | None = None
    #: Plain text.
    body: _Source | None = None
    #: HTML, rendered with autoescape on.
    html: _Source | None = None


class TemplateSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A template: its variants and the locale whose ``"*"`` variant is the fallback."""

    default_locale: _LocaleTag
    variants: Annotated[list[TemplateVariant], msgspec.Meta(min_length=1, max_length=VARIANTS_MAX)]
    description: Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX)] | None = None


class TemplateRefused(BadRequest):
    """A template cannot be saved: invalid spec, syntax error or a sandbox escape."""

    status = 422
    slug = "invalid-template"
    title = "Invalid template"


class TemplateRenderFailed(BadRequest):
    """A template failed while rendering (undefined variable, sandbox or size limit, …)."""

    status = 422
    slug = "template-render-failed"
    title = "Template rendering failed"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The rendered fields of one variant, and which variant (channel, locale) it was."""

    title: str | None
    body: str | None
    html: str | None
    locale: str
    channel: str


# --- static checks --------------------------------------------------------------------------

# Attribute names refused statically: private names, what Jinja's sandbox lists (its sets for
# functions and methods are empty on Python 3; kept in case Jinja fills them again), the
# Python 2 names Jinja 2 listed, frames and tracebacks, ``mro`` (the usual first step from a
# type to every class) and ``format_map`` (formatting reaches attributes by name).
_UNSAFE_NAMES = frozenset(
    {
        *UNSAFE_FUNCTION_ATTRIBUTES,
        *UNSAFE_METHOD_ATTRIBUTES,
        *UNSAFE_GENERATOR_ATTRIBUTES,
        *UNSAFE_COROUTINE_ATTRIBUTES,
        *UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
        *("func_closure", "func_code", "func_defaults", "func_dict", "func_globals"),
        *("im_class", "im_func", "im_self"),
        *("f_back", "f_builtins", "f_code", "f_globals", "f_locals", "tb_frame", "tb_next"),
        *("gi_yieldfrom", "cr_await", "cr_origin", "ag_await"),
        *("mro", "format_map"),
    }
)
# Filters whose first argument names an attribute (dotted paths allowed).
_ATTRIBUTE_FILTERS = frozenset({"attr", "groupby", "rejectattr", "selectattr", "sum"})
_FORBIDDEN_TAGS = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from … import",
}


def _unsafe(name: str) -> bool:
    return name.startswith("_") or name in _UNSAFE_NAMES


def _constant(node: nodes.Node | None, eval_ctx: nodes.EvalContext) -> Any:
    if not isinstance(node, nodes.Expr):
        return None
    try:
        return node.as_const(eval_ctx)
    except Exception:  # noqa: BLE001 — not a constant, whatever the reason
        return None


def _accessed_names(node: nodes.Node, eval_ctx: nodes.EvalContext) -> list[str]:
    """The attribute names ``node`` reads, as far as they are constants."""
    if isinstance(node, nodes.Getattr | nodes.NSRef):
        return [node.attr]
    candidates: list[Any] = []
    if isinstance(node, nodes.Getitem):
        candidates.append(_constant(node.arg, eval_ctx))
    elif isinstance(node, nodes.Filter | nodes.Test):
        if node.name in _ATTRIBUTE_FILTERS and node.args:
            candidates.append(_constant(node.args[0], eval_ctx))
        candidates.extend(
            _constant(kw.value, eval_ctx) for kw in node.kwargs if kw.key == "attribute"
        )
    return [part for c in candidates if isinstance(c, str) for part in [c, *c.split(".")]]


def _inspect(node: nodes.Node, loops: int, where: str, eval_ctx: nodes.EvalContext) -> None:
    """Refuse, with its line, the first construct that leaves the sandbox or the source."""
    for kind, tag in _FORBIDDEN_TAGS.items():
        if isinstance(node, kind):
            raise _refused(
                where, node.lineno, f"{{% {tag} %}} is not allowed: templates stand alone"
            )
    if isinstance(node, nodes.For):
        if node.recursive:
            raise _refused(where, node.lineno, "recursive loops are not allowed")
        if loops + 1 > LOOP_DEPTH_MAX:
            raise _refused(where, node.lineno, f"loops nest deeper than {LOOP_DEPTH_MAX}")
        # In source order; only the body runs once per item.
        heads = [node.target, node.iter] + ([node.test] if node.test else [])
        children = [(child, loops) for child in heads]
        children += [(child, loops + 1) for child in node.body]
        children += [(child, loops) for child in node.else_]
    else:
        children = [(child, loops) for child in node.iter_child_nodes()]
    for child, depth in children:
        _inspect(child, depth, where, eval_ctx)
    # After the children, so that ''.__class__.__mro__ reports the first name in the source.
    for name in _accessed_names(node, eval_ctx):
        if _unsafe(name):
            raise _refused(where, node.lineno, f"{name!r} is outside the sandbox")


def _refused(where: str, lineno: int | None, reason: str) -> TemplateRefused:
    line = f" line {lineno}" if lineno is not None else ""
    return TemplateRefused(f"{where}{line}: {reason}")


def _one_line(message: str | None, limit: int = 200) -> str:
    text = " ".join((message or "syntax error").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compile_source(env: Sandbox, source: str, where: str) -> Template:
    """Parse, check and compile one field's source."""
    try:
        tree = env.parse(source)
        _inspect(tree, 0, where, nodes.EvalContext(env))
        return env.from_string(insert_guards(tree, env))
    except TemplateRefused:
        raise
    except TemplateSyntaxError as exc:  # also unknown filters and tests
        raise _refused(where, exc.lineno, _one_line(exc.message)) from None
    except (RecursionError, MemoryError, SyntaxError):
        # Python's own compiler limits (nested blocks, parentheses) or the parser's stack.
        raise _refused(where, None, "the template nests too deeply") from None
    except Exception as exc:  # noqa: BLE001 — untrusted source into a third-party compiler
        raise _refused(where, None, f"cannot be compiled ({type(exc).__name__})") from None


# --- rendering ------------------------------------------------------------------------------

_UNDEFINED_NAME_RE = re.compile(r"'(\w+)' is undefined")
_MISSING_ATTR_RE = re.compile(r"'[\w ]+' has no (?:attribute|element) '(\w+)'")
_UNSAFE_ATTR_RE = re.compile(r"access to attribute '(\w+)' of '\w+' object is unsafe\.")


def _in_source(name: str, source: str) -> bool:
    # A name spelled in the template is the tenant's; any other came from a variable.
    return re.search(rf"\b{re.escape(name)}\b", source) is not None


def _describe_security(message: str, source: str) -> str:
    match = _UNSAFE_ATTR_RE.fullmatch(message)
    if match and _in_source(match[1], source):
        return f"{match[1]!r} is outside the sandbox"
    return "an operation outside the sandbox was refused"


def _describe_undefined(message: str, source: str) -> str:
    if (match := _UNDEFINED_NAME_RE.fullmatch(message)) and _in_source(match[1], source):
        return f"{match[1]!r} is undefined"
    if (match := _MISSING_ATTR_RE.fullmatch(message)) and _in_source(match[1], source):
        return f"no attribute or key {match[1]!r}"
    return "an undefined variable, attribute or key was used"


def _describe(exc: BaseException, source: str) -> str:
    """One line about a render failure, with names only when the source spells them."""
    if isinstance(exc, LimitExceeded):
        return str(exc)  # our own message
    if isinstance(exc, SecurityError):
        return _describe_security(str(exc), source)
    if isinstance(exc, UndefinedError):
        return _describe_undefined(str(exc), source)
    if isinstance(exc, RecursionError):
        return "recursion too deep"
    # Other messages may quote values (int("alice@…")): name the kind of failure only.
    return f"{type(exc).__name__} in a template expression"


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites tracebacks so that template frames carry template line numbers; the
    # innermost one is where the render failed.
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _read_capped(chunks: Iterator[str], where: str) -> list[str]:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > OUTPUT_MAX:
            raise TemplateRenderFailed(f"{where}: longer than {OUTPUT_MAX} characters")
        parts.append(chunk)
    return parts


def _render_source(template: Template, source: str, context: dict[str, Any], where: str) -> str:
    # Template.generate is a generator function; closed below if we stop reading early.
    chunks = cast("Generator[str, None, None]", template.generate(context))
    try:
        with budget():
            parts = _read_capped(chunks, where)
    except TemplateRenderFailed:
        raise
    except Exception as exc:  # noqa: BLE001 — any failure of an untrusted template
        # "from None": the cause's message may quote a variable's value.
        line = _template_line(exc)
        at = f" line {line}" if line is not None else ""
        raise TemplateRenderFailed(f"{where}{at}: {_describe(exc, source)}") from None
    finally:
        chunks.close()
    return "".join(parts)


# --- compiled templates ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    variant: TemplateVariant
    fields: tuple[tuple[str, str, Template], ...]  # (field, source, template)


def _where(variant: TemplateVariant, field: str | None = None) -> str:
    name = f"variant ({variant.channel}, {variant.locale})"
    return f"{name} {field}" if field else name


class CompiledTemplate:
    """A checked and compiled :class:`TemplateSpec`; make one with :func:`compile_template`.

    Attributes:
        spec: The spec it was compiled from.
        locales: The distinct locales of its variants, in spec order.
    """

    __slots__ = ("_default", "_variants", "locales", "spec")

    spec: TemplateSpec
    locales: tuple[str, ...]
    _default: str
    _variants: dict[tuple[str, str], _Compiled]

    def __init__(self, spec: TemplateSpec, variants: dict[tuple[str, str], _Compiled]) -> None:
        init = object.__setattr__
        init(self, "spec", spec)
        init(self, "locales", tuple(dict.fromkeys(v.locale for v in spec.variants)))
        init(self, "_default", spec.default_locale.lower())
        init(self, "_variants", variants)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"CompiledTemplate is immutable; cannot set {name!r}")

    def _lookup(self, channel: str, locale: str | None) -> _Compiled:
        for tag in _lookup_chain(locale, self._default):
            for selector in (channel, _ANY_CHANNEL):
                found = self._variants.get((selector, tag))
                if found is not None:
                    return found
        # compile_template guarantees the ("*", default_locale) variant.
        return self._variants[(_ANY_CHANNEL, self._default)]

    def select(self, channel: str, locale: str | None) -> TemplateVariant:
        """The variant for ``channel`` and ``locale``; there always is one.

        Locales are tried from the requested one through its shorter prefixes to the
        default locale (case-insensitively); in each, the exact channel before ``"*"``.
        """
        return self._lookup(channel, locale).variant

    def render(self, channel: str, locale: str | None, variables: Mapping[str, Any]) -> Rendered:
        """Render the variant :meth:`select` picks.

        Args:
            channel: The channel the message goes out on.
            locale: The recipient's locale tag, or None for the default.
            variables: The template context. Only keys that are identifiers are reachable.

        Raises:
            TemplateRenderFailed: Naming the variant, field and line; never a value.
        """
        return _render(self._lookup(channel, locale), variables)

    def render_all(self, variables: Mapping[str, Any]) -> None:
        """Render every variant once, to fail at publish time rather than at delivery.

        Raises:
            TemplateRenderFailed: For the first variant (in spec order) that fails.
        """
        for compiled in self._variants.values():
            _render(compiled, variables)


def _lookup_chain(locale: str | None, default: str) -> list[str]:
    """RFC 4647 §3.4 lookup: the tag, its ever shorter prefixes, then the default."""
    chain: list[str] = []
    if locale is not None and _LOCALE_RE.fullmatch(locale):
        tag = locale.lower()
        while tag:
            chain.append(tag)
            tag = tag.rpartition("-")[0]
            # §3.4: a singleton ("x" of "zh-x-…") never ends a fallback tag.
            if len(tag.rpartition("-")[2]) == 1:
                tag = tag.rpartition("-")[0]
    chain.append(default)
    return list(dict.fromkeys(chain))


def _render(compiled: _Compiled, variables: Mapping[str, Any]) -> Rendered:
    context = {k: v for k, v in variables.items() if isinstance(k, str) and k.isidentifier()}
    out: dict[str, str | None] = dict.fromkeys(_FIELDS)
    for field, source, template in compiled.fields:
        out[field] = _render_source(template, source, context, _where(compiled.variant, field))
    return Rendered(
        title=out["title"],
        body=out["body"],
        html=out["html"],
        locale=compiled.variant.locale,
        channel=compiled.variant.channel,
    )


def _check_variant(index: int, variant: TemplateVariant) -> None:
    if variant.channel != _ANY_CHANNEL and not _CHANNEL_RE.fullmatch(variant.channel):
        raise TemplateRefused(
            f"variant {index}: channel {variant.channel[:40]!r} is neither '*' nor a channel "
            "name ([a-z][a-z0-9_-]{0,31})"
        )
    if not _LOCALE_RE.fullmatch(variant.locale):
        raise TemplateRefused(
            f"variant {index}: locale {variant.locale[:40]!r} is not a language tag like "
            "'en' or 'zh-CN'"
        )
    sources = [(f, getattr(variant, f)) for f in _FIELDS if getattr(variant, f) is not None]
    if not sources:
        raise TemplateRefused(f"{_where(variant)}: has none of title, body and html")
    for field, source in sources:
        if len(source) > SOURCE_MAX:
            raise TemplateRefused(f"{_where(variant, field)}: longer than {SOURCE_MAX} characters")


def _check_spec(spec: TemplateSpec) -> None:
    if not 1 <= len(spec.variants) <= VARIANTS_MAX:
        raise TemplateRefused(f"a template has 1 to {VARIANTS_MAX} variants")
    if spec.description is not None and len(spec.description) > DESCRIPTION_MAX:
        raise TemplateRefused(f"the description is longer than {DESCRIPTION_MAX} characters")
    if not _LOCALE_RE.fullmatch(spec.default_locale):
        raise TemplateRefused(
            f"default_locale {spec.default_locale[:40]!r} is not a language tag like 'en'"
        )
    seen: set[tuple[str, str]] = set()
    for index, variant in enumerate(spec.variants):
        _check_variant(index, variant)
        key = (variant.channel, variant.locale.lower())
        if key in seen:
            raise TemplateRefused(f"{_where(variant)}: appears twice (locales ignore case)")
        seen.add(key)
    if (_ANY_CHANNEL, spec.default_locale.lower()) not in seen:
        raise TemplateRefused(
            f"no variant for channel '*' in the default locale {spec.default_locale!r}: "
            "every channel and locale needs that fallback"
        )


def compile_template(spec: TemplateSpec) -> CompiledTemplate:
    """Check ``spec`` and compile every field of every variant.

    Raises:
        TemplateRefused: The spec is invalid, a source does not parse, or a source leaves
            the sandbox or its own text (``include``/``import``/``extends``). The message
            names the variant, field and line.
    """
    _check_spec(spec)
    compiled: dict[tuple[str, str], _Compiled] = {}
    for variant in spec.variants:
        fields = []
        for field in _FIELDS:
            source = getattr(variant, field)
            if source is not None:
                env = HTML_ENV if field == "html" else TEXT_ENV
                template = _compile_source(env, source, _where(variant, field))
                fields.append((field, source, template))
        compiled[(variant.channel, variant.locale.lower())] = _Compiled(variant, tuple(fields))
    return CompiledTemplate(spec, compiled)


def parse_spec(raw: bytes) -> TemplateSpec:
    """Decode a JSON template spec and check it (it is compiled, then the result dropped).

    Raises:
        BadRequest: Malformed JSON (``malformed-json``) or a schema violation.
        TemplateRefused: The spec decodes but cannot be compiled.
    """
    spec = decode_json(raw, TemplateSpec)
    compile_template(spec)
    return spec
