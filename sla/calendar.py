"""Business calendars: turn business seconds into wall-clock deadlines and back.

A calendar is a set of open intervals in one time zone. ``add(start_ms, s)``
returns the wall-clock instant at which ``s`` business seconds have elapsed since
``start_ms``; ``elapsed(a_ms, b_ms)`` counts the business seconds between two
instants. A 24x7 calendar is plain arithmetic. The statutory calendar follows the
Chinese public holidays and make-up working days of ``chinese_calendar``; years
the library does not know fall back to Monday-Friday (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import chinese_calendar

from .config import CalendarConfig

__all__ = ["AlwaysOpen", "BusinessCalendar", "Calendar", "build_calendar"]

log = logging.getLogger(__name__)
_MAX_DAYS = 800  # a target never spans more than this many calendar days of closures
_DAY_CACHE = 4096  # days of open intervals kept per calendar


class Calendar(Protocol):
    """Business-time arithmetic in epoch milliseconds."""

    def add(self, start_ms: int, seconds: float) -> int:
        """The instant (ms) when ``seconds`` business seconds have passed since ``start_ms``."""

    def elapsed(self, start_ms: int, end_ms: int) -> float:
        """Business seconds between two instants (0 when end <= start)."""


class AlwaysOpen:
    """24x7: business time is wall time."""

    def add(self, start_ms: int, seconds: float) -> int:
        """``start_ms + seconds``."""
        return start_ms + round(seconds * 1000)

    def elapsed(self, start_ms: int, end_ms: int) -> float:
        """Wall seconds between the instants."""
        return max(0, end_ms - start_ms) / 1000


@lru_cache(maxsize=4096)
def _statutory_workday(day: date) -> bool:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        if day.month == 1 and day.day == 1:
            log.warning("chinese_calendar has no data for %d; using Monday-Friday", day.year)
        return day.weekday() < 5


class BusinessCalendar:
    """Split shifts on open days, in one time zone."""

    def __init__(self, config: CalendarConfig) -> None:
        self.tz = ZoneInfo(config.timezone)
        self.config = config
        self._closed = frozenset(date.fromisoformat(d) for d in config.closed_dates)
        self._open = frozenset(date.fromisoformat(d) for d in config.open_dates)
        self._days: dict[date, tuple[tuple[int, int], ...]] = {}

    def is_open_day(self, day: date) -> bool:
        """True when the desk works on ``day`` (holidays, make-up days, overrides)."""
        if day in self._closed:
            return False
        if day in self._open:
            return True
        if self.config.days == "all":
            return True
        if self.config.days == "weekdays":
            return day.weekday() < 5
        return _statutory_workday(day)

    def _day(self, day: date) -> tuple[tuple[int, int], ...]:
        """Open intervals (epoch ms) of one day, cached: the hot path asks for few days."""
        hit = self._days.get(day)
        if hit is not None:
            return hit
        out: list[tuple[int, int]] = []
        if self.is_open_day(day):
            for opens, closes in self.config.hours:
                end = (self._ms(day + timedelta(days=1), time(0, 0))
                       if closes == time(23, 59, 59, 999_999) else self._ms(day, closes))
                out.append((self._ms(day, opens), end))
        if len(self._days) >= _DAY_CACHE:
            self._days.clear()
        self._days[day] = tuple(out)
        return self._days[day]

    def _intervals(self, start_ms: int) -> Iterator[tuple[int, int]]:
        """Open intervals (ms) from the day of ``start_ms`` on, clipped to start at it."""
        day = datetime.fromtimestamp(start_ms / 1000, self.tz).date()
        for _ in range(_MAX_DAYS):
            for a, b in self._day(day):
                if b > start_ms:
                    yield max(a, start_ms), b
            day += timedelta(days=1)

    def _ms(self, day: date, at: time) -> int:
        return int(datetime.combine(day, at, self.tz).timestamp() * 1000)

    def add(self, start_ms: int, seconds: float) -> int:
        """Walk the open intervals until ``seconds`` are used up."""
        left_ms = round(seconds * 1000)
        last = start_ms
        for a, b in self._intervals(start_ms):
            if left_ms <= b - a:
                return a + left_ms
            left_ms -= b - a
            last = b
        return last + left_ms  # a calendar closed for _MAX_DAYS days: degrade to wall time

    def elapsed(self, start_ms: int, end_ms: int) -> float:
        """Sum of the open time between the instants."""
        if end_ms <= start_ms:
            return 0.0
        total = 0
        for a, b in self._intervals(start_ms):
            if a >= end_ms:
                break
            total += min(b, end_ms) - a
        return total / 1000


def build_calendar(config: CalendarConfig) -> Calendar:
    """The calendar implementation for a config entry."""
    return AlwaysOpen() if config.always_open else BusinessCalendar(config)
