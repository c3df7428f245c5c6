"""Typed model of ``config/sla.yaml``: policies, business calendars, escalation, surge.

Durations are seconds (``*_s``). Policies are matched in file order; the first whose
``match`` accepts (channel, band, skill group, tags) wins, so list specific ones first
and end with a catch-all (empty ``match``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..router.models import Band, Channel
from ..skills.yamlconfig import load_model
from .exceptions import ConfigError

__all__ = [
    "CalendarConfig",
    "EscalationStep",
    "ForecastConfig",
    "ForecastGroup",
    "Match",
    "PolicyConfig",
    "ScheduledPeak",
    "SlaConfig",
    "SurgeConfig",
    "Target",
    "TimerKind",
    "load_sla_config",
]

TimerKind = Literal["first_response", "next_response", "resolution", "progress"]
TIMER_KINDS: tuple[TimerKind, ...] = ("first_response", "next_response", "resolution", "progress")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
Seconds = Annotated[float, Field(gt=0, le=90 * 86_400)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(_Frozen):
    """One timer target: breach after ``target_s`` business seconds, warn after ``warning_s``."""

    target_s: Seconds
    warning_s: Seconds | None = None  # default: warning_ratio x target_s

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"target_s": value}
        return value

    @model_validator(mode="after")
    def _warning_first(self) -> Target:
        if self.warning_s is not None and self.warning_s >= self.target_s:
            raise ValueError(
                f"warning_s ({self.warning_s}) must be below target_s ({self.target_s})"
            )
        return self

    def warning_after_s(self, ratio: float) -> float:
        """Seconds after which the warning fires."""
        return self.warning_s if self.warning_s is not None else self.target_s * ratio


class Match(_Frozen):
    """Which decisions a policy applies to; an empty list matches everything."""

    channels: tuple[Channel, ...] = ()
    bands: tuple[Band, ...] = ()
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # any of these tag ids (prefix match on "a.b": "a" matches)

    def accepts(self, channel: str, band: str, group: str, tags: Sequence[str]) -> bool:
        """True when every non-empty criterion is met."""
        if self.channels and channel not in self.channels:
            return False
        if self.bands and band not in self.bands:
            return False
        if self.groups and group not in self.groups:
            return False
        return not self.tags or any(
            t == want or t.startswith(want + ".") for t in tags for want in self.tags
        )


class PolicyConfig(_Frozen):
    """SLA targets for the decisions a ``match`` accepts."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    match: Match = Match()
    calendar: str = "always"
    warning_ratio: float | None = Field(default=None, gt=0, lt=1)
    first_response: Target | None = None
    next_response: Target | None = None
    resolution: Target | None = None
    progress: Target | None = None  # an update is due this often while the case is handled
    escalation: str | None = None  # name of a ladder in ``escalation``; None = no ladder

    def target(self, kind: TimerKind) -> Target | None:
        """The target of one timer kind (None when the policy has no such timer)."""
        value: Target | None = getattr(self, kind)
        return value


class CalendarConfig(_Frozen):
    """Opening hours in one time zone; ``always_open`` for 24x7 desks."""

    timezone: str = "Asia/Shanghai"
    always_open: bool = False
    # statutory: Chinese public holidays closed, make-up working days open (chinese_calendar)
    # weekdays: Monday-Friday; all: every day (only hours apply)
    days: Literal["statutory", "weekdays", "all"] = "statutory"
    hours: tuple[tuple[time, time], ...] = ((time(9, 0), time(21, 0)),)
    closed_dates: tuple[str, ...] = ()  # extra ISO dates the desk is closed
    open_dates: tuple[str, ...] = ()  # extra ISO dates the desk is open

    @field_validator("hours", mode="before")
    @classmethod
    def _parse_hours(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out = []
        for item in value:
            if isinstance(item, str) and "-" in item:
                item = item.split("-", 1)
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise ValueError(f"each shift must be 'HH:MM-HH:MM', got {item!r}")
            pair = []
            for part in item:
                text = str(part).strip()
                if not _HHMM.match(text):
                    raise ValueError(f"time must be HH:MM (00:00-24:00), got {text!r}")
                hh, mm = (int(x) for x in text.split(":"))
                pair.append(time(23, 59, 59, 999_999) if hh == 24 else time(hh, mm))
            out.append(tuple(pair))
        return out

    @model_validator(mode="after")
    def _ordered(self) -> CalendarConfig:
        previous: time | None = None
        for start, end in self.hours:
            if start >= end:
                raise ValueError(f"shift {start:%H:%M}-{end:%H:%M} must end after it starts")
            if previous is not None and start < previous:
                raise ValueError("shifts must be in time order and must not overlap")
            previous = end
        return self


class EscalationStep(_Frozen):
    """One rung of a ladder, ``after_s`` seconds after the breach (wall-clock)."""

    after_s: float = Field(default=0.0, ge=0, le=30 * 86_400)
    raise_bands: int = Field(default=0, ge=0, le=4)  # re-score queued messages this many bands up
    move_to: str | None = None  # move queued messages to this skill group
    notify: tuple[str, ...] = ()  # who the alert names (team-lead, supervisor, duty-manager)


class ForecastGroup(_Frozen):
    """Per skill group overrides of the forecast's handling time and answer target."""

    aht_s: float | None = Field(default=None, gt=0)
    answer_target_s: float | None = Field(default=None, gt=0)


class ForecastConfig(_Frozen):
    """The surge forecast (sla/forecast.py): short buckets, projection, warnings."""

    enabled: bool = True
    bucket_s: float = Field(default=5.0, gt=0, le=60)  # arrivals are counted per bucket
    short_s: float = Field(default=15.0, gt=0)  # the current rate: mean of this span
    trend_s: float = Field(default=60.0, gt=0)  # the trend: least squares over this span
    trend_t: float = Field(default=4.0, ge=0)  # a trend counts at this many std errors
    trend_horizon_s: float = Field(default=120.0, ge=0)  # the trend runs on this far, then flat
    step_z: float = Field(default=4.0, gt=0)  # a step: the short mean this many sigmas off
    horizon_s: float = Field(default=600.0, gt=0, le=7200)  # how far the projection runs
    warning_horizon_s: float = Field(default=300.0, gt=0)  # warn when a breach is this close
    advice_horizon_s: float = Field(default=300.0, gt=0)  # staff for the peak rate up to here
    breach_share: float = Field(default=0.05, gt=0, lt=1)  # tolerated share of breaches
    confidence_z: float = Field(default=2.0, ge=0)  # breaches judged this many SE below the rate
    max_growth: float = Field(default=10.0, ge=1)  # the trend never projects past this x now
    min_rate_per_min: float = Field(default=3.0, ge=0)  # below: no forecast warning
    re_advise_s: float = Field(default=30.0, ge=0)  # at most one updated advice this often
    re_advise_ratio: float = Field(default=0.2, ge=0)  # ... and only if it grows this much
    clear_s: float = Field(default=120.0, gt=0)  # calm this long: the warning is re-armed
    drain_s: float | None = Field(default=None, gt=0)  # also staff to drain the backlog in
    ewma_alpha: float = Field(default=0.05, gt=0, le=1)  # baselines: weight of a bucket
    aht_alpha: float = Field(default=0.005, gt=0, le=1)  # learned handling time: weight of a bucket
    heat_channel: Channel = Channel.LIVESTREAM  # the channel live-room heat leads
    heat_lead_s: float = Field(default=30.0, ge=0)  # heat shows up in arrivals after this
    heat_arrivals_per_unit: float | None = Field(default=None, ge=0)  # None: learned
    incident_s: float = Field(default=30.0, gt=0)  # incident share over this span
    advice_lead_s: float = Field(default=1800.0, ge=0)  # scheduled peaks: advise this early
    groups: dict[str, ForecastGroup] = Field(default_factory=dict)


class ScheduledPeak(_Frozen):
    """A promotion or live session: ``multiplier`` x the learned baseline between
    ``start`` and ``end`` (ISO datetimes; without an offset they are Asia/Shanghai)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    kind: Literal["promotion", "live_session"] = "promotion"
    start: datetime
    end: datetime
    multiplier: float = Field(gt=1, le=1000)
    groups: tuple[str, ...] = ()  # empty: every group with a baseline
    expected_rate_per_min: dict[str, float] = Field(default_factory=dict)  # per group, optional

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=ZoneInfo("Asia/Shanghai"))
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ScheduledPeak:
        if self.end <= self.start:
            raise ValueError(f"peak {self.id}: end ({self.end}) must be after start ({self.start})")
        return self

    @property
    def start_ms(self) -> int:
        """Start, epoch ms."""
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """End, epoch ms."""
        return int(self.end.timestamp() * 1000)


class SurgeConfig(_Frozen):
    """Surge and incident detection (see docs/sla.md for the model)."""

    window_s: float = Field(default=60.0, gt=0, le=3600)
    long_window_s: float = Field(default=300.0, gt=0, le=86_400)
    ewma_alpha: float = Field(default=0.1, gt=0, le=1)  # weight of the newest window
    min_baseline_per_min: float = Field(default=1.0, ge=0)  # floor for quiet scopes
    min_rate_per_min: float = Field(default=10.0, ge=0)  # below: never a surge
    start_ratio: float = Field(default=2.0, gt=1)
    start_windows: int = Field(default=2, ge=1)
    # no surge.start before the baseline has seen this many windows (each of them teaches
    # it, as a running mean): a baseline of a few quiet windows is no ground for a surge
    min_baseline_windows: int = Field(default=1, ge=1)
    # ... and the rise stands this far out of the Poisson noise of window and baseline
    start_z: float = Field(default=3.0, ge=0)
    clear_ratio: float = Field(default=1.3, gt=0)
    clear_windows: int = Field(default=2, ge=1)
    incident_tag_share: float = Field(default=0.5, gt=0, le=1)  # tag's share of all arrivals
    incident_ratio: float = Field(default=4.0, gt=1)  # tag rate vs its own baseline
    incident_tags: tuple[str, ...] = ()  # restrict incident detection to these tag prefixes
    aht_s: float = Field(default=180.0, gt=0)  # average handling time per conversation
    service_level: float = Field(default=0.8, gt=0, lt=1)  # share answered within answer_target_s
    answer_target_s: float = Field(default=30.0, gt=0)
    staffing_reserve: float = Field(default=1.2, ge=1)  # handbook: >= 120 % at peaks
    default_slots: int = Field(default=3, ge=1)  # slots per agent when computing extra agents
    # live-room heat from omni.signals, a leading indicator (on by default)
    heat_per_viewer: float = Field(default=0.5, ge=0)  # per distinct viewer in a push
    heat_per_gift: float = Field(default=1.0, ge=0)
    heat_per_like: float = Field(default=0.05, ge=0)
    forecast: ForecastConfig = ForecastConfig()
    scheduled_peaks: tuple[ScheduledPeak, ...] = ()
    # per skill group, the answer target the forecast and surge.start staff against: the
    # first-response target of the group's SLA policy. Filled from ``policies`` when
    # sla.yaml loads (see ``SlaConfig``); groups not listed take
    # ``default_group_answer_target_s`` (the catch-all policy's), else ``answer_target_s``
    group_answer_target_s: dict[str, float] = Field(default_factory=dict)
    default_group_answer_target_s: float | None = Field(default=None, gt=0)

    def group_aht_s(self, group: str) -> float:
        """The configured handling time of a group (``forecast.groups``, else ``aht_s``)."""
        g = self.forecast.groups.get(group)
        return g.aht_s if g is not None and g.aht_s is not None else self.aht_s

    def group_target_s(self, group: str) -> float:
        """The answer target of a group: ``forecast.groups.<g>.answer_target_s``, else its
        SLA policy's first-response target, else ``answer_target_s``."""
        g = self.forecast.groups.get(group)
        if g is not None and g.answer_target_s is not None:
            return g.answer_target_s
        if group in self.group_answer_target_s:
            return self.group_answer_target_s[group]
        if self.default_group_answer_target_s is not None:
            return self.default_group_answer_target_s
        return self.answer_target_s

    @model_validator(mode="after")
    def _hysteresis(self) -> SurgeConfig:
        if self.clear_ratio >= self.start_ratio:
            raise ValueError(
                f"clear_ratio ({self.clear_ratio}) must be below start_ratio "
                f"({self.start_ratio}) or signals would flap"
            )
        return self


class SlaConfig(_Frozen):
    """The whole ``config/sla.yaml``."""

    version: str = "1"
    warning_ratio: float = Field(default=0.8, gt=0, lt=1)
    calendars: dict[str, CalendarConfig] = Field(
        default_factory=lambda: {"always": CalendarConfig(always_open=True)}
    )
    escalation: dict[str, tuple[EscalationStep, ...]] = Field(default_factory=dict)
    policies: tuple[PolicyConfig, ...] = Field(min_length=1)
    surge: SurgeConfig = SurgeConfig()

    @model_validator(mode="after")
    def _references(self) -> SlaConfig:
        seen: set[str] = set()
        for i, policy in enumerate(self.policies):
            if policy.id in seen:
                raise ValueError(f"policies[{i}]: duplicate policy id {policy.id!r}")
            seen.add(policy.id)
            if policy.calendar not in self.calendars:
                raise ValueError(
                    f"policies[{i}] ({policy.id}): unknown calendar {policy.calendar!r}; "
                    f"define it under 'calendars' (have {sorted(self.calendars)})"
                )
            if policy.escalation is not None and policy.escalation not in self.escalation:
                raise ValueError(
                    f"policies[{i}] ({policy.id}): unknown escalation ladder "
                    f"{policy.escalation!r}; define it under 'escalation' "
                    f"(have {sorted(self.escalation)})"
                )
        if self.policies[-1].match != Match():
            raise ValueError(
                f"the last policy ({self.policies[-1].id}) must be a catch-all with an empty "
                "'match', so that every decision gets an SLA"
            )
        return self

    @model_validator(mode="after")
    def _group_targets(self) -> SlaConfig:
        """The surge forecast staffs each group against its SLA policy's first-response
        target: a group named by a policy that matches on groups alone takes that
        policy's, any other the catch-all's. A target configured under
        ``surge.forecast.groups`` (or ``surge.group_answer_target_s``) must be the
        first-response target of a policy that can apply to the group."""
        derived: dict[str, float] = {}
        for policy in self.policies:
            m = policy.match
            if policy.first_response is None or m.channels or m.bands or m.tags:
                continue
            for g in m.groups:
                derived.setdefault(g, policy.first_response.target_s)
        surge = self.surge
        explicit = {g: f.answer_target_s for g, f in surge.forecast.groups.items()
                    if f.answer_target_s is not None}
        explicit.update(surge.group_answer_target_s)
        for g, target in sorted(explicit.items()):
            allowed = sorted({p.first_response.target_s for p in self.policies
                              if p.first_response is not None
                              and (not p.match.groups or g in p.match.groups)})
            if target not in allowed:
                raise ValueError(
                    f"surge: the answer target of group {g!r} ({target:g} s) is no "
                    "first-response target of an SLA policy that applies to it "
                    f"(have {', '.join(f'{t:g}' for t in allowed)} s); the forecast must "
                    "staff against the SLA the group is held to"
                )
        catch_all = self.policies[-1].first_response
        object.__setattr__(self, "surge", surge.model_copy(update={
            "group_answer_target_s": {**derived, **surge.group_answer_target_s},
            "default_group_answer_target_s": surge.default_group_answer_target_s
            if surge.default_group_answer_target_s is not None or catch_all is None
            else catch_all.target_s,
        }))
        return self

    def policy_for(
        self, channel: str, band: str, group: str, tags: Sequence[str] = ()
    ) -> PolicyConfig:
        """The first policy whose match accepts; the catch-all guarantees one."""
        for policy in self.policies:
            if policy.match.accepts(channel, band, group, tags):
                return policy
        return self.policies[-1]

    def policy(self, policy_id: str) -> PolicyConfig | None:
        """A policy by id."""
        return next((p for p in self.policies if p.id == policy_id), None)

    def ratio(self, policy: PolicyConfig) -> float:
        """The warning ratio that applies to ``policy``."""
        return policy.warning_ratio if policy.warning_ratio is not None else self.warning_ratio


def load_sla_config(path: Path) -> SlaConfig:
    """Load and validate ``sla.yaml``; ConfigError names file:line and the key path."""
    if not path.is_file():
        raise ConfigError(f"{path}: SLA configuration not found; set OMNI_CONFIG_DIR")
    config, _ = load_model(
        path, SlaConfig, "see docs/sla.md for the schema of config/sla.yaml"
    )
    return config
