"""A movable clock for the Schedules of an operator running in this process (no real minutes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fx_operator.services import schedules


@dataclass
class MovableClock:
    """The real time plus an offset that only grows: time still passes, and can jump."""

    offset: timedelta = field(default_factory=timedelta)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump_to(self, moment: datetime) -> None:
        self.offset = max(self.offset, moment - datetime.now(UTC))

    def just_after_next_minute(self, seconds: float = 1) -> datetime:
        """Jump to a second past the next whole minute; returns that minute."""
        minute = self.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
        self.jump_to(minute + timedelta(seconds=seconds))
        return minute


@contextmanager
def schedule_clock() -> Iterator[MovableClock]:
    """Every ScheduleService without a clock of its own reads this one meanwhile."""
    clock = MovableClock()
    saved = schedules.utcnow
    schedules.utcnow = clock.now
    try:
        yield clock
    finally:
        schedules.utcnow = saved
