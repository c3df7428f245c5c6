"""Surge and incident detection over sliding windows, with Erlang C staffing.

Arrivals are counted per scope (``all``, ``channel:<c>``, ``group:<g>``, ``tag:<t>``,
``heat:room:<id>`` for live-room gift/like heat) in fixed windows of ``window_s``
kept in Redis, so every worker of the consumer group adds to the same counts. When
a window has closed, one worker (a ``SET NX`` lock per window) evaluates it:

* baseline: an EWMA of the per-minute rate, learning only while no surge is on
  (a surge must not become the new normal);
* ``surge.start`` when the baseline has seen ``min_baseline_windows`` windows and the
  rate is >= ``start_ratio`` x baseline (and at least
  ``min_rate_per_min``) for ``start_windows`` consecutive windows, and the rise of
  arrivals stands ``start_z`` out of the noise (the likelihood-ratio z of the window
  against the windows the baseline stands for: a baseline learned from one quiet
  window is no ground for a surge, and such windows teach the baseline); ``surge.clear``
  when it is < ``clear_ratio`` x baseline for ``clear_windows`` windows;
* ``incident`` when one tag is >= ``incident_tag_share`` of all arrivals,
  >= ``incident_ratio`` x its own baseline and grows at least twice as fast as all
  arrivals (a mass-complaint burst, not a busy hour), cleared like a surge;
* each start carries the staffing needed to hold the SLA at the current rate
  (Erlang C, below), times ``staffing_reserve``, and the extra agents over the
  logged-in capacity where it is known (group scopes and ``all``).

Erlang C (M/M/N): with arrival rate lambda and average handling time AHT, the
offered load is A = lambda x AHT erlangs; a slot is a server (an agent with 3
slots is 3 servers, the usual approximation for chat concurrency). The
probability of waiting is C(N, A) = N B / (N - A (1 - B)) with B = Erlang B
computed by the stable recurrence B(0) = 1, B(k) = A B / (k + A B); the service
level is 1 - C exp(-(N - A) T / AHT) for answer target T.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from ..router.keys import Keys
from ._redis import as_text
from .config import SurgeConfig

__all__ = [
    "ScopeState",
    "Staffing",
    "SurgeDetector",
    "SurgeWindows",
    "erlang_b",
    "erlang_c",
    "poisson_z",
    "service_level",
    "slots_for_service_level",
]

MAX_SERVERS: Final = 100_000


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of N servers offered A erlangs (iterative, stable)."""
    if servers < 0 or load < 0:
        raise ValueError("servers and load must be non-negative")
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits (1.0 when the load is not below N)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    b = erlang_b(servers, load)
    return servers * b / (servers - load * (1 - b))


def service_level(servers: int, load: float, aht_s: float, target_s: float) -> float:
    """Share of arrivals answered within ``target_s``."""
    if load <= 0:
        return 1.0
    if servers <= load:
        return 0.0
    return 1 - erlang_c(servers, load) * math.exp(-(servers - load) * target_s / aht_s)


def slots_for_service_level(
    rate_per_s: float, aht_s: float, target_s: float, level: float
) -> int:
    """The fewest servers (slots) that answer ``level`` of arrivals within ``target_s``."""
    load = rate_per_s * aht_s
    if load <= 0:
        return 0
    n = max(1, math.floor(load) + 1)
    while service_level(n, load, aht_s, target_s) < level:
        n += 1
        if n > MAX_SERVERS:
            return MAX_SERVERS
    return n


def poisson_z(k1: float, t1: float, k2: float, t2: float) -> float:
    """Signed root of the likelihood-ratio statistic of "two Poisson rates are equal"
    for ``k1`` events in ``t1`` against ``k2`` in ``t2`` (positive when the first rate
    is higher). Unlike the normal approximation it stays calibrated at the handful of
    arrivals a quiet group has in a few seconds, and the second count's own noise (a
    baseline learned from little data) is part of it."""
    n = k1 + k2
    if n <= 0 or t1 <= 0 or t2 <= 0:
        return 0.0
    e1 = n * t1 / (t1 + t2)
    e2 = n - e1
    g = 2 * ((k1 * math.log(k1 / e1) if k1 > 0 else 0.0)
             + (k2 * math.log(k2 / e2) if k2 > 0 else 0.0))
    return math.copysign(math.sqrt(max(g, 0.0)), k1 - e1)


@dataclass(slots=True)
class ScopeState:
    """Detector state of one scope (stored as JSON in ``Keys.surge_state()``)."""

    baseline: float | None = None  # per minute
    above: int = 0  # consecutive windows over the start threshold
    below: int = 0  # consecutive windows under the clear threshold (while active)
    active: bool = False
    incident: bool = False
    incident_below: int = 0
    windows: int = 0
    rate_per_min: float = 0.0  # arrivals of the last closed window


@dataclass(frozen=True, slots=True)
class Staffing:
    """Logged-in agents and slots for a scope (None where unknown)."""

    agents: int
    slots: int


class SurgeDetector:
    """The pure part: one closed window's counts in, signals out."""

    def __init__(self, config: SurgeConfig) -> None:
        self.config = config

    def staffing_needed(self, rate_per_min: float, staffed: Staffing | None,
                        group: str | None = None) -> dict[str, Any]:
        """Erlang C staffing at ``rate_per_min`` (with the reserve) vs ``staffed``; for a
        skill group with its configured handling time and its SLA policy's answer
        target, as the forecast staffs it (other scopes: ``aht_s``, ``answer_target_s``)."""
        c = self.config
        rate_s = rate_per_min / 60
        aht = c.group_aht_s(group) if group is not None else c.aht_s
        target = c.group_target_s(group) if group is not None else c.answer_target_s
        needed = slots_for_service_level(rate_s, aht, target, c.service_level)
        required = math.ceil(needed * c.staffing_reserve)
        out: dict[str, Any] = {
            "model": "erlang-c",
            "offered_load_erlangs": round(rate_s * aht, 3),
            "needed_slots": needed,
            "required_slots": required,
            "staffing_reserve": c.staffing_reserve,
            "aht_s": aht,
            "service_level": c.service_level,
            "answer_target_s": target,
        }
        if staffed is not None:
            per_agent = staffed.slots / staffed.agents if staffed.agents else c.default_slots
            out["staffed_agents"] = staffed.agents
            out["staffed_slots"] = staffed.slots
            out["extra_agents"] = max(0, math.ceil((required - staffed.slots) / per_agent))
        else:
            out["agents_needed"] = math.ceil(required / c.default_slots)
        return out

    def evaluate(
        self,
        counts: Mapping[str, float],
        states: Mapping[str, ScopeState],
        staffing: Mapping[str, Staffing],
    ) -> tuple[dict[str, ScopeState], list[dict[str, Any]]]:
        """Apply one closed window to every scope; return new states and signals."""
        c = self.config
        per_min = 60 / c.window_s
        total = counts.get("all", 0.0)
        all_base = states["all"].baseline if "all" in states else None
        all_ratio = total * per_min / max(all_base or 0.0, c.min_baseline_per_min)
        new_states: dict[str, ScopeState] = {}
        signals: list[dict[str, Any]] = []
        for scope in sorted({*counts, *states}):
            st = ScopeState(**asdict(states[scope])) if scope in states else ScopeState()
            count = counts.get(scope, 0.0)
            rate = count * per_min
            base = st.baseline
            info: dict[str, Any] = {
                "scope": scope, "kind": scope.split(":", 1)[0], "rate_per_min": round(rate, 3),
                "baseline_per_min": None if base is None else round(base, 3),
            }
            warming = st.windows < c.min_baseline_windows
            if base is not None:
                ref = max(base, c.min_baseline_per_min)
                ratio = rate / ref
                info["ratio"] = round(ratio, 3)
                hot = (rate >= c.min_rate_per_min and ratio >= c.start_ratio
                       and self._significant(scope, count, ref, st.windows))
                st.above = st.above + 1 if hot else 0
                if st.active:
                    st.below = st.below + 1 if ratio < c.clear_ratio else 0
                    if st.below >= c.clear_windows:
                        st.active, st.below, st.above = False, 0, 0
                        signals.append({"type": "surge.clear", **info})
                elif st.above >= c.start_windows and not warming:
                    st.active, st.below = True, 0
                    start: dict[str, Any] = {"type": "surge.start", **info}
                    if not scope.startswith("heat:"):  # heat is not a workload
                        group = scope[6:] if scope.startswith("group:") else None
                        start.update(self.staffing_needed(rate, staffing.get(scope), group))
                    signals.append(start)
                if scope.startswith("tag:"):
                    signals += self._incident(st, info, count, total, ratio, all_ratio)
            if warming or (not st.active and st.above == 0):
                # learn only from ordinary windows (a surge must not become the baseline),
                # and from every window while the baseline is still warming up; a running
                # mean until 1 / ewma_alpha windows are seen, an EWMA after
                a = max(c.ewma_alpha, 1 / (st.windows + 1))
                st.baseline = rate if base is None else base + a * (rate - base)
            st.windows += 1
            st.rate_per_min = round(rate, 3)
            new_states[scope] = st
        return new_states, signals

    def _significant(self, scope: str, count: float, ref_per_min: float,
                     windows: int) -> bool:
        """Whether ``count`` arrivals in a window stand ``start_z`` over the baseline,
        counting the baseline's own noise (it stands for the windows seen, at most the
        EWMA's effective span). Heat is not a count of arrivals: no test."""
        if scope.startswith("heat:"):
            return True
        a = self.config.ewma_alpha
        span = max(1.0, min(float(windows), (2 - a) / a))
        per_window = ref_per_min * self.config.window_s / 60
        return poisson_z(count, 1.0, per_window * span, span) >= self.config.start_z

    def _incident(
        self, st: ScopeState, info: dict[str, Any], count: float, total: float, ratio: float,
        all_ratio: float,
    ) -> list[dict[str, Any]]:
        c = self.config
        tag = info["scope"].split(":", 1)[1]
        if c.incident_tags and not any(
            tag == t or tag.startswith(t + ".") for t in c.incident_tags
        ):
            return []
        share = count / total if total else 0.0
        # one tag floods: it also grows much faster than the rest (a busy hour raises
        # every tag alike and is a surge, not an incident)
        burst = (share >= c.incident_tag_share and ratio >= c.incident_ratio
                 and info["rate_per_min"] >= c.min_rate_per_min and ratio >= 2 * all_ratio)
        if burst and not st.incident:
            st.incident, st.incident_below = True, 0
            return [{"type": "incident", **info, "tag": tag, "share": round(share, 3)}]
        if st.incident:
            st.incident_below = st.incident_below + 1 if ratio < c.clear_ratio else 0
            if st.incident_below >= c.clear_windows:
                st.incident, st.incident_below = False, 0
                return [{"type": "incident.clear", **info, "tag": tag}]
        return []


class SurgeWindows:
    """Window counts and detector state in Redis, shared by all SLA workers."""

    def __init__(self, redis: Redis, keys: Keys, config: SurgeConfig) -> None:
        self.redis = redis
        self.keys = keys
        self.config = config
        self.window_ms = int(config.window_s * 1000)
        self.detector = SurgeDetector(config)

    def index(self, now_ms: int) -> int:
        """The window ``now_ms`` falls in."""
        return now_ms // self.window_ms

    async def record(self, at_ms: int, scopes: Mapping[str, float]) -> None:
        """Add arrivals (or heat) to the window of ``at_ms``."""
        if not scopes:
            return
        key = self.keys.surge_window(self.index(at_ms))
        pipe = self.redis.pipeline(transaction=False)
        for scope, n in scopes.items():
            pipe.hincrbyfloat(key, scope, n)
        pipe.pexpire(key, int(max(self.config.long_window_s, self.config.window_s) * 3000))
        await pipe.execute()

    async def close(
        self, index: int, now_ms: int, staffing: Mapping[str, Staffing]
    ) -> list[dict[str, Any]] | None:
        """Evaluate window ``index`` once across all workers; None if another worker did."""
        won = await self.redis.set(
            self.keys.surge_closed(index), str(now_ms), nx=True,
            px=int(max(self.config.long_window_s, self.config.window_s) * 3000),
        )
        if not won:
            return None
        raw_counts = await self.redis.hgetall(self.keys.surge_window(index))
        counts = {as_text(k): float(v) for k, v in raw_counts.items()}
        raw_states = await self.redis.hgetall(self.keys.surge_state())
        states = {as_text(k): ScopeState(**orjson.loads(v)) for k, v in raw_states.items()}
        new_states, signals = self.detector.evaluate(counts, states, staffing)
        if new_states:
            await self.redis.hset(
                self.keys.surge_state(),
                mapping={k: orjson.dumps(asdict(v)) for k, v in new_states.items()},
            )
        end_ms = (index + 1) * self.window_ms
        for s in signals:
            s.update(window_s=self.config.window_s, window_end_ms=end_ms, at_ms=now_ms)
        return signals

    async def states(self) -> dict[str, ScopeState]:
        """Every scope's detector state."""
        raw = await self.redis.hgetall(self.keys.surge_state())
        return {as_text(k): ScopeState(**orjson.loads(v)) for k, v in raw.items()}
