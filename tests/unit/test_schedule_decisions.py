"""Schedule decisions over a controllable clock: no test sleeps for a real minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fx_operator.domain.schedules import (
    Action,
    ConcurrencyPolicy,
    CronSchedule,
    Finished,
    decide,
    execution_name,
    retry_delay,
    to_prune,
)
from fx_operator.exceptions import ValidationError

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def every_minute() -> CronSchedule:
    return CronSchedule.parse("* * * * *")


def run_clock(schedule: CronSchedule, start: datetime, end: datetime, step: timedelta, *,
              policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW,
              active_for: timedelta = timedelta(0)) -> tuple[list[datetime], list[datetime]]:
    """Tick a fake clock from start to end; return the times created and the times skipped.
    Each created run stays active for ``active_for``."""
    last: datetime | None = None
    created: list[datetime] = []
    skipped: list[datetime] = []
    now = start
    while now <= end:
        active = sum(1 for t in created if t <= now < t + active_for)
        decision = decide(schedule, now=now, last=last, created=start, active=active,
                          policy=policy)
        if decision.action in (Action.CREATE, Action.REPLACE):
            assert decision.time is not None
            created.append(decision.time)
        elif decision.action is Action.SKIP:
            assert decision.time is not None
            skipped.append(decision.time)
        if decision.time is not None:
            last = decision.time
        now += step
    return created, skipped


def test_every_minute_makes_one_execution_per_minute() -> None:
    created, skipped = run_clock(every_minute(), T0, T0 + 10 * MINUTE + timedelta(seconds=7),
                                 timedelta(seconds=7))
    assert created == [T0 + i * MINUTE for i in range(1, 11)]
    assert skipped == []
    assert len({execution_name("nightly", t) for t in created}) == 10


def test_deciding_again_at_the_same_moment_makes_the_same_name() -> None:
    """A restart between the decision and the status write decides again: same Execution."""
    first = decide(every_minute(), now=T0 + MINUTE, last=None, created=T0, active=0)
    again = decide(every_minute(), now=T0 + MINUTE + timedelta(seconds=20), last=None,
                   created=T0, active=0)
    assert first.time == again.time == T0 + MINUTE
    assert first.time is not None
    assert execution_name("s", first.time) == f"s-{int((T0 + MINUTE).timestamp()) // 60}"


def test_forbid_skips_while_a_run_is_active_and_allow_overlaps() -> None:
    created, skipped = run_clock(every_minute(), T0, T0 + 6 * MINUTE, MINUTE,
                                 policy=ConcurrencyPolicy.FORBID,
                                 active_for=timedelta(seconds=150))
    assert created == [T0 + MINUTE, T0 + 4 * MINUTE]
    assert skipped == [T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 5 * MINUTE, T0 + 6 * MINUTE]
    allowed, none_skipped = run_clock(every_minute(), T0, T0 + 6 * MINUTE, MINUTE,
                                      active_for=timedelta(seconds=150))
    assert len(allowed) == 6 and none_skipped == []


def test_replace_stops_the_active_run() -> None:
    decision = decide(every_minute(), now=T0 + 2 * MINUTE, last=T0 + MINUTE, created=T0,
                      active=1, policy=ConcurrencyPolicy.REPLACE)
    assert (decision.action, decision.time) == (Action.REPLACE, T0 + 2 * MINUTE)


def test_suspend_makes_nothing_and_resuming_catches_up_once() -> None:
    suspended = decide(every_minute(), now=T0 + 5 * MINUTE, last=T0, created=T0, active=0,
                       suspended=True)
    assert suspended.action is Action.WAIT and suspended.reason == "suspended"
    resumed = decide(every_minute(), now=T0 + 5 * MINUTE, last=T0, created=T0, active=0)
    assert (resumed.action, resumed.time) == (Action.CREATE, T0 + 5 * MINUTE)
    assert resumed.reason.startswith("4 earlier missed time(s) not run")


def test_missed_runs_after_an_outage_catch_up_once_within_the_deadline() -> None:
    hourly = CronSchedule.parse("@hourly")
    outage_end = T0 + timedelta(hours=5, minutes=3)
    decision = decide(hourly, now=outage_end, last=T0, created=T0 - timedelta(days=1), active=0,
                      deadline_seconds=600)
    assert (decision.action, decision.time) == (Action.CREATE, T0 + timedelta(hours=5))
    assert "4 earlier missed" in decision.reason
    after = decide(hourly, now=outage_end + MINUTE, last=decision.time, created=T0, active=0,
                   deadline_seconds=600)
    assert after.action is Action.WAIT  # never a burst
    late = decide(hourly, now=T0 + timedelta(hours=5, minutes=30), last=T0, created=T0,
                  active=0, deadline_seconds=600)
    assert late.action is Action.SKIP and "past startingDeadlineSeconds=600" in late.reason


def test_a_year_of_outage_is_counted_without_walking_it() -> None:
    decision = decide(every_minute(), now=T0 + timedelta(days=365), last=T0, created=T0,
                      active=0)
    assert decision.action is Action.CREATE
    assert decision.reason.startswith("more than 100 earlier missed")


def test_time_zone_and_dst_transitions() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    daily = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    # Spring forward: 02:30 does not exist on 2026-03-29; it runs once, at 03:00.
    spring = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)
    created, _ = run_clock(daily, spring.astimezone(UTC),
                           (spring + timedelta(days=2)).astimezone(UTC), timedelta(minutes=10))
    assert [t.astimezone(berlin).strftime("%d %H:%M") for t in created] == [
        "29 03:00", "30 02:30"]
    # Fall back: 02:30 happens twice on 2026-10-25; a fixed-hour schedule runs once.
    autumn = datetime(2026, 10, 24, 12, 0, tzinfo=berlin)
    created, _ = run_clock(daily, autumn.astimezone(UTC),
                           (autumn + timedelta(days=2)).astimezone(UTC), timedelta(minutes=10))
    assert len(created) == 2
    # ... while an hourly one runs every real hour, both 02:00s included.
    hourly = CronSchedule.parse("@hourly", "Europe/Berlin")
    night = datetime(2026, 10, 25, 0, 30, tzinfo=berlin).astimezone(UTC)
    created, _ = run_clock(hourly, night, night + timedelta(hours=4), timedelta(minutes=5))
    assert [t - created[0] for t in created] == [timedelta(hours=h) for h in range(4)]


@pytest.mark.parametrize(("expression", "zone", "message"), [
    ("61 * * * *", None, "out of range"),
    ("* * *", None, "five fields"),
    ("0 0 * * * 2026", None, "five fields"),
    ("@sometimes", None, "unknown macro"),
    ("0 0 31 2 *", None, "spec.schedule"),
    ("* * * * *", "Mars/Olympus", "not an IANA time zone"),
])
def test_bad_expressions_and_zones_name_the_field(expression: str, zone: str | None,
                                                  message: str) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        CronSchedule.parse(expression, zone)
    assert raised.value.problems[0].where in ("spec.schedule", "spec.timeZone")


def test_history_limits_prune_the_oldest_of_each_outcome() -> None:
    finished = [Finished(f"ok-{i}", True, T0 + i * MINUTE) for i in range(5)]
    finished += [Finished(f"bad-{i}", False, T0 + i * MINUTE) for i in range(3)]
    assert to_prune(finished, keep_succeeded=3, keep_failed=1) == [
        "bad-0", "ok-0", "bad-1", "ok-1"]
    assert to_prune(finished, keep_succeeded=0, keep_failed=0) == sorted(
        (f.name for f in finished), key=lambda n: (int(n.split("-")[1]), n))


def test_retry_backoff_doubles_up_to_six_minutes() -> None:
    assert [retry_delay(n).total_seconds() for n in range(0, 8)] == [
        0, 10, 20, 40, 80, 160, 320, 360]
    assert retry_delay(10_000) == timedelta(minutes=6)
