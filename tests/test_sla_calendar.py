"""Business calendars: split shifts, Chinese public holidays, make-up working days."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniroute.router.exceptions import ConfigError
from omniroute.router.settings import default_config_dir
from omniroute.sla.calendar import AlwaysOpen, BusinessCalendar
from omniroute.sla.config import CalendarConfig, load_sla_config

SH = ZoneInfo("Asia/Shanghai")
SPLIT = CalendarConfig.model_validate({"hours": ["09:00-12:00", "13:30-21:00"]})


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=SH).timestamp() * 1000)


def at(value_ms: int) -> str:
    return datetime.fromtimestamp(value_ms / 1000, SH).strftime("%Y-%m-%d %H:%M:%S")


def test_always_open_is_wall_time() -> None:
    cal = AlwaysOpen()
    start = ms("2026-10-01 03:00:00")
    assert at(cal.add(start, 600)) == "2026-10-01 03:10:00"
    assert cal.elapsed(start, start + 30_000) == 30.0


@pytest.mark.parametrize(
    ("start", "seconds", "due"),
    [
        ("2026-11-25 10:00:00", 180, "2026-11-25 10:03:00"),  # inside the morning shift
        ("2026-11-25 11:59:00", 120, "2026-11-25 13:31:00"),  # across the lunch break
        ("2026-11-25 12:30:00", 60, "2026-11-25 13:31:00"),  # starts during the break
        ("2026-11-25 20:59:30", 60, "2026-11-26 09:00:30"),  # overnight
        ("2026-11-25 23:00:00", 30, "2026-11-26 09:00:30"),  # arrives after closing
        ("2026-11-27 20:59:00", 120, "2026-11-30 09:01:00"),  # Friday -> Monday
        # National Day 2026: 10-01..10-07 closed
        ("2026-09-30 20:59:00", 120, "2026-10-08 09:01:00"),
        ("2026-10-01 10:00:00", 30, "2026-10-08 09:00:30"),
        # 2026-10-10 is a Saturday make-up working day; Sunday 10-11 is not
        ("2026-10-09 20:59:00", 120, "2026-10-10 09:01:00"),
        ("2026-10-10 20:59:00", 120, "2026-10-12 09:01:00"),
        # one business day of 10.5 h spans from Wednesday 10:00 to Thursday 10:00
        ("2026-11-25 10:00:00", 10.5 * 3600, "2026-11-26 10:00:00"),
    ],
)
def test_business_deadlines(start: str, seconds: float, due: str) -> None:
    cal = BusinessCalendar(SPLIT)
    assert at(cal.add(ms(start), seconds)) == due


def test_elapsed_counts_only_open_time() -> None:
    cal = BusinessCalendar(SPLIT)
    assert cal.elapsed(ms("2026-11-25 11:00:00"), ms("2026-11-25 14:00:00")) == 5400
    assert cal.elapsed(ms("2026-09-30 20:00:00"), ms("2026-10-08 10:00:00")) == 7200
    assert cal.elapsed(ms("2026-10-03 10:00:00"), ms("2026-10-03 18:00:00")) == 0


def test_day_rules_and_overrides() -> None:
    weekdays = BusinessCalendar(CalendarConfig(days="weekdays", closed_dates=("2026-11-25",)))
    assert not weekdays.is_open_day(datetime(2026, 11, 25).date())  # override
    assert weekdays.is_open_day(datetime(2026, 10, 1).date())  # weekdays ignores holidays
    assert not weekdays.is_open_day(datetime(2026, 10, 10).date())  # a Saturday
    statutory = BusinessCalendar(CalendarConfig(open_dates=("2026-10-03",)))
    assert statutory.is_open_day(datetime(2026, 10, 3).date())
    assert not statutory.is_open_day(datetime(2026, 10, 4).date())
    assert statutory.is_open_day(datetime(2026, 10, 10).date())
    every = BusinessCalendar(
        CalendarConfig.model_validate({"days": "all", "hours": ["00:00-24:00"]})
    )
    start = ms("2026-10-01 23:59:00")
    assert at(every.add(start, 120)) == "2026-10-02 00:01:00"


@settings(max_examples=60, deadline=None)
@given(
    start_s=st.integers(min_value=1_790_000_000, max_value=1_798_000_000),
    seconds=st.floats(min_value=0, max_value=5 * 86_400, allow_nan=False),
)
def test_elapsed_inverts_add(start_s: int, seconds: float) -> None:
    cal = BusinessCalendar(SPLIT)
    start = start_s * 1000
    due = cal.add(start, seconds)
    assert due >= start
    assert cal.elapsed(start, due) == pytest.approx(round(seconds * 1000) / 1000, abs=0.002)


def test_bad_hours_are_refused() -> None:
    with pytest.raises(ValueError, match="must end after it starts"):
        CalendarConfig.model_validate({"hours": ["12:00-09:00"]})
    with pytest.raises(ValueError, match="HH:MM"):
        CalendarConfig.model_validate({"hours": ["9-12"]})


def test_shipped_config_loads_with_handbook_defaults() -> None:
    config = load_sla_config(default_config_dir() / "sla.yaml")
    live = config.policy_for("livestream", "P2", "livestream")
    assert live.first_response is not None
    assert live.first_response.target_s == 30
    emergency = config.policy_for("phone", "P0", "emergency", ["safety"])
    assert emergency.first_response is not None
    assert emergency.first_response.target_s == 600
    chat = config.policy_for("wechat", "P3", "general")
    assert chat.first_response is not None
    assert chat.first_response.warning_s == 100
    assert chat.first_response.target_s == 180
    complaint = config.policy_for("email", "P2", "complaints_qa").first_response
    assert complaint is not None
    assert complaint.target_s == 86400
    assert config.policy_for("wechat", "P2", "logistics", ["logistics.delay"]).id == "order-delay"
    review = config.policy_for("email", "P3", "quality", ["feedback.dissatisfied"])
    assert review.id == "negative-review"
    assert review.first_response is not None
    assert review.first_response.target_s == 48 * 3600
    assert config.policy_for("email", "P2", "general", ["feedback.complaint"]).id == "complaint"
    assert config.policy_for("wechat", "P2", "complaints_qa").id == "chat-complaint"
    assert config.surge.staffing_reserve >= 1.2
    assert config.calendars["default"].hours[1][0].strftime("%H:%M") == "13:30"


def test_config_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "sla.yaml"
    bad.write_text(
        "policies:\n"
        "  - id: chat\n"
        "    first_response: {target_s: 60, warning_s: 90}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"sla.yaml:3: policies.0.first_response"):
        load_sla_config(bad)
    bad.write_text("policies:\n  - id: x\n    calendar: nowhere\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown calendar 'nowhere'"):
        load_sla_config(bad)
    bad.write_text("policies:\n  - id: x\n    match: {channels: [fax]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sla.yaml:3: policies.0.match.channels.0"):
        load_sla_config(bad)
