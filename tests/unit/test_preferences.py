"""Preferences, fallback plans and quiet hours (herald.core.preferences): pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.core.preferences import (
    FallbackStep,
    Preferences,
    QuietHours,
    Step,
    assign_steps,
    cap_for,
    channel_allowed,
    fallback_action,
    parse_preferences,
    plan_steps,
    quiet_until,
    validate_fallback,
)
from herald.errors import BadRequest

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# -- parsing ------------------------------------------------------------------------------------
def test_empty_preferences_are_defaults() -> None:
    assert parse_preferences(None) == Preferences()
    assert parse_preferences({}) == Preferences()


def test_a_full_document_parses() -> None:
    prefs = parse_preferences(
        {
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
            "quiet_hours": {"start": "22:00", "end": "07:30"},
            "categories": {
                "marketing": {"channels": {"email": False}, "cap": {"count": 2, "period": 3600}}
            },
            "fallback": [
                {"channels": ["inapp"]},
                {"channels": ["webpush"], "after": 60},
                {"channels": ["email"]},
            ],
        }
    )
    assert prefs.locale == "zh-CN"
    assert not channel_allowed(prefs, "marketing", "email")
    assert channel_allowed(prefs, "marketing", "webpush")
    assert channel_allowed(prefs, None, "email")
    assert channel_allowed(prefs, "billing", "email")
    cap = cap_for(prefs, "marketing")
    assert cap is not None
    assert (cap.count, cap.period) == (2, 3600)
    assert cap_for(prefs, "billing") is None
    assert cap_for(prefs, None) is None


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"colour": "red"}, "colour"),
        ({"locale": "english please"}, "locale"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"timezone": "../../etc/passwd"}, "time zone"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "HH:MM"),
        ({"quiet_hours": {"start": "7:00", "end": "08:00"}}, "HH:MM"),
        ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, "differ"),
        ({"categories": {"Bad Name": {}}}, "category"),
        ({"categories": {"x": {"cap": {"count": 0, "period": 3600}}}}, "count"),
        ({"categories": {"x": {"cap": {"count": 1, "period": 5}}}}, "period"),
        ({"fallback": []}, "fallback"),
        ({"fallback": [{"channels": ["email"], "after": 5}]}, "no 'after'"),
        ({"fallback": [{"channels": ["email"]}, {"channels": ["inapp"], "after": 5}]}, "first"),
        ({"fallback": [{"channels": ["email"]}, {"channels": ["email"], "after": 5}]}, "two"),
        ({"fallback": [{"channels": ["inapp"]}, {"channels": ["email"]}]}, "needs 'after'"),
    ],
)
def test_bad_preferences_are_refused_with_a_reason(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_preferences(raw)
    assert caught.value.slug == "invalid-preferences"
    assert needle in caught.value.detail


def test_message_fallback_rules_use_the_plain_slug() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_fallback([FallbackStep(channels=["inapp"]), FallbackStep(channels=["email"])])
    assert caught.value.slug == "invalid-request"


# -- quiet hours --------------------------------------------------------------------------------
def _prefs(start: str, end: str, zone: str | None = None) -> Preferences:
    return Preferences(quiet_hours=QuietHours(start=start, end=end), timezone=zone)


def test_no_quiet_hours_means_never_quiet() -> None:
    assert quiet_until(Preferences(), T0) is None


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 28, 21, 59, tzinfo=UTC), None),
        (datetime(2026, 11, 28, 22, 0, tzinfo=UTC), datetime(2026, 11, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 28, 23, 30, tzinfo=UTC), datetime(2026, 11, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 29, 3, 0, tzinfo=UTC), datetime(2026, 11, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 29, 7, 0, tzinfo=UTC), None),
        (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), None),
    ],
)
def test_a_window_across_midnight(now: datetime, expected: datetime | None) -> None:
    assert quiet_until(_prefs("22:00", "07:00"), now) == expected


def test_a_window_within_one_day() -> None:
    prefs = _prefs("12:00", "14:00")
    assert quiet_until(prefs, datetime(2026, 11, 28, 13, 0, tzinfo=UTC)) == datetime(
        2026, 11, 28, 14, 0, tzinfo=UTC
    )
    assert quiet_until(prefs, datetime(2026, 11, 28, 14, 0, tzinfo=UTC)) is None
    assert quiet_until(prefs, datetime(2026, 11, 28, 11, 59, tzinfo=UTC)) is None


def test_quiet_hours_are_in_the_recipients_time_zone() -> None:
    # 22:00-07:00 in Shanghai (UTC+8) is 14:00-23:00 UTC.
    prefs = _prefs("22:00", "07:00", "Asia/Shanghai")
    assert quiet_until(prefs, datetime(2026, 11, 28, 13, 59, tzinfo=UTC)) is None
    assert quiet_until(prefs, datetime(2026, 11, 28, 15, 0, tzinfo=UTC)) == datetime(
        2026, 11, 28, 23, 0, tzinfo=UTC
    )


def test_quiet_hours_across_a_dst_change() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25 (03:00 CEST -> 02:00 CET): the night
    # is an hour longer, and the window still ends at 07:00 local = 06:00 UTC.
    prefs = _prefs("22:00", "07:00", "Europe/Berlin")
    night = datetime(2026, 10, 24, 21, 0, tzinfo=UTC)  # 23:00 CEST
    assert quiet_until(prefs, night) == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)


@given(
    start=st.integers(0, 1439),
    end=st.integers(0, 1439),
    minutes=st.integers(0, 14 * 24 * 60),
    zone=st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York", "Europe/Berlin"]),
)
def test_quiet_until_is_later_than_now_and_within_a_day(
    start: int, end: int, minutes: int, zone: str
) -> None:
    if start == end:
        return
    prefs = _prefs(f"{start // 60:02}:{start % 60:02}", f"{end // 60:02}:{end % 60:02}", zone)
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    until = quiet_until(prefs, now)
    if until is None:
        return
    assert now < until <= now + timedelta(hours=25)  # a DST night may last 25 hours
    local_end = until.astimezone(ZoneInfo(zone))
    # The window ends at its wall-clock end (or later, when DST skipped that minute).
    assert local_end.hour * 60 + local_end.minute >= end or local_end.date() > now.date()


# -- plans --------------------------------------------------------------------------------------
def test_plan_precedence() -> None:
    prefs = Preferences(fallback=[FallbackStep(channels=["email"])])
    message_plan = [FallbackStep(channels=["webpush"])]
    assert plan_steps(channels=None, fallback=message_plan, prefs=prefs) == [
        Step(frozenset({"webpush"}))
    ]
    assert plan_steps(channels=["slack"], fallback=None, prefs=prefs) == [
        Step(frozenset({"slack"}))
    ]
    assert plan_steps(channels=None, fallback=None, prefs=prefs) == [Step(frozenset({"email"}))]
    assert plan_steps(channels=None, fallback=None, prefs=Preferences()) == [Step(None)]


def test_assign_steps_drops_empty_steps_and_carries_their_wait() -> None:
    steps = [
        Step(frozenset({"inapp"})),
        Step(frozenset({"webpush"}), 60),
        Step(frozenset({"email"}), 300),
    ]
    assert assign_steps(steps, {"inapp", "webpush", "email"}) == {
        "inapp": (0, None),
        "webpush": (1, 60),
        "email": (2, 300),
    }
    # No Web Push subscription: email waits the 60 s of the missing step plus its own.
    assert assign_steps(steps, {"inapp", "email"}) == {"inapp": (0, None), "email": (1, 360)}
    # Nothing before email: it starts at once.
    assert assign_steps(steps[1:], {"email"}) == {"email": (0, None)}
    # All channels at once.
    assert assign_steps([Step(None)], {"inapp", "email"}) == {
        "inapp": (0, None),
        "email": (0, None),
    }


# -- deciding about waiting steps ---------------------------------------------------------------
EXP = T0 + timedelta(hours=1)


def _act(
    rows: list[tuple[int, str, str]], *, now: datetime = T0, deadline: datetime | None = None
) -> tuple[str, int]:
    return fallback_action(rows, now=now, expires_at=EXP, deadline=deadline)


def test_nothing_waiting_means_nothing_to_do() -> None:
    assert _act([(0, "email", "dead")]) == ("wait", -1)


def test_a_delivered_row_skips_the_waiting_steps() -> None:
    rows = [(0, "inapp", "delivered"), (1, "webpush", "waiting"), (2, "email", "waiting")]
    assert _act(rows, deadline=T0 - timedelta(seconds=1)) == ("skip", 0)


def test_the_wait_running_out_starts_the_step() -> None:
    rows = [(0, "inapp", "pending"), (1, "webpush", "waiting")]
    assert _act(rows, deadline=T0 + timedelta(seconds=1)) == ("wait", 1)
    assert _act(rows, deadline=T0) == ("activate", 1)


def test_failure_of_every_earlier_delivery_starts_the_step() -> None:
    rows = [
        (0, "inapp", "pending"),
        (1, "webpush", "dead"),
        (1, "slack", "expired"),
        (2, "email", "waiting"),
    ]
    assert _act(rows, deadline=EXP) == ("activate", 2)
    still_trying = [*rows[:2], (1, "slack", "retrying"), rows[3]]
    assert _act(still_trying, deadline=EXP) == ("wait", 2)


def test_in_app_alone_never_counts_as_failed() -> None:
    rows = [(0, "inapp", "pending"), (1, "email", "waiting")]
    assert _act(rows, deadline=None) == ("wait", 1)


def test_expiry_expires_the_waiting_steps() -> None:
    rows = [(0, "inapp", "pending"), (1, "email", "waiting")]
    assert _act(rows, now=EXP, deadline=EXP) == ("expire", 0)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["inapp", "email", "webpush", "slack"]),
            st.sampled_from(
                ["waiting", "pending", "sending", "retrying", "delivered", "dead", "expired"]
            ),
        ),
        max_size=8,
    ),
    st.integers(-120, 120),
)
def test_fallback_action_is_total_and_consistent(
    rows: list[tuple[int, str, str]], offset: int
) -> None:
    action, step = _act(rows, deadline=T0 + timedelta(seconds=offset))
    waiting = [s for s, _, state in rows if state == "waiting"]
    if not waiting:
        assert (action, step) == ("wait", -1)
    elif any(state == "delivered" for _, _, state in rows):
        assert action == "skip"
    else:
        assert action in {"activate", "wait"}
        assert step == min(waiting)
        if offset <= 0:
            assert action == "activate"
