"""The surge forecast: predict the first SLA breach from short buckets, before it happens.

Pure and clock-driven: the caller hands in the counts of the last short buckets
(``bucket_s``, default 5 s) and each group's live load, and gets back the new state,
the signals to produce and one :class:`GroupForecast` per group. The SLA worker
keeps the buckets and the state in Redis (:mod:`sla.forecast_store`), the rehearsal
keeps them in memory (:class:`BucketRing`); both call :meth:`SurgeForecaster.evaluate`.

Bucket scopes (one float per bucket):

* ``a:all``, ``a:group:<g>``, ``a:channel:<c>``, ``a:tag:<t>``, ``a:gc:<g>|<c>``,
  ``a:room:<id>``: arrivals (each message counted once, replays are not counted
  again; the room is the live room a question was asked in);
* ``s:group:<g>``: service completions (``resolve`` and ``transfer`` agent events);
* ``heat:room:<id>`` and ``heat:all``: live-room heat, viewers x ``heat_per_viewer``
  + gifts x ``heat_per_gift`` + likes x ``heat_per_like``.

Per group the forecast estimates the arrival rate (mean of ``short_s``) and its
trend (least squares over ``trend_s``), projects it over ``horizon_s`` and takes the
highest of three drivers at every step: the trend, the heat (learned arrivals per
heat unit x current heat, ``heat_lead_s`` ahead) and a scheduled peak (baseline x
multiplier while it runs). With N logged-in slots and handling time AHT (learned
from completions while the group is saturated, else configured):

* steady load: Erlang C gives the wait and the share P of arrivals that will wait
  longer than the answer target T; when P >= ``breach_share`` at a step h of the
  projection, the first breach is expected at h + T + 1 / (rate x P);
* ramps and overload: a backlog projection (fluid FIFO queue, served at N / AHT,
  starting from the queue and its oldest wait) gives the instant the head of the
  queue has waited T.

The earlier of the two is ``predicted_breach_in_s``. When it is within
``warning_horizon_s`` a ``surge.warning`` goes out with the extra agents needed
for the projected peak (Erlang C at ``service_level``, x ``staffing_reserve``) and
the evidence; an updated warning follows when the advice grows by
``re_advise_ratio``. Scheduled peaks produce a warning ``advice_lead_s`` before they
start when the logged-in staff would not hold the target. A tag that is at least
``incident_tag_share`` of the arrivals of the last ``incident_s`` and
``incident_ratio`` x its own baseline raises ``incident`` at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from .config import ScheduledPeak, SurgeConfig
from .surge import poisson_z, service_level, slots_for_service_level

__all__ = [
    "BucketRing",
    "ForecastState",
    "GroupForecast",
    "GroupLoad",
    "SurgeForecaster",
    "arrival_scopes",
    "heat_of",
    "merge_window_signals",
]

#: the configured handling time weighs as much as this many observed completions (a
#: shrinkage prior: a few minutes of a desk's completions are too noisy to replace it)
AHT_PRIOR_COMPLETIONS: Final = 300
_ROOMS_SHOWN: Final = 5  # live rooms named in a group's forecast and its evidence


def arrival_scopes(
    group: str, channel: str, tags: Sequence[str], room: str | None = None
) -> list[str]:
    """The bucket scopes one arrival adds to (the leaf tag and its top level, and the
    live room it was asked in)."""
    out = ["a:all", f"a:group:{group}", f"a:channel:{channel}", f"a:gc:{group}|{channel}"]
    if room:
        out.append(f"a:room:{room}")
    for tag in dict.fromkeys([*tags, *(t.split(".", 1)[0] for t in tags)]):
        out.append(f"a:tag:{tag}")
    return out


def heat_of(config: SurgeConfig, viewers: float, gifts: float, likes: float) -> float:
    """Live-room heat of one push (or one second of pushes): the one formula of the
    rehearsal and the worker."""
    return (viewers * config.heat_per_viewer + gifts * config.heat_per_gift
            + likes * config.heat_per_like)


def merge_window_signals(signals: Sequence[dict[str, Any]], active: Collection[str],
                         suppressed: set[str]) -> list[dict[str, Any]]:
    """The window detector's signals that go out beside the forecast's: its
    ``incident`` for a tag whose forecast incident is on is a duplicate and is dropped
    (the tag is remembered in ``suppressed``), and so is the ``incident.clear`` that
    ends a dropped one (the forecast clears its own)."""
    out: list[dict[str, Any]] = []
    for s in signals:
        tag = s.get("tag")
        if s["type"] == "incident" and tag in active:
            suppressed.add(str(tag))
            continue
        if s["type"] == "incident.clear" and tag in suppressed:
            suppressed.discard(str(tag))
            continue
        out.append(s)
    return out


@dataclass(frozen=True, slots=True)
class GroupLoad:
    """What the group has now: logged-in agents and slots, its queue, and the slots in
    use (``busy``; None where unknown: the handling time then learns only while the
    queue waits, when every slot is busy)."""

    agents: int
    slots: int
    depth: int = 0
    oldest_wait_s: float = 0.0
    busy: int | None = None


@dataclass(frozen=True, slots=True)
class GroupForecast:
    """The forecast of one group at one instant (exported as metrics, kept in timelines)."""

    group: str
    rate_per_s: float  # arrivals now
    trend_per_s2: float
    projected_peak_per_s: float  # highest projected rate up to advice_horizon_s
    service_per_s: float  # completions now (agent events)
    aht_s: float
    slots: int
    depth: int
    oldest_wait_s: float
    predicted_wait_s: float  # of an arrival now (inf: the queue never drains)
    breach_in_s: float | None  # None: no breach within horizon_s
    cause: str  # load | backlog | none
    drivers: tuple[str, ...]  # trend, heat, scheduled
    needed_slots: int
    required_slots: int
    extra_agents: int
    # the live rooms feeding the group (it takes questions of the heat channel), busiest
    # first: (room, questions per minute now, heat per minute now)
    rooms: tuple[tuple[str, float, float], ...] = ()


@dataclass(slots=True)
class ForecastState:
    """What the forecast remembers between evaluations (JSON, one Redis string)."""

    last_bucket: int | None = None
    buckets_seen: int = 0  # no trend and no warning before a full trend window
    baselines: dict[str, float] = field(default_factory=dict)  # scope -> per s (EWMA)
    aht: dict[str, float] = field(default_factory=dict)  # group -> learned AHT
    # group -> [busy slots EWMA, completions per s EWMA, samples, completions seen,
    # first completion ms] (Little's law: AHT = busy / completions, a ratio of means)
    aht_obs: dict[str, list[float]] = field(default_factory=dict)
    heat_k: float | None = None  # arrivals of heat_channel per heat unit (learned)
    warned: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> advice
    incidents: dict[str, float] = field(default_factory=dict)  # tag -> calm since ms
    peaks: list[str] = field(default_factory=list)  # "<peak>|<group>" advised
    peak_rates: dict[str, float] = field(default_factory=dict)  # "<peak>|<group>" -> per s

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForecastState:
        """From ``to_dict``'s output (unknown keys ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class BucketRing:
    """In-memory buckets for the rehearsal and tests (the worker's are in Redis)."""

    def __init__(self, bucket_s: float, keep: int) -> None:
        self.bucket_ms = int(bucket_s * 1000)
        self.keep = keep
        self.buckets: dict[int, dict[str, float]] = {}

    def index(self, at_ms: int) -> int:
        """The bucket ``at_ms`` falls in."""
        return at_ms // self.bucket_ms

    def add(self, at_ms: int, scopes: Mapping[str, float]) -> None:
        """Add to the bucket of ``at_ms``."""
        b = self.buckets.setdefault(self.index(at_ms), {})
        for scope, n in scopes.items():
            b[scope] = b.get(scope, 0.0) + n

    def window(self, last: int, n: int) -> list[dict[str, float]]:
        """Buckets ``last - n + 1`` .. ``last`` (oldest first); drops older ones."""
        for old in [i for i in self.buckets if i <= last - self.keep]:
            del self.buckets[old]
        return [self.buckets.get(i, {}) for i in range(last - n + 1, last + 1)]


class SurgeForecaster:
    """Short-bucket forecast of waits and breaches per skill group (pure)."""

    def __init__(self, config: SurgeConfig) -> None:
        self.config = config
        self.fc = config.forecast
        self.bucket_s = self.fc.bucket_s
        self.bucket_ms = int(self.bucket_s * 1000)
        self.n_short = max(1, round(self.fc.short_s / self.bucket_s))
        self.n_trend = max(2, round(self.fc.trend_s / self.bucket_s))
        self.n_incident = max(1, round(self.fc.incident_s / self.bucket_s))
        self._rate_cache: dict[tuple[int, float, float], float] = {}
        # no warning before the baselines have settled (about 1 / ewma_alpha buckets)
        self.warmup = max(self.n_trend, math.ceil(1 / self.fc.ewma_alpha))

    @property
    def buckets_needed(self) -> int:
        """How many buckets ``evaluate`` reads."""
        return max(self.n_trend, self.n_incident, self.n_short)

    def aht_of(self, group: str, state: ForecastState) -> float:
        """Learned handling time, else the group's configured one, else ``aht_s``."""
        return state.aht.get(group, self.config.group_aht_s(group))

    def target_of(self, group: str) -> float:
        """The answer target the group is forecast against (its SLA policy's first
        response, see :meth:`~sla.config.SurgeConfig.group_target_s`)."""
        return self.config.group_target_s(group)

    # --- the evaluation ---------------------------------------------------------------
    def evaluate(
        self,
        now_ms: int,
        last_bucket: int,
        buckets: Sequence[Mapping[str, float]],
        loads: Mapping[str, GroupLoad],
        state: ForecastState,
    ) -> tuple[ForecastState, list[dict[str, Any]], dict[str, GroupForecast]]:
        """Evaluate after bucket ``last_bucket`` closed; ``buckets`` end with it.

        Returns the new state, the signals (``surge.warning``, ``incident``) and the
        forecast of every group that has arrivals, staff or a queue.
        """
        st = ForecastState.from_dict(state.to_dict())
        new_bucket = st.last_bucket is None or last_bucket > st.last_bucket
        rates = self._series(buckets, state.buckets_seen)
        signals: list[dict[str, Any]] = []
        groups = sorted({*loads, *(s.split(":", 2)[2] for s in rates if s.startswith("a:group:"))})
        out: dict[str, GroupForecast] = {}
        end_ms = (last_bucket + 1) * self.bucket_ms
        rooms = self._rooms(rates)
        heat_channel = str(self.fc.heat_channel)
        for g in groups:
            load = loads.get(g, GroupLoad(0, 0))
            f = self._forecast(g, now_ms, rates, load, st)
            if rooms and sum(rates.get(f"a:gc:{g}|{heat_channel}", ())) > 0:
                f = replace(f, rooms=rooms)
            out[g] = f
            signals += self._warn(g, f, load, now_ms, end_ms, st)
        signals += self._scheduled(now_ms, end_ms, rates, loads, st)
        signals += self._incidents(now_ms, end_ms, buckets, st)
        if new_bucket:
            self._learn(now_ms, rates, loads, st)
            st.last_bucket = last_bucket
            st.buckets_seen += 1
        return st, signals, out

    def _series(self, buckets: Sequence[Mapping[str, float]],
                seen: int) -> dict[str, list[float]]:
        """Per scope, per-second rates of the trend window (oldest first); right after
        a start only the buckets seen since (older ones are not known to be quiet)."""
        window = list(buckets)[-min(self.n_trend, seen + 1):]
        scopes = {s for b in window for s in b}
        return {s: [b.get(s, 0.0) / self.bucket_s for b in window] for s in scopes}

    def _rooms(self, rates: Mapping[str, list[float]]) -> tuple[tuple[str, float, float], ...]:
        """Per live room, the questions and the heat per minute now (short buckets),
        busiest first; at most ``_ROOMS_SHOWN`` rooms."""
        ids = {s.split(":", 2)[2] for s in rates if s.startswith(("a:room:", "heat:room:"))}
        rooms = [(r, round(self._now(rates.get(f"a:room:{r}")) * 60, 3),
                  round(self._now(rates.get(f"heat:room:{r}")) * 60, 3)) for r in ids]
        rooms = [x for x in rooms if x[1] > 0 or x[2] > 0]
        rooms.sort(key=lambda x: (-x[1], -x[2], x[0]))
        return tuple(rooms[:_ROOMS_SHOWN])

    def _now(self, series: Sequence[float] | None) -> float:
        return sum(series[-self.n_short:]) / self.n_short if series else 0.0

    def _level(self, series: Sequence[float] | None, base: float | None,
               seen: int = 0) -> tuple[float, float, float]:
        """(rate now, trend, seconds of data behind the rate), per s and per s².

        A rate that has not moved out of the Poisson noise of its baseline is the
        baseline (a busy minute is not a change of load: Erlang C already counts with
        the randomness); otherwise the mean of ``short_s`` after a step, the
        least-squares line at the newest bucket on a trend, else the mean of the trend
        window.

        A step is judged by :func:`poisson_z` of the arrivals of ``short_s`` against
        the baseline's, over the span of data the baseline stands for (the buckets
        seen, at most the EWMA's effective span): a baseline learned from two minutes
        of a quiet group is uncertain, and a lone burst over it is not a new level."""
        if not series:
            return 0.0, 0.0, self.bucket_s
        z = self.fc.step_z
        slope = self._slope(series)
        n = len(series)
        mean = sum(series) / n
        ref = base if base is not None else mean
        floor = 1 / self.bucket_s
        short = self._now(series)
        t_short = self.n_short * self.bucket_s
        alpha = self.fc.ewma_alpha
        t_base = self.bucket_s * max(1.0, min(float(seen), (2 - alpha) / alpha))
        ref_floor = max(ref, self.config.min_baseline_per_min / 60)
        if abs(poisson_z(short * t_short, t_short, ref_floor * t_base, t_base)) > z:
            return short, 0.0, t_short  # a step: a new level, not a trend
        if slope:
            return max(0.0, mean + slope * self.bucket_s * (n - 1) / 2), slope, n * self.bucket_s
        if base is not None and abs(mean - base) <= z * math.sqrt(
                max(base, floor) / (n * self.bucket_s)):
            return base, 0.0, t_base
        return mean, 0.0, n * self.bucket_s

    def _slope(self, series: Sequence[float] | None) -> float:
        """Least-squares slope (per s²), or 0 unless it stands out of the noise: at least
        ``trend_t`` standard errors, with Poisson noise as the floor of the error."""
        if not series or len(series) < 3:
            return 0.0
        n = len(series)
        mx = (n - 1) / 2
        my = sum(series) / n
        sxx = sum((i - mx) ** 2 for i in range(n))
        slope = sum((i - mx) * (y - my) for i, y in enumerate(series)) / sxx
        resid = sum((y - my - slope * (i - mx)) ** 2 for i, y in enumerate(series)) / (n - 2)
        poisson = max(my, 1 / self.bucket_s) / self.bucket_s  # variance of a rate per bucket
        se = math.sqrt(max(resid, poisson) / sxx)
        if abs(slope) < self.fc.trend_t * se:
            return 0.0
        return slope / self.bucket_s

    def _heat_rate(self, g: str, rates: Mapping[str, list[float]], st: ForecastState) -> float:
        """The group's arrival rate the current heat implies (0 when heat says nothing)."""
        k = self.fc.heat_arrivals_per_unit if self.fc.heat_arrivals_per_unit is not None \
            else st.heat_k
        heat = self._now(rates.get("heat:all"))
        if not k or heat <= 0:
            return 0.0
        ch = str(self.fc.heat_channel)
        from_channel = sum(rates.get(f"a:gc:{g}|{ch}", ()))
        channel_total = sum(rates.get(f"a:channel:{ch}", ()))
        if channel_total <= 0 or from_channel <= 0:
            return 0.0
        # the group's share of the heat channel, plus what it gets from other channels
        share = from_channel / channel_total
        other = max(0.0, sum(rates.get(f"a:group:{g}", ())) - from_channel) / len(
            rates.get(f"a:group:{g}", (0.0,)))
        return share * k * heat + other

    def _scheduled_rate(self, g: str, at_ms: int, st: ForecastState) -> float:
        for peak in self.config.scheduled_peaks:
            if peak.start_ms <= at_ms < peak.end_ms and (not peak.groups or g in peak.groups):
                return self._peak_rate(peak, g, st)
        return 0.0

    def _peak_rate(self, peak: ScheduledPeak, g: str, st: ForecastState) -> float:
        """Configured, or the rate advised for (frozen), or baseline x multiplier."""
        if g in peak.expected_rate_per_min:
            return peak.expected_rate_per_min[g] / 60
        frozen = st.peak_rates.get(f"{peak.id}|{g}")
        if frozen is not None:
            return frozen
        return st.baselines.get(f"a:group:{g}", 0.0) * peak.multiplier

    def _forecast(
        self, g: str, now_ms: int, rates: Mapping[str, list[float]], load: GroupLoad,
        st: ForecastState,
    ) -> GroupForecast:
        fc = self.fc
        series = rates.get(f"a:group:{g}")
        lam, slope, span = self._level(series, st.baselines.get(f"a:group:{g}"),
                                       st.buckets_seen)
        # the breach is judged at the rate's lower confidence bound: an estimate from a
        # few minutes of a quiet group is a few tens of per cent off, which turns a desk
        # at 70 % occupancy into one at 95 % (the staffing advice takes the estimate)
        floor = self.config.min_baseline_per_min / 60
        lam_lo = max(0.0, lam - fc.confidence_z * math.sqrt(max(lam, floor) / span))
        aht = self.aht_of(g, st)
        target = self.target_of(g)
        heat_rate = self._heat_rate(g, rates, st)
        cap = max(lam, st.baselines.get(f"a:group:{g}", 0.0)) * fc.max_growth
        drivers: set[str] = set()

        def rate_at(h: float, level: float = lam) -> float:
            r = max(0.0, level + slope * min(h, fc.trend_horizon_s))
            r = min(r, cap) if slope > 0 else r
            if r > level * 1.05:
                drivers.add("trend")
            if h >= fc.heat_lead_s and heat_rate > r:
                r = heat_rate
                drivers.add("heat")
            sched = self._scheduled_rate(g, now_ms + int(h * 1000), st)
            if sched > r:
                r = sched
                drivers.add("scheduled")
            return r

        n = load.slots
        mu = n / aht if aht > 0 else 0.0
        dt = self.bucket_s
        steps = int(fc.horizon_s / dt)
        path = [rate_at(i * dt) for i in range(steps + 1)]
        low = [rate_at(i * dt, lam_lo) for i in range(steps + 1)]
        # steady load: Erlang C at each step of the projection (the first step whose
        # rate is at or over the highest rate the slots hold within breach_share)
        erlang_breach: float | None = None
        r_max = self._max_rate(n, aht, target)
        for i, r in enumerate(low):
            if r > 0 and r >= r_max:
                p = 1.0 - service_level(n, r * aht, aht, target) if n > 0 else 1.0
                erlang_breach = i * dt + target + 1 / (r * max(p, fc.breach_share))
                break
        # ramps and overload: a fluid FIFO backlog from the queue as it is
        backlog_breach = self._backlog(low, mu, load, target)
        if load.depth > 0 and load.oldest_wait_s >= target:
            backlog_breach = 0.0
        candidates = [b for b in (erlang_breach, backlog_breach) if b is not None]
        breach = min(candidates) if candidates else None
        if breach is not None and breach > fc.horizon_s:
            breach = None
        cause = "none" if breach is None else (
            "backlog" if breach == backlog_breach else "load")
        # the wait of an arrival now
        a_now = lam * aht
        if n > 0 and a_now < n:
            c = 1.0 - service_level(n, a_now, aht, 0.0) if a_now > 0 else 0.0
            wait = c * aht / (n - a_now)
        else:
            wait = math.inf if lam > 0 or load.depth > 0 else 0.0
        if load.depth > 0:
            wait = max(wait, load.depth / mu) if mu > 0 else math.inf
        # staffing for the projected peak (with the reserve)
        advice_steps = min(len(path), int(fc.advice_horizon_s / dt) + 1)
        peak = max(path[:advice_steps]) if path else lam
        needed = slots_for_service_level(peak, aht, target, self.config.service_level)
        if fc.drain_s is not None and load.depth > 0:
            needed += math.ceil(load.depth * aht / fc.drain_s)
        required = math.ceil(needed * self.config.staffing_reserve)
        per_agent = load.slots / load.agents if load.agents else self.config.default_slots
        extra = max(0, math.ceil((required - load.slots) / per_agent))
        service = self._now(rates.get(f"s:group:{g}"))
        return GroupForecast(
            group=g, rate_per_s=lam, trend_per_s2=slope, projected_peak_per_s=peak,
            service_per_s=service, aht_s=aht, slots=n, depth=load.depth,
            oldest_wait_s=load.oldest_wait_s, predicted_wait_s=wait, breach_in_s=breach,
            cause=cause, drivers=tuple(sorted(drivers)), needed_slots=needed,
            required_slots=required, extra_agents=extra,
        )

    def _max_rate(self, slots: int, aht: float, target: float) -> float:
        """The highest arrival rate at which fewer than ``breach_share`` of arrivals
        wait longer than ``target`` (bisection; service level falls with the load)."""
        if slots <= 0 or aht <= 0:
            return 0.0
        key = (slots, round(aht, 1), target)
        cached = self._rate_cache.get(key)
        if cached is not None:
            return cached
        lo, hi = 0.0, float(slots)
        for _ in range(30):
            mid = (lo + hi) / 2
            if 1.0 - service_level(slots, mid, aht, target) < self.fc.breach_share:
                lo = mid
            else:
                hi = mid
        if len(self._rate_cache) > 10_000:
            self._rate_cache.clear()
        self._rate_cache[key] = lo / aht
        return lo / aht

    def _backlog(
        self, path: Sequence[float], mu: float, load: GroupLoad, target: float
    ) -> float | None:
        """Seconds until the head of a fluid FIFO queue has waited ``target``."""
        dt = self.bucket_s
        queue: deque[list[float]] = deque()
        if load.depth > 0:
            parts = 4
            for k in range(parts):
                queue.append([-load.oldest_wait_s * (parts - k) / parts, load.depth / parts])
        for i, r in enumerate(path):
            t = i * dt
            if queue and t - queue[0][0] >= target:
                return max(0.0, queue[0][0] + target)
            if r > 0:
                queue.append([t, r * dt])
            capacity = mu * dt
            while queue and capacity > 0:
                take = min(capacity, queue[0][1])
                queue[0][1] -= take
                capacity -= take
                if queue[0][1] <= 1e-9:
                    queue.popleft()
        return None

    # --- signals --------------------------------------------------------------------
    def _base(self, kind: str, scope: str, rate_s: float, base_s: float | None,
              end_ms: int, now_ms: int, window_s: float) -> dict[str, Any]:
        ref = max(base_s or 0.0, self.config.min_baseline_per_min / 60)
        return {
            "type": kind, "scope": scope, "kind": scope.split(":", 1)[0],
            "rate_per_min": round(rate_s * 60, 3),
            "baseline_per_min": None if base_s is None else round(base_s * 60, 3),
            "ratio": round(rate_s / ref, 3) if ref > 0 else 0.0,
            "window_s": window_s, "window_end_ms": end_ms, "at_ms": now_ms,
        }

    def _staffing(self, f: GroupForecast, load: GroupLoad) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "model": "erlang-c", "offered_load_erlangs": round(f.projected_peak_per_s * f.aht_s, 3),
            "needed_slots": f.needed_slots, "required_slots": f.required_slots,
            "staffing_reserve": c.staffing_reserve, "aht_s": round(f.aht_s, 3),
            "service_level": c.service_level, "answer_target_s": self.target_of(f.group),
        }
        if load.agents:
            out.update(staffed_agents=load.agents, staffed_slots=load.slots,
                       extra_agents=f.extra_agents)
        else:
            out["agents_needed"] = math.ceil(f.required_slots / c.default_slots)
        return out

    def _evidence(self, f: GroupForecast) -> dict[str, Any]:
        return {
            "rate_per_min": round(f.rate_per_s * 60, 3),
            "trend_per_min2": round(f.trend_per_s2 * 3600, 3),
            "projected_peak_per_min": round(f.projected_peak_per_s * 60, 3),
            "service_per_min": round(f.service_per_s * 60, 3),
            "slots": f.slots, "queue_depth": f.depth,
            "oldest_wait_s": round(f.oldest_wait_s, 3),
            "predicted_wait_s": None if math.isinf(f.predicted_wait_s)
            else round(f.predicted_wait_s, 3),
            "model": f.cause, "drivers": list(f.drivers),
            **({"rooms": [{"room": r, "questions_per_min": q, "heat_per_min": h}
                          for r, q, h in f.rooms]} if f.rooms else {}),
        }

    def _advice(self, extra: int, load: GroupLoad, now_ms: int) -> dict[str, float]:
        """What a warning advised: the extra agents and the staffing they make up
        (``target``: the agents logged in then + the extra; with none logged in, the
        extra is the agents needed)."""
        return {"advised": float(extra), "target": float(load.agents + extra),
                "at_ms": float(now_ms), "calm_ms": 0}

    def _warn(self, g: str, f: GroupForecast, load: GroupLoad, now_ms: int, end_ms: int,
              st: ForecastState) -> list[dict[str, Any]]:
        fc = self.fc
        w = st.warned.get(g)
        warm = st.buckets_seen >= self.warmup
        soon = (warm and f.breach_in_s is not None and f.breach_in_s <= fc.warning_horizon_s
                and (f.rate_per_s * 60 >= fc.min_rate_per_min or f.depth > 0))
        if not soon:
            if w is not None:
                w["calm_ms"] = w.get("calm_ms") or now_ms
                if now_ms - w["calm_ms"] >= fc.clear_s * 1000:
                    del st.warned[g]
            return []
        if w is not None:
            w["calm_ms"] = 0
            # judged on the staffing the advice asked for (agents then + extra): once the
            # advised agents log in, today's extra is over a larger staff and would never
            # look grown, however short the desk still is
            target = w.get("target", load.agents + w["advised"])
            grown = load.agents + f.extra_agents >= target + max(
                1.0, w["advised"] * fc.re_advise_ratio)
            if not grown or now_ms - w["at_ms"] < fc.re_advise_s * 1000:
                return []
        st.warned[g] = self._advice(f.extra_agents, load, now_ms)
        scope = f"group:{g}"
        sig = self._base("surge.warning", scope, f.rate_per_s,
                         st.baselines.get(f"a:group:{g}"), end_ms, now_ms, fc.trend_s)
        assert f.breach_in_s is not None
        sig.update(self._staffing(f, load))
        sig.update(predicted_breach_in_s=round(f.breach_in_s, 3),
                   predicted_wait_s=None if math.isinf(f.predicted_wait_s)
                   else round(f.predicted_wait_s, 3),
                   cause=f.cause, evidence=self._evidence(f))
        return [sig]

    def _scheduled(self, now_ms: int, end_ms: int, rates: Mapping[str, list[float]],
                   loads: Mapping[str, GroupLoad], st: ForecastState) -> list[dict[str, Any]]:
        c = self.config
        out: list[dict[str, Any]] = []
        for peak in c.scheduled_peaks:
            if not peak.start_ms - self.fc.advice_lead_s * 1000 <= now_ms < peak.end_ms:
                continue
            groups = peak.groups or tuple(
                s.split(":", 2)[2] for s in st.baselines if s.startswith("a:group:"))
            for g in groups:
                key = f"{peak.id}|{g}"
                rate = self._peak_rate(peak, g, st)
                if key in st.peaks or rate <= 0:
                    continue
                load = loads.get(g, GroupLoad(0, 0))
                aht, target = self.aht_of(g, st), self.target_of(g)
                needed = slots_for_service_level(rate, aht, target, c.service_level)
                required = math.ceil(needed * c.staffing_reserve)
                per_agent = load.slots / load.agents if load.agents else c.default_slots
                extra = max(0, math.ceil((required - load.slots) / per_agent))
                st.peaks.append(key)
                st.peak_rates[key] = rate
                if extra == 0:
                    continue  # the logged-in staff holds the peak
                starts_in = max(0.0, (peak.start_ms - now_ms) / 1000)
                fit = 1.0 - service_level(load.slots, rate * aht, aht, target) \
                    if load.slots else 1.0
                breach_in = starts_in + target + (1 / (rate * fit) if fit > 0 else 0.0)
                sig = self._base("surge.warning", f"group:{g}", self._now(
                    rates.get(f"a:group:{g}")), st.baselines.get(f"a:group:{g}"),
                    end_ms, now_ms, self.fc.trend_s)
                sig.update({
                    "model": "erlang-c", "offered_load_erlangs": round(rate * aht, 3),
                    "needed_slots": needed, "required_slots": required,
                    "staffing_reserve": c.staffing_reserve, "aht_s": round(aht, 3),
                    "service_level": c.service_level, "answer_target_s": target,
                })
                if load.agents:
                    sig.update(staffed_agents=load.agents, staffed_slots=load.slots,
                               extra_agents=extra)
                else:
                    sig["agents_needed"] = math.ceil(required / c.default_slots)
                sig.update(predicted_breach_in_s=round(breach_in, 3), predicted_wait_s=None,
                           cause="scheduled", evidence={
                               "peak": peak.id, "peak_kind": peak.kind,
                               "starts_in_s": round(starts_in, 3),
                               "ends_at_ms": peak.end_ms, "multiplier": peak.multiplier,
                               "expected_rate_per_min": round(rate * 60, 3),
                               "slots": load.slots,
                           })
                st.warned[g] = self._advice(extra, load, now_ms)
                out.append(sig)
        return out

    def _incidents(self, now_ms: int, end_ms: int, buckets: Sequence[Mapping[str, float]],
                   st: ForecastState) -> list[dict[str, Any]]:
        c = self.config
        window = list(buckets)[-self.n_incident:]
        span = len(window) * self.bucket_s or self.bucket_s
        total = sum(b.get("a:all", 0.0) for b in window)
        counts: dict[str, float] = {}
        for b in window:
            for s, v in b.items():
                if s.startswith("a:tag:"):
                    counts[s] = counts.get(s, 0.0) + v
        all_base = st.baselines.get("a:all")
        all_ratio = (total / span) / max(all_base or 0.0, c.min_baseline_per_min / 60)
        out: list[dict[str, Any]] = []
        for scope in sorted({*counts, *(f"a:tag:{t}" for t in st.incidents)}):
            tag = scope[len("a:tag:"):]
            if c.incident_tags and not any(
                    tag == t or tag.startswith(t + ".") for t in c.incident_tags):
                continue
            rate = counts.get(scope, 0.0) / span
            base = st.baselines.get(scope)
            ref = max(base or 0.0, c.min_baseline_per_min / 60)
            ratio = rate / ref
            share = counts.get(scope, 0.0) / total if total else 0.0
            # what the tag's usual share of this window's arrivals would be
            expected = total * min(1.0, (base or 0.0) / max(all_base or 0.0, 1e-9))
            if tag in st.incidents:
                # still flooding: over clear_ratio and out of the noise of a few arrivals
                # (one busy 30 s of a quiet tag must not hold the incident open for ever)
                alpha = self.fc.ewma_alpha
                t_base = self.bucket_s * max(1.0, min(float(st.buckets_seen),
                                                      (2 - alpha) / alpha))
                if ratio >= c.clear_ratio and poisson_z(
                        counts.get(scope, 0.0), span, ref * t_base, t_base) >= 2.0:
                    st.incidents[tag] = 0.0
                elif not st.incidents[tag]:
                    st.incidents[tag] = float(now_ms)
                elif now_ms - st.incidents[tag] >= self.fc.clear_s * 1000:
                    del st.incidents[tag]
                    sig = self._base("incident.clear", f"tag:{tag}", rate, base, end_ms,
                                     now_ms, span)
                    sig.update(tag=tag, cause="incident")
                    out.append(sig)
                continue
            # one tag floods: most of the arrivals, far over its own baseline, and
            # growing much faster than the rest (a busy hour raises every tag alike)
            if (base is not None and share >= c.incident_tag_share
                    and ratio >= c.incident_ratio and rate * 60 >= c.min_rate_per_min
                    and ratio >= 2 * all_ratio and st.buckets_seen >= self.warmup
                    and counts.get(scope, 0.0) >= expected + self.fc.step_z * math.sqrt(
                        max(expected, 1.0))):
                st.incidents[tag] = 0.0
                sig = self._base("incident", f"tag:{tag}", rate, base, end_ms, now_ms, span)
                sig.update(tag=tag, share=round(share, 3), cause="incident", evidence={
                    "arrivals": counts.get(scope, 0.0), "all_arrivals": total,
                    "window_s": span, "source": "forecast",
                })
                out.append(sig)
        return out

    # --- learning -----------------------------------------------------------------
    def _learn(self, now_ms: int, rates: Mapping[str, list[float]],
               loads: Mapping[str, GroupLoad], st: ForecastState) -> None:
        """Baselines, heat weight and handling times learn from the newest bucket."""
        # a running mean until 1 / alpha buckets are seen, an EWMA after
        a = max(self.fc.ewma_alpha, 1 / (st.buckets_seen + 1))
        quiet = not st.warned and not st.incidents
        in_peak = {g for p in self.config.scheduled_peaks if p.start_ms <= now_ms < p.end_ms
                   for g in (p.groups or [k[8:] for k in st.baselines if k.startswith("a:group:")])}
        for scope, series in rates.items():
            if not (scope.startswith(("a:group:", "a:tag:", "a:channel:")) or scope == "a:all"
                    or scope == "heat:all"):
                continue
            if scope.startswith("a:group:") and scope[8:] in in_peak:
                continue  # a scheduled peak is not the new normal
            latest = series[-1]
            base = st.baselines.get(scope)
            mean = sum(series) / len(series)
            if base is None:
                st.baselines[scope] = mean
            elif quiet or mean <= base * self.config.start_ratio:
                # during a warning only ordinary minutes teach (judged on the whole
                # window: judging single buckets would bias a sparse scope low)
                st.baselines[scope] = base + a * (latest - base)
        # heat: arrivals of the heat channel per heat unit, learned in ordinary times
        heat = st.baselines.get("heat:all", 0.0)
        ch = st.baselines.get(f"a:channel:{self.fc.heat_channel}", 0.0)
        heat_now = self._now(rates.get("heat:all"))
        if heat > 0 and ch > 0 and quiet and heat_now <= heat * self.config.start_ratio:
            st.heat_k = ch / heat
        for g, load in loads.items():
            # Little's law: handling time = slots in use / completions per second, both
            # averaged over many buckets (the ratio of one short window's figures is
            # biased upwards, and a queue that waits picks the windows of few completions)
            busy = load.busy if load.busy is not None else (
                load.slots if load.depth > 0 and load.slots > 0 else None)
            if busy is None:
                continue
            done = (rates.get(f"s:group:{g}") or [0.0])[-1]
            if g not in st.aht_obs:
                if done <= 0:
                    continue
                st.aht_obs[g] = [float(busy), done, 0.0, 0.0, float(now_ms)]
            obs = st.aht_obs[g]
            ref = self.config.group_aht_s(g)
            if now_ms - obs[4] < 2 * ref * 1000:
                continue  # Little's law holds in steady state, not while a desk fills up
            w = max(self.fc.aht_alpha, 1 / (obs[2] + 1))
            obs[0] += w * (busy - obs[0])
            obs[1] += w * (done - obs[1])
            obs[2] += 1
            obs[3] += done * self.bucket_s
            if obs[1] > 0:
                # completions behind the averages: those seen, at most the EWMA's span
                a_span = (2 - self.fc.aht_alpha) / self.fc.aht_alpha * self.bucket_s
                n = min(obs[3], obs[1] * a_span)
                observed = min(max(obs[0] / obs[1], ref / 4), ref * 4)
                st.aht[g] = (AHT_PRIOR_COMPLETIONS * ref + n * observed) / (
                    AHT_PRIOR_COMPLETIONS + n)
