"""Recipient preferences, fallback plans and quiet hours (DESIGN §7): pure, no I/O.

A recipient's preferences say, per message *category*, which channels may notify them and
how often; when they do not want to be disturbed (quiet hours, in their own time zone);
their locale for templates; and a default fallback plan. A message may bring its own plan.

A plan is an ordered list of steps (:class:`Step`). The first step's channels are tried at once;
each later step starts when every delivery of the steps before it has failed, or when its
``after`` seconds have passed without any delivery of the message to that recipient being
``delivered`` (on ``inapp`` that means *acknowledged*). Once anything is delivered, the
steps still waiting are skipped. :func:`fallback_action` decides this from the rows.

The ``inapp`` channel may only appear in the first step: the in-app inbox always receives
the message at publish time; it can only succeed (an ack), never fail, so a step that
follows an in-app-only step must name its ``after``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from herald.errors import BadRequest

__all__ = [
    "CATEGORY_RE",
    "FALLBACK_AFTER_MAX",
    "INAPP",
    "CategoryPrefs",
    "FallbackAction",
    "FallbackStep",
    "FrequencyCap",
    "Preferences",
    "QuietHours",
    "Step",
    "assign_steps",
    "cap_for",
    "channel_allowed",
    "fallback_action",
    "parse_preferences",
    "plan_steps",
    "quiet_until",
    "validate_fallback",
]

#: The in-app channel (the WebSocket/SSE streams).
INAPP = "inapp"

#: Longest wait a fallback step may name (seconds): a week.
FALLBACK_AFTER_MAX = 7 * 86400

#: Category names: lower-case words joined by ``.``, ``_`` or ``-``.
CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_LOCALE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,3}$")

ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class FallbackStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One step of a fallback plan: these channels, ``after`` seconds without delivery."""

    channels: Annotated[list[ChannelName], msgspec.Meta(min_length=1, max_length=16)]
    after: Annotated[int, msgspec.Meta(ge=1, le=FALLBACK_AFTER_MAX)] | None = None


class QuietHours(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A daily window (``HH:MM`` to ``HH:MM`` local time, may cross midnight)."""

    start: str
    end: str


class FrequencyCap(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """At most ``count`` notifications per ``period`` seconds."""

    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    period: Annotated[int, msgspec.Meta(ge=60, le=FALLBACK_AFTER_MAX)]


class CategoryPrefs(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Per category: channels switched on/off, and a frequency cap."""

    channels: dict[ChannelName, bool] = msgspec.field(default_factory=dict)
    cap: FrequencyCap | None = None


class Preferences(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A recipient's preferences (``PUT /v1/recipients/{id}`` ``preferences``)."""

    locale: Annotated[str, msgspec.Meta(max_length=35)] | None = None
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    quiet_hours: QuietHours | None = None
    categories: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=64)], CategoryPrefs],
        msgspec.Meta(max_length=64),
    ] = msgspec.field(default_factory=dict)
    fallback: Annotated[list[FallbackStep], msgspec.Meta(min_length=1, max_length=8)] | None = None


def _refuse(detail: str) -> BadRequest:
    return BadRequest(detail, slug="invalid-preferences")


def _minutes(text: str, name: str) -> int:
    match = _HHMM.match(text)
    if match is None:
        raise _refuse(f"quiet_hours.{name} must be HH:MM (00:00 to 23:59)")
    return int(match[1]) * 60 + int(match[2])


def validate_fallback(steps: list[FallbackStep], *, where: str = "fallback") -> None:
    """The rules a plan must follow, as typed 400 problems.

    ``inapp`` only in the first step; the first step has no ``after`` (it starts at once);
    no channel in two steps; a step after an in-app-only step names ``after`` (in-app never
    fails, so "if that fails" would never come).
    """
    seen: set[str] = set()
    for number, step in enumerate(steps):
        if number == 0 and step.after is not None:
            raise BadRequest(f"{where}[0] starts at once: it takes no 'after'")
        if number > 0 and INAPP in step.channels:
            raise BadRequest(f"{where}[{number}]: inapp can only be in the first step")
        for channel in step.channels:
            if channel in seen:
                raise BadRequest(f"{where}: channel {channel!r} is in two steps")
            seen.add(channel)
        if number > 0 and step.after is None and set(steps[number - 1].channels) == {INAPP}:
            raise BadRequest(
                f"{where}[{number}] follows an in-app-only step and needs 'after' "
                "(in-app deliveries succeed or wait, they never fail)"
            )


def parse_preferences(raw: Mapping[str, Any] | None) -> Preferences:
    """Validate a preferences document; 400 ``invalid-preferences`` naming what is wrong."""
    if not raw:
        return Preferences()
    try:
        prefs = msgspec.convert(raw, type=Preferences)
    except msgspec.ValidationError as exc:
        raise _refuse(f"invalid preferences: {exc}") from None
    if prefs.locale is not None and not _LOCALE.match(prefs.locale):
        raise _refuse("locale must be a language tag such as 'en' or 'zh-CN'")
    if prefs.timezone is not None:
        _zone(prefs.timezone)
    if prefs.quiet_hours is not None:
        start = _minutes(prefs.quiet_hours.start, "start")
        if start == _minutes(prefs.quiet_hours.end, "end"):
            raise _refuse("quiet_hours.start and quiet_hours.end must differ")
    for name in prefs.categories:
        if not CATEGORY_RE.match(name):
            raise _refuse(f"category {name[:64]!r} is not a valid category name")
    if prefs.fallback is not None:
        try:
            validate_fallback(prefs.fallback, where="preferences.fallback")
        except BadRequest as exc:
            raise _refuse(exc.detail) from None
    return prefs


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _refuse(f"unknown time zone {name[:64]!r} (use an IANA name)") from None


def quiet_until(prefs: Preferences, now: datetime) -> datetime | None:
    """The UTC end of the quiet window ``now`` falls in, or None outside quiet hours.

    The window is in the recipient's time zone (UTC when unset). Wall-clock times that a
    DST change skips or repeats resolve as :mod:`zoneinfo` does (``fold=0``).
    """
    quiet = prefs.quiet_hours
    if quiet is None:
        return None
    zone = _zone(prefs.timezone) if prefs.timezone else UTC
    local = now.astimezone(zone)
    start = _minutes(quiet.start, "start")
    end = _minutes(quiet.end, "end")
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    end_day = local.date()
    if start > end and minute >= start:
        end_day += timedelta(days=1)  # the window crosses midnight: it ends tomorrow
    wall = datetime.combine(end_day, time(end // 60, end % 60), tzinfo=zone)
    return wall.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a resolved plan; ``channels`` None means every channel."""

    channels: frozenset[str] | None
    after: int | None = None


def plan_steps(
    *,
    channels: list[str] | None,
    fallback: list[FallbackStep] | None,
    prefs: Preferences,
) -> list[Step]:
    """The steps for one (message, recipient): the message's plan, else the recipient's.

    Precedence: the message's ``fallback``, its ``channels`` (one step), the recipient's
    ``fallback``, and last one step with every channel.
    """
    chosen = fallback
    if chosen is None and channels is not None:
        return [Step(frozenset(channels))]
    if chosen is None:
        chosen = prefs.fallback
    if chosen is None:
        return [Step(None)]
    return [Step(frozenset(step.channels), step.after) for step in chosen]


def channel_allowed(prefs: Preferences, category: str | None, channel: str) -> bool:
    """Whether the recipient has ``channel`` on for ``category`` (on unless switched off)."""
    if category is None:
        return True
    found = prefs.categories.get(category)
    return found is None or found.channels.get(channel, True)


def cap_for(prefs: Preferences, category: str | None) -> FrequencyCap | None:
    """The recipient's frequency cap for ``category``, if any."""
    if category is None:
        return None
    found = prefs.categories.get(category)
    return None if found is None else found.cap


def assign_steps(steps: list[Step], present: Iterable[str]) -> dict[str, tuple[int, int | None]]:
    """Map each present channel to ``(step, after)`` once empty steps are dropped.

    ``present`` are the recipient's channels that may be used (endpoints, after category
    preferences; ``inapp`` counts as present when it is in a step). A step with no present
    channel is dropped and its wait is added to the next step's, so that "webpush after 60 s,
    else email after 300 s" still waits 360 s in all for email when there is no webpush
    endpoint. Channels in no step are not in the result.
    """
    have = set(present)
    result: dict[str, tuple[int, int | None]] = {}
    number = 0
    carried: int | None = None
    for step in steps:
        mine = have if step.channels is None else have & step.channels
        wait = step.after if carried is None else carried + (step.after or 0)
        if not mine:
            carried = wait
            continue
        for channel in mine:
            result.setdefault(channel, (number, None if number == 0 else wait))
        number += 1
        carried = None
    return result


FallbackAction = tuple[Literal["wait", "skip", "activate", "expire"], int]

_DONE_WITHOUT_SUCCESS = frozenset({"dead", "expired", "suppressed", "skipped"})


def fallback_action(
    rows: Iterable[tuple[int, str, str]],
    *,
    now: datetime,
    expires_at: datetime,
    deadline: datetime | None,
) -> FallbackAction:
    """What to do with the waiting steps of one (message, recipient).

    Args:
        rows: ``(step, channel, state)`` of every delivery of the message to the
            recipient, the in-app one included.
        now: The current time.
        expires_at: The message's expiry.
        deadline: When the lowest waiting step starts anyway (None: only on failure).

    Returns:
        ``("skip", 0)`` — something was delivered, skip every waiting step;
        ``("expire", 0)`` — the message expired, expire every waiting step;
        ``("activate", k)`` — start step ``k``; ``("wait", k)`` — step ``k`` is not due.
        With no waiting step at all: ``("wait", -1)``.
    """
    rows = list(rows)
    waiting = [step for step, _, state in rows if state == "waiting"]
    if not waiting:
        return ("wait", -1)
    if any(state == "delivered" for _, _, state in rows):
        return ("skip", 0)
    if now >= expires_at:
        return ("expire", 0)
    k = min(waiting)
    earlier = [(c, state) for step, c, state in rows if step < k and c != INAPP]
    failed = bool(earlier) and all(state in _DONE_WITHOUT_SUCCESS for _, state in earlier)
    if failed or (deadline is not None and now >= deadline):
        return ("activate", k)
    return ("wait", k)
