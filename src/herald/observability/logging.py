"""Structured JSON logging with secret redaction on every record.

:func:`configure_logging` puts structlog *over* the standard library: structlog events and
plain :mod:`logging` records (uvicorn, httpx, SQLAlchemy, ...) leave through one handler on the
root logger, one renderer and one redaction pass, as JSON lines on standard error::

    {"event": "published", "topic": "orders", "level": "info", "logger": "herald.server",
     "timestamp": "2025-01-01T12:00:00.000000Z"}

Redaction happens in two layers, both applied to structlog events and foreign records alike:

* **by key** (:func:`is_sensitive_key`): a field whose name contains ``token``, ``secret``,
  ``password``, ``key`` (but not ``keyid``/``kid``), ``title``, ``body``, ``data`` and the
  other words of :data:`SENSITIVE_KEY_WORDS` is replaced by ``"[redacted]"``, at any depth
  of nested dicts and lists. Message *content* (titles, bodies, data) counts as secret: it
  belongs to the publisher's users, not to the operator's logs.
* **by shape** (:func:`redact_text`): inside every string, bearer credentials, JWTs, URL
  userinfo, ``whsec_`` webhook secrets and ``name=value`` / ``"name": "value"`` pairs with a
  sensitive name (which covers query parameters such as ``?ticket=``) are masked.

The %-arguments of a record are redacted *before* they are merged into the message, so
``log.info("%s", {"password": ...})`` is masked by key, not only by shape.

uvicorn installs its own handlers unless told not to: run it with ``log_config=None`` (or
call :func:`configure_logging` after it starts), and its ``uvicorn.error`` and
``uvicorn.access`` loggers propagate here.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Final

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "SENSITIVE_KEY_WORDS",
    "configure_logging",
    "get_logger",
    "is_sensitive_key",
    "redact_event",
    "redact_text",
    "redact_value",
]

#: What a redacted value is replaced with.
REDACTED: Final = "[redacted]"
#: A key is sensitive when its name, lower-cased and without ``-``/``_``/``.``/spaces,
#: contains one of these words.
SENSITIVE_KEY_WORDS: Final = (
    "authorization",
    "token",
    "secret",
    "password",
    "passwd",
    "key",
    "cookie",
    "ticket",
    "signature",
    "title",
    "body",
    "data",
    "content",
    "dsn",
    "credential",
)
# Key identifiers name a key without revealing it (RFC 9421 `keyid`, JWS `kid`).
_PUBLIC_KEY_NAMES: Final = frozenset({"keyid", "keyids", "kid"})
# Deeper structures are cut, which also stops reference cycles.
_MAX_DEPTH: Final = 12

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_FORMATS: Final = ("json", "console")
# uvicorn configures these itself; they must propagate to the root handler instead.
_ROUTED_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Fields every line starts with, in this order.
_FIRST_KEYS: Final = ("timestamp", "level", "logger", "event")
# Record attributes that are not extras: ``message``/``asctime`` are left behind by any
# other handler's formatter (unredacted, %-args merged), ``color_message`` is uvicorn's.
_DROPPED_EXTRAS: Final = ("message", "asctime", "color_message")

# Every pattern may see attacker-chosen text (request paths reach the access log), so none
# may backtrack quadratically: runs are entered only at their start (look-behind) and
# consumed possessively (`*+`, `++`, Python 3.11).
# RFC 6750 §2.1 bearer credentials.
_BEARER = re.compile(r"(?i)\b(bearer)\s++[^\s,;\"'<>]++")
# RFC 7519 compact JWS/JWE: base64url segments, the first one a JSON header (`{"` → eyJ).
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]++(?:\.[A-Za-z0-9_-]*+){2,4}")
# Standard Webhooks signing secrets.
_WHSEC = re.compile(r"(?<![A-Za-z0-9_])whsec_[A-Za-z0-9+/=_-]++")
# RFC 3986 §3.2.1 userinfo; the password may hold a raw '@', so take the last one.
_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*+://)[^\s/?#@:]*+(?::[^\s/]*)?@"
)
# `name=value`, `name: value`, `"name": "value"` and query parameters `?name=value`.
_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z0-9_.\-]++)(?P<kq>["']?)(?P<sep>\s*+[:=]\s*+)
        (?P<value>"(?:[^"\\]|\\.)*+"|'(?:[^'\\]|\\.)*+'
          |(?i:(?:basic|bearer|digest|negotiate|token)\s++)?(?:\[redacted\]|[^\s&,;"'<>(){}\[\]]{1,256}+))""",
    re.VERBOSE,
)
# The rest of a sensitive value longer than `_PAIR` looks at (bounded there so that a long
# value is not rescanned for every key inside it).
_VALUE_TAIL = re.compile(r"[^\s&,;\"'<>(){}\[\]]*+")


def is_sensitive_key(name: str) -> bool:
    """Tell whether a field called ``name`` must never be logged in clear.

    Args:
        name: A field, header, query-parameter or dictionary key name.

    Returns:
        ``True`` when the name contains a word of :data:`SENSITIVE_KEY_WORDS` and is not a
        key identifier (``keyid``, ``kid``).
    """
    compact = re.sub(r"[\s_.\-]", "", name.lower())
    if compact in _PUBLIC_KEY_NAMES:
        return False
    return any(word in compact for word in SENSITIVE_KEY_WORDS)


def _redact_pairs(text: str) -> str:
    out: list[str] = []
    pos = 0
    while (match := _PAIR.search(text, pos)) is not None:
        if is_sensitive_key(match["key"]):
            value = match["value"]
            quote = value[0] if value[0] in "\"'" else ""
            out.append(text[pos : match.start("value")] + quote + REDACTED + quote)
            pos = match.end()
            if not quote and (tail := _VALUE_TAIL.match(text, pos)) is not None:
                pos = tail.end()
        else:
            # Resume right after the separator: the value may itself hold pairs (a URL's
            # query string after `url=`), which must still be seen.
            out.append(text[pos : match.end("sep")])
            pos = match.end("sep")
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Mask credentials that can be recognised by their shape inside free text.

    Args:
        text: Any string: a message, a URL, a header dump, a traceback.

    Returns:
        ``text`` with bearer credentials, JWTs, URL userinfo, ``whsec_`` secrets and the
        values of sensitive ``name=value`` pairs replaced.
    """
    text = _BEARER.sub(r"\1 " + REDACTED, text)
    text = _JWT.sub("[redacted-jwt]", text)
    text = _WHSEC.sub("whsec_" + REDACTED, text)
    text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return _redact_pairs(text)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Redact a value of any shape: by key inside mappings, by shape inside strings.

    Numbers, booleans and ``None`` pass unchanged; other objects are replaced by their
    redacted ``str()``, since their ``repr`` could carry anything.

    Args:
        value: What is about to be logged.
        _depth: Recursion depth (internal).

    Returns:
        A redacted copy; containers are copied, never changed in place.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return "[truncated]"
    if isinstance(value, Mapping | tuple | list | set | frozenset):
        return _redact_container(value, _depth + 1)
    return redact_text(_to_text(value))


def _redact_container(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping):
        return {
            redact_text(str(key)): (
                _mask(item) if is_sensitive_key(str(key)) else redact_value(item, depth)
            )
            for key, item in value.items()
        }
    items = [redact_value(item, depth) for item in value]
    # Tuples stay tuples: %-formatting treats them as argument lists.
    return tuple(items) if isinstance(value, tuple) else items


def _to_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return f"<unprintable {type(value).__name__}>"


def _mask(value: Any) -> Any:
    # None and booleans say whether a secret is present, never what it is.
    return value if value is None or isinstance(value, bool) else REDACTED


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Redact every field of ``event_dict`` (see :func:`redact_value`).

    ProcessorFormatter's private ``_record``/``_from_structlog`` entries are left alone.

    Args:
        _logger: The wrapped logger (unused).
        _method: The log method name (unused).
        event_dict: The event being logged.

    Returns:
        The redacted event dictionary.
    """
    for key, value in event_dict.items():
        if key in ("_record", "_from_structlog"):
            continue
        event_dict[key] = _mask(value) if is_sensitive_key(key) else redact_value(value)
    return event_dict


def _merge_positional_args(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Redact %-arguments by key, then merge them into the message, never failing."""
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord) and not event_dict.get("_from_structlog"):
        if not isinstance(record.msg, str):  # logging.info({"password": ...})
            event_dict["event"] = str(redact_value(record.msg))
        for name in _DROPPED_EXTRAS:
            event_dict.pop(name, None)
    args = event_dict.pop("positional_args", None)
    if not args:
        return event_dict
    # logging's own rule: a single non-empty mapping argument feeds %(name)s fields.
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]
    safe = redact_value(args)
    try:
        event_dict["event"] = str(event_dict.get("event", "")) % safe
    except (TypeError, ValueError, KeyError):
        event_dict["event"] = f"{event_dict.get('event', '')} {safe!r}"
    return event_dict


def _order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put the fixed fields first so JSON lines read left to right."""
    ordered = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


def _shared_processors() -> list[Processor]:
    # Runs for structlog events and, as ProcessorFormatter's pre-chain, for foreign records.
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _merge_positional_args,
    ]


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            # A plain traceback string: rich/dict tracebacks would render local variables.
            structlog.processors.format_exc_info,
            # Redact before the record leaves structlog, so any other handler gets it clean.
            redact_event,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=True,
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the *current* ``sys.stderr``, so swapping it (tests, daemons) just works."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit() runs under the handler lock
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib name
        # The default prints the record's unredacted message and arguments.
        if logging.raiseExceptions:
            exc_type = sys.exc_info()[0]
            reason = exc_type.__name__ if exc_type is not None else "error"
            sys.stderr.write(f"herald: could not log a record of {record.name!r}: {reason}\n")


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog and the standard library through one redacting renderer on stderr.

    Calling it again replaces the previous configuration (no duplicate handlers).

    Args:
        level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        fmt: ``json`` (one JSON object per line) or ``console`` (aligned, for humans).

    Raises:
        ValueError: If ``level`` or ``fmt`` is unknown.
    """
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    if fmt not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(_FORMATS)}")
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    _configure_structlog()
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.ExtraAdder(),
                *_shared_processors(),
                structlog.processors.format_exc_info,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_event,  # every record, whatever its origin
                _order_keys,
                renderer,
            ],
            # Redact %-arguments ourselves, before they are merged into the message.
            use_get_message=False,
            pass_foreign_args=True,
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        for old in list(routed.handlers):
            routed.removeHandler(old)
        routed.setLevel(logging.NOTSET)
        routed.propagate = True
    # Never below WARNING, even when Herald logs at DEBUG: these libraries print SQL (with
    # bound parameters: ids, topics, idempotency keys) at INFO/DEBUG and raw WebSocket
    # frames at DEBUG.
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


#: Third-party loggers whose DEBUG output would carry request data.
_CHATTY_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg", "websockets", "httpx", "httpcore")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named ``name`` (usually ``__name__``).

    Before :func:`configure_logging` runs, events already pass through redaction and reach
    the standard library's last-resort handler (warnings and above).

    Args:
        name: The logger name, shown as ``logger`` in every event.

    Returns:
        A lazily bound :class:`structlog.stdlib.BoundLogger`.
    """
    if not structlog.is_configured():
        _configure_structlog()
    return structlog.stdlib.get_logger(name)
