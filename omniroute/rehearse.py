"""``omniroute rehearse SCENARIO.yaml``: a peak rehearsed on a virtual clock.

An hour of peak runs in seconds, deterministic for a given seed. The rehearsal runs
the real code of the live path, without Kafka or Redis:

* the decision pipeline (:class:`~router.pipeline.Pipeline`) decides every generated
  message, with the shipped (or given) routing configuration;
* the SLA timers: :class:`~sla.state.SlaEngine` applies decisions and agent events,
  its deadlines fire on the virtual clock exactly as the worker's deadline loop
  fires them (a stale deadline is skipped);
* the surge forecast (:class:`~sla.forecast.SurgeForecaster`) on 5 s buckets and the
  window detector (:class:`~sla.surge.SurgeDetector`) on its windows;
* a simulated agent pool: agents with slots, a handling-time distribution, a first
  reply after ``first_reply_s``, and extra agents that log in ``advice_delay_s``
  after a ``surge.warning`` advises them (the run "with advice"; the run "without"
  ignores the advice). Both runs see the same arrivals.

Outputs: a JSON-lines timeline, a PNG chart (matplotlib, ``pip install
'omniroute[rehearse]'``) and one summary JSON line.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .router.events import AgentEvent, SurgeSignal
from .router.models import Channel, Customer, Decision, Envelope, message_id
from .router.pipeline import Pipeline
from .router.settings import default_config_dir
from .skills.config import load_config
from .skills.exceptions import ConfigError
from .skills.yamlconfig import format_validation_error, load_model
from .sla.config import SlaConfig, load_sla_config
from .sla.forecast import (
    BucketRing,
    ForecastState,
    GroupLoad,
    SurgeForecaster,
    arrival_scopes,
    heat_of,
    merge_window_signals,
)
from .sla.state import ConvState, SlaEngine, parse_member
from .sla.surge import ScopeState, SurgeDetector, slots_for_service_level

__all__ = ["Scenario", "load_scenario", "rehearse", "scenario_path", "shipped_scenarios"]

SCENARIOS = Path(__file__).resolve().parent / "sla" / "scenarios"
TICK_MS = 250
SPAN = 10_000_000_000_000  # priority band span of a queue score (as in the Redis queues)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Point(_Model):
    """One point of a piecewise-linear multiplier profile."""

    at_s: float = Field(ge=0)
    x: float = Field(ge=0)


class Stream(_Model):
    """Customer messages of one kind: texts the pipeline routes, at a profiled rate."""

    name: str
    channel: Channel = Channel.APP
    account: str = "rehearsal"
    texts: tuple[str, ...] = Field(min_length=1)
    rate_per_min: float = Field(gt=0)
    profile: tuple[Point, ...] = (Point(at_s=0, x=1),)


class HeatStream(_Model):
    """Live-room pushes (omni.signals): viewers, gifts and likes per second, profiled."""

    room: str
    viewers_per_s: float = Field(default=0, ge=0)
    gifts_per_s: float = Field(default=0, ge=0)
    likes_per_s: float = Field(default=0, ge=0)
    profile: tuple[Point, ...] = (Point(at_s=0, x=1),)


class PoolGroup(_Model):
    """Agents logged in at the start."""

    agents: int = Field(ge=0)
    slots: int = Field(default=3, ge=1)


class Pool(_Model):
    """The simulated agent pool."""

    groups: dict[str, PoolGroup]
    aht_s: float | dict[str, float] = Field(default=180.0)  # mean handling time
    handling: Literal["exponential", "lognormal", "fixed"] = "exponential"
    cv: float = Field(default=0.8, gt=0)  # lognormal coefficient of variation
    first_reply_s: float = Field(default=3.0, ge=0)
    advice_delay_s: float = Field(default=120.0, ge=0)  # before advised agents log in
    standby_agents: int = Field(default=500, ge=0)  # at most this many extra agents

    def aht_of(self, group: str) -> float:
        """Mean handling time of a group's conversations."""
        if isinstance(self.aht_s, dict):
            return self.aht_s.get(group, 180.0)
        return self.aht_s


class Targets(_Model):
    """What the scenario's test checks (also printed in the summary)."""

    lead_time_s: float | None = None  # first signal at least this long before a breach
    signal_within_s: float | None = None  # first signal within this of ``mark_s``
    incident_within_s: float | None = None  # ``incident`` within this of ``mark_s``
    advised_breach_rate: float | None = None  # with advice, at most this share


class Scenario(_Model):
    """A rehearsal scenario (sla/scenarios/*.yaml)."""

    name: str
    description: str = ""
    seed: int = 1
    start: datetime
    duration_s: float = Field(gt=0, le=6 * 3600)
    sample_s: float = Field(default=5.0, gt=0)
    mark_s: float = 0.0  # when the event starts (burst, outage), for the targets
    sla: dict[str, Any] = Field(default_factory=dict)  # deep-merged over sla.yaml
    streams: tuple[Stream, ...] = Field(min_length=1)
    heat: tuple[HeatStream, ...] = ()
    pool: Pool
    targets: Targets = Targets()

    @property
    def start_ms(self) -> int:
        """Start, epoch ms (naive times are Asia/Shanghai)."""
        start = self.start
        if start.tzinfo is None:
            start = start.replace(tzinfo=ZoneInfo("Asia/Shanghai"))
        return int(start.timestamp() * 1000)


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in sla/scenarios/."""
    return sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


def scenario_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a shipped scenario."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = SCENARIOS / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"{name_or_path}: no such scenario file; shipped: {', '.join(shipped_scenarios())}"
    )


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario; ConfigError names the file, line and field."""
    return load_model(path, Scenario)[0]


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _sla_config(scenario: Scenario, config_dir: Path) -> SlaConfig:
    path = config_dir / "sla.yaml"
    base = load_sla_config(path)
    if not scenario.sla:
        return base
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return SlaConfig.model_validate(_merge(raw, scenario.sla))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(
            exc, prefix=f"scenario {scenario.name}: sla.", sep="; ")) from None


@functools.lru_cache(maxsize=4)
def _pipeline(directory: Path) -> Pipeline:
    """The decision pipeline of a configuration directory (loaded once per process)."""
    return Pipeline(load_config(directory))


def _level(profile: Sequence[Point], t: float) -> float:
    """The profile's multiplier at ``t`` (linear between points; two points at one
    instant make a step)."""
    if t <= profile[0].at_s:
        return profile[0].x
    for a, b in pairwise(profile):
        if a.at_s <= t < b.at_s:
            return a.x + (b.x - a.x) * (t - a.at_s) / (b.at_s - a.at_s)
    return profile[-1].x


def _arrivals(scenario: Scenario, rng: random.Random) -> list[tuple[float, Stream]]:
    """Non-homogeneous Poisson arrivals of every stream (thinning), in time order."""
    out: list[tuple[float, Stream]] = []
    for stream in scenario.streams:
        peak = stream.rate_per_min / 60 * max(p.x for p in stream.profile)
        if peak <= 0:
            continue
        t = 0.0
        while True:
            t += rng.expovariate(peak)
            if t >= scenario.duration_s:
                break
            if rng.random() * peak <= stream.rate_per_min / 60 * _level(stream.profile, t):
                out.append((t, stream))
    out.sort(key=lambda a: a[0])
    return out


@dataclass(slots=True)
class _Agent:
    agent_id: str
    group: str
    slots: int
    active: int = 0


@dataclass(slots=True)
class _Run:
    """One run's mutable state."""

    follow: bool
    agents: dict[str, list[_Agent]] = field(default_factory=dict)
    queues: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    states: dict[str, ConvState] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    deadlines: list[tuple[int, str]] = field(default_factory=list)
    events: list[tuple[int, int, str, str, str]] = field(default_factory=list)
    waiting_since: dict[str, int] = field(default_factory=dict)
    arrival_order: dict[str, deque[tuple[int, str]]] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)
    pending_staff: list[tuple[int, str, int, int]] = field(default_factory=list)
    breaches: int = 0
    warnings: int = 0
    arrivals: int = 0
    first_breach_ms: int | None = None
    peak_queue: int = 0
    advised_agents: dict[str, int] = field(default_factory=dict)
    seq: int = 0


class Rehearsal:
    """Runs one scenario twice (with and without following the advice)."""

    def __init__(self, scenario: Scenario, config_dir: Path | None = None) -> None:
        self.scenario = scenario
        directory = config_dir or default_config_dir()
        self.sla = _sla_config(scenario, directory)
        self.pipeline = _pipeline(directory)
        self.engine = SlaEngine(self.sla)
        self.t0 = scenario.start_ms
        rng = random.Random(scenario.seed)  # noqa: S311 - a seeded simulation, not crypto
        self.decisions = self._decide(_arrivals(scenario, rng))

    def _decide(self, arrivals: Sequence[tuple[float, Stream]]) -> list[Decision]:
        """Every arrival through the real pipeline (once; both runs share them)."""
        rng = random.Random(self.scenario.seed + 1)  # noqa: S311 - seeded simulation
        out: list[Decision] = []
        for n, (t, stream) in enumerate(arrivals):
            at = self.t0 + int(t * 1000)
            text = rng.choice(stream.texts)
            env = Envelope(
                id=message_id(stream.channel, stream.account, f"r{n}"), channel=stream.channel,
                account=stream.account, channel_msg_id=f"r{n}",
                conversation_id=f"{stream.name}:{n}", customer=Customer(f"cust-{n}"),
                text=text, received_at_ms=at,
            )
            out.append(self.pipeline.decide(env, at))
        return out

    # --- one run ----------------------------------------------------------------------
    def run(self, follow: bool, sink: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Simulate; ``sink`` gets every timeline line; returns the run's figures."""
        sc = self.scenario
        rng = random.Random(sc.seed + 2)  # noqa: S311 - seeded simulation
        r = _Run(follow)
        for g, pg in sc.pool.groups.items():
            r.agents[g] = [_Agent(f"{g}-{i}", g, pg.slots) for i in range(pg.agents)]
        forecaster = SurgeForecaster(self.sla.surge)
        ring = BucketRing(forecaster.bucket_s, forecaster.buckets_needed + 2)
        fstate = ForecastState()
        detector = SurgeDetector(self.sla.surge)
        window_ms = int(self.sla.surge.window_s * 1000)
        window_counts: dict[int, dict[str, float]] = {}
        dstates: dict[str, ScopeState] = {}
        suppressed: set[str] = set()  # window incidents the forecast's made duplicates
        signals: list[dict[str, Any]] = []
        label = "advice" if follow else "no_advice"
        end_ms = self.t0 + int(sc.duration_s * 1000)
        sample_ms = int(sc.sample_s * 1000)
        next_sample = self.t0 + sample_ms
        last_bucket = ring.index(self.t0) - 1
        last_window = self.t0 // window_ms - 1
        i = 0
        sample_arrivals = 0
        sample_breaches = 0
        heat_next = self.t0
        forecasts: dict[str, Any] = {}
        now = self.t0
        while now <= end_ms:
            # arrivals
            while i < len(self.decisions) and self.decisions[i].received_at_ms <= now:
                d = self.decisions[i]
                i += 1
                r.arrivals += 1
                sample_arrivals += 1
                self._apply(r, d.conversation_id, partial(self.engine.on_decision, d=d))
                band_rank = int(str(d.priority.band)[1])
                r.seq += 1
                heapq.heappush(r.queues.setdefault(d.skill_group, []),
                               (band_rank * SPAN + d.received_at_ms, r.seq, d.conversation_id))
                r.waiting_since[d.conversation_id] = d.received_at_ms
                r.arrival_order.setdefault(d.skill_group, deque()).append(
                    (d.received_at_ms, d.conversation_id))
                scopes = {x: 1.0 for x in arrival_scopes(
                    d.skill_group, str(d.channel), [t.id for t in d.tags], d.room)}
                ring.add(d.received_at_ms, scopes)
                w = window_counts.setdefault(d.received_at_ms // window_ms, {})
                for scope in ("all", f"channel:{d.channel}", f"group:{d.skill_group}",
                              *(f"tag:{t}" for t in dict.fromkeys(
                                  [*(h.id for h in d.tags),
                                   *(h.id.split('.')[0] for h in d.tags)]))):
                    w[scope] = w.get(scope, 0.0) + 1
            # live-room heat: one push per room per second
            while heat_next <= now:
                t_s = (heat_next - self.t0) / 1000
                for h in sc.heat:
                    x = _level(h.profile, t_s)
                    heat = heat_of(self.sla.surge, h.viewers_per_s * x, h.gifts_per_s * x,
                                   h.likes_per_s * x)
                    ring.add(heat_next, {f"heat:room:{h.room}": heat, "heat:all": heat})
                heat_next += 1000
            # agent events due
            while r.events and r.events[0][0] <= now:
                at, _, kind, conv, agent_id = heapq.heappop(r.events)
                group = agent_id.rsplit("-", 1)[0]
                e = AgentEvent(type=kind, conversation_id=conv, agent_id=agent_id, at_ms=at,
                               group=group)
                self._apply(r, conv, partial(self.engine.on_agent_event, e=e))
                if kind == "resolve":
                    for a in r.agents.get(group, ()):
                        if a.agent_id == agent_id:
                            a.active -= 1
                            break
                    ring.add(at, {f"s:group:{group}": 1.0})
            # advised agents log in
            while r.pending_staff and r.pending_staff[0][0] <= now:
                _, g, target, slots = heapq.heappop(r.pending_staff)
                have = r.agents.setdefault(g, [])
                added = sum(len(v) for v in r.agents.values()) - sum(
                    pg.agents for pg in sc.pool.groups.values())
                room = max(0, sc.pool.standby_agents - added)
                for _ in range(min(room, max(0, target - len(have)))):
                    have.append(_Agent(f"{g}-{len(have)}", g, slots))
            # claims: the most urgent (band, then oldest) first
            for g, q in r.queues.items():
                for a in r.agents.get(g, ()):
                    while q and a.active < a.slots:
                        _, _, conv = heapq.heappop(q)
                        r.waiting_since.pop(conv, None)
                        a.active += 1
                        self._claim(r, rng, a, conv, now)
                    if not q:
                        break
            # deadlines
            while r.deadlines and r.deadlines[0][0] <= now:
                due, m = heapq.heappop(r.deadlines)
                kind, stage, _gen, conv = parse_member(m)
                if m in r.fired or m not in r.members.get(conv, ()):
                    continue  # stale (the timer stopped or restarted) or fired already
                r.fired.add(m)
                if stage == "breach" and kind == "first_response":
                    r.breaches += 1
                    sample_breaches += 1
                    if r.first_breach_ms is None:
                        r.first_breach_ms = due
                elif stage == "warning":
                    r.warnings += 1
            depth = {g: len(q) for g, q in r.queues.items()}
            r.peak_queue = max(r.peak_queue, sum(depth.values()))
            # the forecast, once per closed bucket
            closed = ring.index(now) - 1
            if closed > last_bucket:
                last_bucket = closed
                loads = self._loads(r, now)
                fstate, out, fc = forecaster.evaluate(
                    now, closed, ring.window(closed, forecaster.buckets_needed), loads, fstate)
                forecasts = {g: f.breach_in_s for g, f in fc.items()}
                for s in out:
                    signals.append(self._signal(r, s, now, label, sink))
            # the window detector, once per closed window
            closed_w = now // window_ms - 1
            if closed_w > last_window:
                last_window = closed_w
                staffing = {f"group:{g}": self._staffing(r, g) for g in r.agents}
                dstates, out = detector.evaluate(window_counts.pop(closed_w, {}), dstates,
                                                 staffing)
                out = merge_window_signals(out, fstate.incidents, suppressed)
                for s in out:
                    s.update(window_s=self.sla.surge.window_s,
                             window_end_ms=(closed_w + 1) * window_ms, at_ms=now)
                    signals.append(self._signal(r, s, now, label, sink))
            if now >= next_sample:
                loads = self._loads(r, now)
                oldest = max((x.oldest_wait_s for x in loads.values()), default=0.0)
                sink({
                    "run": label, "t_s": round((now - self.t0) / 1000, 3),
                    "arrivals": sample_arrivals,
                    "arrivals_per_min": round(sample_arrivals * 60 / sc.sample_s, 3),
                    "queue": sum(depth.values()), "oldest_wait_s": round(oldest, 3),
                    "breaches": sample_breaches, "breaches_total": r.breaches,
                    "agents": {g: len(v) for g, v in r.agents.items()},
                    "predicted_breach_in_s": forecasts,
                })
                sample_arrivals = sample_breaches = 0
                next_sample += sample_ms
            now += TICK_MS
        return {"run": r, "signals": signals}

    def _apply(self, r: _Run, conv: str,
               change: Callable[[ConvState | None], ConvState | None]) -> None:
        new = change(r.states.get(conv))
        if new is None:
            return
        r.states[conv] = new
        schedule = self.engine.schedule(new)
        new.members = [m for m, _ in schedule]
        r.members[conv] = set(new.members)
        for m, due in schedule:
            heapq.heappush(r.deadlines, (due, m))

    def _claim(self, r: _Run, rng: random.Random, a: _Agent, conv: str, now: int) -> None:
        pool = self.scenario.pool
        mean = pool.aht_of(a.group)
        if pool.handling == "fixed":
            handle = mean
        elif pool.handling == "lognormal":
            sigma = math.sqrt(math.log(1 + pool.cv**2))
            handle = rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)
        else:
            handle = rng.expovariate(1 / mean)
        reply = now + int(pool.first_reply_s * 1000)
        done = max(reply + 1, now + int(handle * 1000))
        for at, kind in ((now, "claim"), (reply, "reply"), (done, "resolve")):
            r.seq += 1
            heapq.heappush(r.events, (at, r.seq, kind, conv, a.agent_id))

    def _loads(self, r: _Run, now: int) -> dict[str, GroupLoad]:
        out: dict[str, GroupLoad] = {}
        for g in {*r.agents, *r.queues}:
            agents = r.agents.get(g, [])
            q = r.queues.get(g, [])
            order = r.arrival_order.get(g, deque())
            while order and order[0][1] not in r.waiting_since:
                order.popleft()  # claimed since
            oldest = order[0][0] if order and q else now
            out[g] = GroupLoad(len(agents), sum(a.slots for a in agents), len(q),
                               (now - oldest) / 1000, busy=sum(a.active for a in agents))
        return out

    @staticmethod
    def _staffing(r: _Run, g: str) -> Any:
        from .sla.surge import Staffing

        agents = r.agents.get(g, [])
        return Staffing(len(agents), sum(a.slots for a in agents))

    def _signal(self, r: _Run, s: dict[str, Any], now: int, label: str,
                sink: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        record = SurgeSignal.from_dict(s).to_dict()  # the record the worker would produce
        sink({"run": label, "t_s": round((now - self.t0) / 1000, 3), "signal": record})
        if record["type"] == "surge.warning" and record["scope"].startswith("group:"):
            g = record["scope"].split(":", 1)[1]
            have = len(r.agents.get(g, []))
            extra = record.get("extra_agents", record.get("agents_needed", 0))
            target = have + int(extra)
            r.advised_agents[g] = max(r.advised_agents.get(g, 0), target)
            if r.follow and extra:
                slots = self.scenario.pool.groups.get(g, PoolGroup(agents=0)).slots
                delay = int(self.scenario.pool.advice_delay_s * 1000)
                heapq.heappush(r.pending_staff, (now + delay, g, target, slots))
        return record

    # --- the whole rehearsal ----------------------------------------------------------
    def needed_agents(self) -> dict[str, int]:
        """Agents per group that hold the true peak rate (Erlang C + reserve), from the
        scenario's own profile (what a perfect forecast would have advised)."""
        c = self.sla.surge
        forecaster = SurgeForecaster(c)
        per_group: dict[str, list[int]] = {}
        for d in self.decisions:
            per_group.setdefault(d.skill_group, []).append(d.received_at_ms)
        out: dict[str, int] = {}
        for g, times in per_group.items():
            span = 60_000
            counts: dict[int, int] = {}
            for t in times:
                counts[t // span] = counts.get(t // span, 0) + 1
            peak = max(counts.values()) / 60
            aht = self.scenario.pool.aht_of(g)
            needed = slots_for_service_level(peak, aht, forecaster.target_of(g), c.service_level)
            slots = self.scenario.pool.groups.get(g, PoolGroup(agents=0)).slots
            out[g] = math.ceil(math.ceil(needed * c.staffing_reserve) / slots)
        return out


def rehearse(
    scenario: Scenario, out_dir: Path | None = None, *, chart: bool = True,
    config_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` with and without the advice; write the outputs; the summary."""
    reh = Rehearsal(scenario, config_dir)
    lines: list[dict[str, Any]] = []
    with_advice = reh.run(True, lines.append)
    without = reh.run(False, lines.append)
    t0 = reh.t0
    adv: _Run = with_advice["run"]
    raw: _Run = without["run"]
    sigs: list[dict[str, Any]] = without["signals"]

    def rel(ms: int | None) -> float | None:
        return None if ms is None else round((ms - t0) / 1000, 3)

    first = sigs[0] if sigs else None
    first_s = rel(first["at_ms"]) if first else None
    incident = next((s for s in sigs if s["type"] == "incident"), None)
    warning = next((s for s in sigs if s["type"] == "surge.warning"), None)
    breach_s = rel(raw.first_breach_ms)
    summary: dict[str, Any] = {
        "scenario": scenario.name, "seed": scenario.seed, "duration_s": scenario.duration_s,
        "arrivals": raw.arrivals, "mark_s": scenario.mark_s,
        "first_signal_s": first_s, "first_signal": None if first is None else
        f"{first['type']} {first['scope']}",
        "first_warning_s": rel(warning["at_ms"]) if warning else None,
        "first_incident_s": rel(incident["at_ms"]) if incident else None,
        "first_breach_s": breach_s,
        "first_breach_with_advice_s": rel(adv.first_breach_ms),
        "lead_time_s": None if first_s is None or breach_s is None
        else round(breach_s - first_s, 3),
        "signal_after_mark_s": None if first_s is None else round(first_s - scenario.mark_s, 3),
        "breaches_without_advice": raw.breaches,
        "breach_rate_without_advice": round(raw.breaches / max(1, raw.arrivals), 4),
        "breaches_with_advice": adv.breaches,
        "breach_rate_with_advice": round(adv.breaches / max(1, adv.arrivals), 4),
        "peak_queue_without_advice": raw.peak_queue, "peak_queue_with_advice": adv.peak_queue,
        "staffing_start": {g: p.agents for g, p in scenario.pool.groups.items()},
        "staffing_advised": adv.advised_agents,
        "staffing_needed": reh.needed_agents(),
        "signals": _count(s["type"] for s in sigs),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / "timeline.jsonl").open("wb") as fh:
            for line in lines:
                fh.write(orjson.dumps(line) + b"\n")
        (out_dir / "summary.json").write_bytes(orjson.dumps(summary) + b"\n")
        if chart:
            write_chart(scenario, lines, out_dir / "chart.png")
    return summary


def _count(items: Iterator[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def write_chart(scenario: Scenario, lines: Sequence[dict[str, Any]], path: Path) -> None:
    """Arrivals, queue depth, oldest wait, breaches and signals over time (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "the rehearsal chart needs matplotlib: pip install 'omniroute[rehearse]' "
            "(or pass --no-chart)"
        ) from exc
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    for run, style in (("no_advice", "--"), ("advice", "-")):
        rows = [x for x in lines if x.get("run") == run and "queue" in x]
        t = [x["t_s"] / 60 for x in rows]
        axes[0].plot(t, [x["arrivals_per_min"] for x in rows], style, label=run)
        axes[1].plot(t, [x["queue"] for x in rows], style, label=run)
        axes[2].plot(t, [x["oldest_wait_s"] for x in rows], style, label=run)
        axes[3].plot(t, [x["breaches_total"] for x in rows], style, label=run)
    colours = {"surge.warning": "tab:orange", "incident": "tab:red",
               "surge.start": "tab:purple", "surge.clear": "tab:green"}
    for x in lines:
        if x.get("run") == "no_advice" and "signal" in x:
            c = colours.get(x["signal"]["type"], "grey")
            for ax in axes:
                ax.axvline(x["t_s"] / 60, color=c, alpha=0.35, linewidth=0.8)
    for ax, title in zip(axes, ("arrivals / min", "queue depth", "oldest wait (s)",
                                "first-response breaches (cumulative)"), strict=True):
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    axes[0].set_title(f"rehearsal: {scenario.name} (signals: orange warning, red incident, "
                      "purple surge.start, green clear)", fontsize=9)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
