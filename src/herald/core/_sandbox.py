"""Resource limits for Jinja2's immutable sandbox (used by :mod:`herald.core.templates`).

Jinja2's sandbox stops templates from reaching Python internals; it does not bound the CPU
or memory a template uses. This module adds limits at every hook Jinja offers:

* a per-render budget of :data:`RENDER_STEPS_MAX` loop iterations and calls — calls through
  :meth:`Sandbox.call`, iterations through a filter that :func:`insert_guards` wraps around
  every loop's iterable;
* :data:`RANGE_MAX` items per ``range()``;
* no value larger than :data:`VALUE_MAX` characters built by ``+ * % **`` (intercepted
  operators), by ``~`` (rewritten into a guarded filter), by the ``str`` methods and filters
  that can amplify (``center``, ``replace``, ``format``, ``indent``, …), or printed by
  ``{{ … }}`` (``finalize``);
* no ``random`` filter nor ``lipsum`` global, so that renders are deterministic.

These stop the known bombs (``'a' * 10**9``, ``9**9**9``, doubling in a loop, exponential
macro recursion, ``'{:>999999999}'.format(1)``); they are not a proof, and renders should
still run under a process memory and time limit.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

__all__ = [
    "HTML_ENV",
    "RANGE_MAX",
    "RENDER_STEPS_MAX",
    "TEXT_ENV",
    "VALUE_MAX",
    "LimitExceeded",
    "Sandbox",
    "budget",
    "insert_guards",
]

#: Characters of any value a template builds, hands to a filter or prints (printed size).
VALUE_MAX = 256 * 1024
#: Loop iterations plus calls (macros, methods, globals) per rendered field.
RENDER_STEPS_MAX = 10_000
#: Items in one ``range()``.
RANGE_MAX = 1000
# Integers a template may build by * or **: 4096 bits prints as ~1,233 digits.
_INT_BITS_MAX = 4096
# Filter names that template syntax cannot spell: only insert_guards puts them in.
_LOOP_FILTER = "herald:loop"
_CONCAT_FILTER = "herald:concat"

_Args = tuple[Any, ...]
_Kwargs = dict[str, Any]


class LimitExceeded(SecurityError):
    """A resource limit of the sandbox; its message is ours and names no value."""


class _Budget:
    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = RENDER_STEPS_MAX


# Per render, so that renders in threads or tasks do not share a budget. None outside a
# render (Jinja folds constant expressions at compile time through the same hooks).
_BUDGET: ContextVar[_Budget | None] = ContextVar("herald_template_budget", default=None)


def _step() -> None:
    current = _BUDGET.get()
    if current is not None:
        current.steps -= 1
        if current.steps < 0:
            raise LimitExceeded(f"more than {RENDER_STEPS_MAX} loop iterations and calls")


def _size(value: Any, limit: int = VALUE_MAX, *, strict: bool = False) -> int:
    """The printed size of ``value``, roughly; stops counting once past ``limit``.

    Containers may share children (``[a, a]`` twice nested is four ``a``), so the printed
    size can be exponential in the work it took to build; counting stops at ``limit``.
    With ``strict``, an undefined value inside a container raises its error, as it would
    if it were printed alone (a list prints its items' repr, which does not raise).
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if strict and isinstance(item, Undefined):
            str(item)  # StrictUndefined: raises UndefinedError (or the SecurityError)
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 8
    return total


def _check_size(size: int, what: str) -> None:
    if size > VALUE_MAX:
        raise LimitExceeded(f"{what} would be longer than {VALUE_MAX} characters")


def _width(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _digits(digits: str) -> int:
    # Python refuses int() of more than 4300 digits; anything past 7 is over every limit.
    return int(digits) if len(digits) <= 7 else VALUE_MAX + 1


_PRINTF_RE = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)
_DIGITS_RE = re.compile(r"\d+")


def _printf_size(fmt: str, args: Any) -> int:
    """Upper bound of ``fmt % args``: each conversion the longest argument plus its width."""
    conversions = padding = 0
    for width, precision, conversion in _PRINTF_RE.findall(fmt):
        if conversion == "%":
            continue
        if "*" in (width, precision):
            return VALUE_MAX + 1
        conversions += 1
        padding += _digits(width or "0") + _digits(precision or "0")
    values = args.values() if isinstance(args, Mapping) else args
    values = values if isinstance(values, tuple | list) else [values]
    return len(fmt) + padding + conversions * max((_size(v) for v in values), default=0)


def _format_size(fmt: str, args: Any, kwargs: Any) -> int:
    """Upper bound of ``fmt.format(*args, **kwargs)`` (fields may repeat an argument)."""
    fields = padding = 0
    nested = False
    for _literal, field, spec, _conversion in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        nested = nested or "{" in (spec or "")
        padding += sum(_digits(d) for d in _DIGITS_RE.findall(spec or ""))
    values = [*args, *(kwargs.values() if isinstance(kwargs, Mapping) else ())]
    if nested and any(isinstance(v, int) and v > VALUE_MAX for v in values):
        return VALUE_MAX + 1
    return len(fmt) + padding + fields * max((_size(v) for v in values), default=0)


def _replace_size(s: str, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(old, str) and isinstance(new, str)):
        return len(s)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _pad_size(owner: str, args: _Args, _kwargs: _Kwargs) -> int:
    return max(len(owner), _width(args[0] if args else 0))


def _expandtabs_size(owner: str, args: _Args, kwargs: _Kwargs) -> int:
    return len(owner) + owner.count("\t") * _width(_arg(args, kwargs, 0, "tabsize", 8))


def _str_replace_size(owner: str, args: _Args, _kwargs: _Kwargs) -> int:
    return _replace_size(owner, *args[:3])


def _str_join_size(owner: str, args: _Args, _kwargs: _Kwargs) -> int:
    items = args[0] if args else ()
    count = len(items) if isinstance(items, list | tuple) else 0
    return _size(items) + count * len(owner)


def _translate_size(owner: str, args: _Args, _kwargs: _Kwargs) -> int:
    table = args[0] if args else {}
    values = table.values() if isinstance(table, Mapping) else ()
    return len(owner) * max(map(_size, values), default=1)


def _str_format_size(owner: str, args: _Args, kwargs: _Kwargs) -> int:
    return _format_size(owner, args, kwargs)


def _str_format_map_size(owner: str, args: _Args, _kwargs: _Kwargs) -> int:
    return _format_size(owner, (), args[0] if args else {})


# Upper bounds of what the str methods that can build large strings build.
_STR_METHOD_SIZE: dict[str, Callable[[str, _Args, _Kwargs], int]] = {
    "center": _pad_size,
    "expandtabs": _expandtabs_size,
    "format": _str_format_size,
    "format_map": _str_format_map_size,
    "join": _str_join_size,
    "ljust": _pad_size,
    "replace": _str_replace_size,
    "rjust": _pad_size,
    "translate": _translate_size,
    "zfill": _pad_size,
}


def _guard_str_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # The sandbox hands out str.format/format_map wrapped (functools.update_wrapper).
    target = getattr(obj, "__wrapped__", obj)
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(target, "__name__", "")
    _check_size(_size(args) + _size(kwargs), f"the arguments of str.{name}")
    estimate = _STR_METHOD_SIZE.get(name)
    if estimate is not None:
        _check_size(estimate(owner, args, kwargs), f"str.{name}")


_SEQUENCE = (str, bytes, list, tuple)


def _guard_binop(operator: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        # Compare before multiplying out: the exponent itself may be huge.
        if right > _INT_BITS_MAX or left.bit_length() * right > _INT_BITS_MAX:
            raise LimitExceeded(f"a power larger than {_INT_BITS_MAX} bits")
    elif operator == "*" and ints:
        if left.bit_length() + right.bit_length() > _INT_BITS_MAX:
            raise LimitExceeded(f"a product larger than {_INT_BITS_MAX} bits")
    elif operator == "*":
        sequence, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(sequence, _SEQUENCE) and isinstance(times, int):
            _check_size(len(sequence) * times, "a repetition")
    elif operator == "+":
        if isinstance(left, _SEQUENCE) and isinstance(right, _SEQUENCE):
            _check_size(len(left) + len(right), "a sum")
    elif operator == "%" and isinstance(left, str):
        _check_size(_printf_size(left, right), "a %-format")


def _range(*args: int) -> range:
    try:
        items = range(*args)
        count = len(items)
    except OverflowError:  # len() of a range past sys.maxsize
        count = RANGE_MAX + 1
    if count > RANGE_MAX:
        raise LimitExceeded(f"range() of more than {RANGE_MAX} items")
    return items


@pass_context  # a context filter is never constant-folded at compile time
def _loop_guard(_context: Context, iterable: Any) -> Iterator[Any]:
    """Wraps the iterable of every ``for`` loop, counting iterations against the budget."""
    for item in iterable:
        _step()
        yield item


@pass_eval_context
def _concat_guard(eval_ctx: nodes.EvalContext, items: list[Any]) -> str:
    """Replaces ``a ~ b``: the same join Jinja compiles, after a size check."""
    _check_size(sum(_size(item) for item in items), "a ~ concatenation")
    return markup_join(items) if eval_ctx.autoescape else str_join(items)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    """A filter argument, given by position or by its keyword name in Jinja."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _center_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    return max(len(_text(value)), _width(_arg(args, kwargs, 0, "width", 80)))


def _indent_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    text, width = _text(value), _arg(args, kwargs, 0, "width", 4)
    step = len(width) if isinstance(width, str) else _width(width)
    return len(text) + (text.count("\n") + 1) * step


def _format_filter_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    return _printf_size(_text(value), kwargs or args)


def _replace_filter_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    old, new = _arg(args, kwargs, 0, "old", None), _arg(args, kwargs, 1, "new", None)
    return _replace_size(_text(value), old, new, _arg(args, kwargs, 2, "count", None))


def _join_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    return _size(value) + len(value) * len(_text(_arg(args, kwargs, 0, "d", "")))


def _wordwrap_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    text, width = _text(value), _width(_arg(args, kwargs, 0, "width", 79))
    wrap = _arg(args, kwargs, 2, "wrapstring", None) or "\n"
    return len(text) + (len(text) // max(width, 1) + 1) * len(_text(wrap))


def _batch_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    fill = _arg(args, kwargs, 1, "fill_with", None)
    extra = 0 if fill is None else _width(_arg(args, kwargs, 0, "linecount", 0)) * _size(fill)
    return _size(value) + extra


def _slice_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    fill = _arg(args, kwargs, 1, "fill_with", None)
    return _size(value) + _width(_arg(args, kwargs, 0, "slices", 0)) * (2 + _size(fill))


def _tojson_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    indent = _arg(args, kwargs, 0, "indent", None)
    step = len(indent) if isinstance(indent, str) else _width(indent)
    return VALUE_MAX + 1 if step > 8 else _size(value) * (1 + step)


def _urlize_size(value: Any, args: _Args, kwargs: _Kwargs) -> int:
    text = _text(value)
    extra = sum(len(a) for a in (*args, *kwargs.values()) if isinstance(a, str)) + 64
    return len(text) + (text.count(".") + text.count("@") + 1) * extra


# Upper bounds of what the filters that can build large values build, from the value and
# the filter's own arguments (positional, or by their names in Jinja's signatures).
_FILTER_SIZE: dict[str, Callable[[Any, _Args, _Kwargs], int]] = {
    "batch": _batch_size,
    "center": _center_size,
    "format": _format_filter_size,
    "indent": _indent_size,
    "join": _join_size,
    "replace": _replace_filter_size,
    "slice": _slice_size,
    "tojson": _tojson_size,
    "urlize": _urlize_size,
    "wordwrap": _wordwrap_size,
}
# Filters that consume an iterable: it is made a list first so that it can be measured.
_MATERIALIZE = {"batch", "join", "slice"}


def _guard_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    # Context, eval-context and environment filters receive that object first.
    skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0
    estimate = _FILTER_SIZE.get(name)

    @functools.wraps(f)  # keeps jinja_pass_arg
    def guarded(*args: Any, **kwargs: Any) -> Any:
        head, value, rest = args[:skip], args[skip], args[skip + 1 :]
        if name in _MATERIALIZE and not isinstance(value, str | list | tuple | Mapping):
            value = list(value)
        _check_size(_size(value) + _size(rest) + _size(kwargs), f"the input of |{name}")
        if estimate is not None:
            _check_size(estimate(value, rest, kwargs), f"|{name}")
        return f(*head, value, *rest, **kwargs)

    return guarded


def _finalize(value: Any) -> Any:
    # Runs on every {{ … }} before it is made a string: a list of shared lists would print
    # far more than the output cap before the cap could see it.
    if not isinstance(value, str):
        _check_size(_size(value, strict=True), "a printed value")
    return value


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with Herald's resource limits."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Apply a size limit to the operators that can build large values."""
        _guard_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Count the call against the budget and bound what ``str`` methods build."""
        _step()
        _guard_str_call(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)


def _make_env(*, autoescape: bool) -> Sandbox:
    env = Sandbox(
        undefined=StrictUndefined,
        autoescape=autoescape,
        finalize=_finalize,
        cache_size=0,
        # No constant folding at compile time: every operation runs through the guards at
        # render time, so ``{{ 2 ** 100000 }}`` fails the same way in every process.
        optimized=False,
    )
    env.globals.pop("lipsum", None)  # random text: renders must be deterministic
    env.globals["range"] = _range
    env.filters.pop("random", None)
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters[_LOOP_FILTER] = _loop_guard
    env.filters[_CONCAT_FILTER] = _concat_guard
    return env


#: title and body: plain text.
TEXT_ENV = _make_env(autoescape=False)
#: html: autoescaped.
HTML_ENV = _make_env(autoescape=True)


class _InsertGuards(NodeTransformer):
    """Route every loop's iterable and every ``~`` through the guard filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 — the visitor's naming
        self.generic_visit(node)
        node.iter = _filter_call(node.iter, _LOOP_FILTER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return _filter_call(nodes.List(node.nodes, lineno=node.lineno), _CONCAT_FILTER)


def _filter_call(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def insert_guards(tree: nodes.Template, env: Sandbox) -> nodes.Template:
    """Rewrite a parsed template so that loops and ``~`` go through the guard filters."""
    guarded: nodes.Template = _InsertGuards().visit(tree)
    guarded.set_environment(env)
    return guarded


@contextmanager
def budget() -> Iterator[None]:
    """A fresh step budget for the renders inside the ``with`` block."""
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)
