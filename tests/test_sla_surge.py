"""Erlang C, surge hysteresis, incidents, and the shared Redis windows."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from redis.asyncio import Redis

from omniroute.router.keys import Keys
from omniroute.router.settings import Settings
from omniroute.sla.config import SlaConfig, SurgeConfig
from omniroute.sla.surge import (
    ScopeState,
    Staffing,
    SurgeDetector,
    SurgeWindows,
    erlang_b,
    erlang_c,
    service_level,
    slots_for_service_level,
)

CFG = SurgeConfig(window_s=60, start_ratio=2.0, start_windows=2, clear_ratio=1.3,
                  clear_windows=2, min_rate_per_min=10, min_baseline_per_min=1,
                  ewma_alpha=0.5, aht_s=180, answer_target_s=20, service_level=0.8,
                  staffing_reserve=1.2)


def closed_form_c(n: int, load: float) -> Fraction:
    """Erlang C from its textbook factorial formula, in exact rationals."""
    a = Fraction(load)
    top = a**n / math.factorial(n) * Fraction(n) / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


def test_erlang_known_values() -> None:
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_b(3, 2.0) == pytest.approx(4 / 19)
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)  # A=2 erlangs, N=3
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(5, 5.0) == 1.0  # overloaded
    assert erlang_c(5, 0.0) == 0.0
    # the classic planning example: 100 calls per 30 min, AHT 180 s -> A = 10 erlangs;
    # 14 agents wait-probability 17.4 %, 88.8 % answered in 20 s; 13 agents fall short
    assert erlang_c(14, 10.0) == pytest.approx(0.1741, abs=1e-4)
    assert service_level(14, 10.0, 180, 20) == pytest.approx(0.8884, abs=1e-3)
    assert service_level(13, 10.0, 180, 20) == pytest.approx(0.7956, abs=1e-3)
    assert slots_for_service_level(100 / 1800, 180, 20, 0.8) == 14
    for n, load in ((11, 10.0), (30, 25.5), (7, 1.5)):
        assert erlang_c(n, load) == pytest.approx(float(closed_form_c(n, load)), rel=1e-9)


def test_erlang_is_stable_for_large_systems() -> None:
    # factorial formulas overflow long before this; the recurrence does not
    b = erlang_b(5000, 4900.0)
    assert 0 < b < 1
    assert math.isfinite(erlang_c(5000, 4900.0))
    assert slots_for_service_level(4900 / 180, 180, 20, 0.8) > 4900


def run(detector: SurgeDetector, rates: list[float], scope: str = "group:general",
        staffed: Staffing | None = None) -> tuple[list[str], ScopeState]:
    states: dict[str, ScopeState] = {}
    types: list[str] = []
    staffing = {scope: staffed} if staffed else {}
    for r in rates:
        states, signals = detector.evaluate({scope: r, "all": r}, states, staffing)
        types += [f"{s['type']}@{len(types)}" for s in signals if s["scope"] == scope]
    return [t.split("@")[0] for t in types], states[scope]


def test_surge_needs_consecutive_windows_and_clears_with_hysteresis() -> None:
    detector = SurgeDetector(CFG)
    # baseline 20/min; one spike is not a surge
    types, st = run(detector, [20, 20, 20, 60, 20, 20])
    assert types == []
    assert st.baseline == pytest.approx(20, rel=0.01)
    # two windows over 2x -> start; 1.5x is between the thresholds: still on;
    # two windows under 1.3x -> clear
    types, st = run(detector, [20, 20, 50, 60, 30, 30, 25, 24])
    assert types == ["surge.start", "surge.clear"]
    assert not st.active
    # the surge did not leak into the baseline
    assert st.baseline == pytest.approx(20, rel=0.2)
    types, _ = run(detector, [20, 20, 50, 60, 30, 20, 30, 30])
    assert types == ["surge.start"]  # 30/min is 1.5x: not below the clear ratio
    types, _ = run(detector, [2, 2, 8, 9, 9])
    assert types == []  # 4x a tiny baseline, but below min_rate_per_min


def test_surge_start_waits_for_a_baseline_of_min_baseline_windows() -> None:
    # payment-outage, seed 13: a quiet tag (6/min) whose first window had 2 arrivals; the
    # EWMA from that window stayed near 2.5 and a busy quarter hour (10, 12 /min) was a
    # surge.start two minutes before the outage (119/min at window 10)
    rates = [2.0, 5, 1, 11, 5, 3, 10, 12, 10, 3, 119, 130]

    def starts(cfg: SurgeConfig, series: list[float]) -> list[int]:
        detector, states, out = SurgeDetector(cfg), {}, []
        for w, r in enumerate(series):
            states, signals = detector.evaluate({"group:payment": r}, states, {})
            out += [w for s in signals if s["type"] == "surge.start"]
        return out

    shipped = {"ewma_alpha": 0.1, "min_baseline_per_min": 2}
    assert starts(SurgeConfig(**shipped, min_baseline_windows=10), rates) == [11]
    # the gate: a rise in the third window is a surge over a baseline of two windows;
    # with min_baseline_windows 5 those windows are still the baseline's warm-up (each
    # teaches it), and only a rise after the warm-up is a surge
    early = [2.0, 2, 30, 30, 30, 30, 30]
    assert starts(SurgeConfig(**shipped, min_baseline_windows=1), early) == [3]
    assert starts(SurgeConfig(**shipped, min_baseline_windows=5), early) == []
    later = [2.0, 2, 2, 2, 2, 30, 30]
    assert starts(SurgeConfig(**shipped, min_baseline_windows=5), later) == [6]


def test_surge_start_carries_erlang_staffing() -> None:
    detector = SurgeDetector(CFG)
    states: dict[str, ScopeState] = {}
    signals: list[dict[str, object]] = []
    for rate in (1, 1, 200, 200):
        states, out = detector.evaluate(
            {"group:general": rate}, states, {"group:general": Staffing(agents=4, slots=12)}
        )
        signals += out
    start = next(s for s in signals if s["type"] == "surge.start")
    assert start["offered_load_erlangs"] == pytest.approx(200 / 60 * 180)
    needed = slots_for_service_level(200 / 60, 180, 20, 0.8)
    assert start["needed_slots"] == needed
    assert start["required_slots"] == math.ceil(needed * 1.2)
    assert start["extra_agents"] == math.ceil((math.ceil(needed * 1.2) - 12) / 3)


def test_surge_start_staffs_a_group_as_the_forecast_does() -> None:
    # a group's surge.start uses the group's handling time and its SLA policy's first
    # response target, as the forecast does; other scopes the surge defaults
    cfg = SlaConfig.model_validate({
        "policies": [
            {"id": "live", "match": {"channels": ["livestream"]}, "first_response": 30},
            {"id": "chat", "first_response": 180},
        ],
        "surge": {"aht_s": 180, "answer_target_s": 20, "min_baseline_per_min": 1,
                  "forecast": {"groups": {"livestream": {"aht_s": 60,
                                                         "answer_target_s": 30}}}},
    })
    detector = SurgeDetector(cfg.surge)
    states: dict[str, ScopeState] = {}
    starts: dict[str, dict[str, object]] = {}
    staffed = Staffing(agents=4, slots=12)
    scopes = ("group:livestream", "group:payment", "all")
    for rate in (1, 1, 1, 200, 200):
        states, out = detector.evaluate(dict.fromkeys(scopes, rate), states,
                                        dict.fromkeys(scopes, staffed))
        starts.update({str(s["scope"]): s for s in out if s["type"] == "surge.start"})
    for scope, aht, target in (("group:livestream", 60, 30), ("group:payment", 180, 180),
                               ("all", 180, 20)):
        start = starts[scope]
        assert (start["aht_s"], start["answer_target_s"]) == (aht, target), scope
        assert start["needed_slots"] == slots_for_service_level(200 / 60, aht, target, 0.8)


def test_mass_complaint_burst_raises_an_incident() -> None:
    detector = SurgeDetector(CFG)
    states: dict[str, ScopeState] = {}
    kinds: list[str] = []
    windows = [
        {"all": 40, "tag:payment": 4}, {"all": 40, "tag:payment": 4},
        {"all": 90, "tag:payment": 60},  # payments fail: one tag is most of the traffic
        {"all": 95, "tag:payment": 62},
        {"all": 40, "tag:payment": 4}, {"all": 40, "tag:payment": 4},
    ]
    for counts in windows:
        states, out = detector.evaluate(counts, states, {})
        kinds += [f"{s['type']}:{s['scope']}" for s in out]
    assert kinds.count("incident:tag:payment") == 1
    assert "incident.clear:tag:payment" in kinds
    assert kinds.index("incident:tag:payment") < kinds.index("incident.clear:tag:payment")


def test_live_room_heat_signals() -> None:
    # decoding omni.signals records: tests/test_topic_records.py
    detector = SurgeDetector(CFG)
    states: dict[str, ScopeState] = {}
    out: list[dict[str, object]] = []
    for heat in (20, 20, 80, 90):
        states, signals = detector.evaluate({"heat:room:r1": heat}, states, {})
        out += signals
    assert [s["type"] for s in out] == ["surge.start"]
    assert "needed_slots" not in out[0]  # heat is an early warning, not a workload


@pytest.mark.integration
async def test_windows_are_shared_and_closed_once(aredis: Redis, settings: Settings,
                                                  redis_url: str) -> None:
    keys = Keys(settings.redis_prefix)
    other = Redis.from_url(redis_url)
    try:
        a, b = SurgeWindows(aredis, keys, CFG), SurgeWindows(other, keys, CFG)
        t = 1_795_572_000_000
        await a.record(t + 1000, {"all": 3, "channel:app": 3})
        await b.record(t + 2000, {"all": 2, "channel:app": 2})
        first = await a.close(a.index(t), t + 61_000, {})
        second = await b.close(b.index(t), t + 61_000, {})
        assert first == []  # the first window only learns the baseline
        assert second is None  # the other worker already evaluated it
        states = await b.states()
        assert states["all"].baseline == pytest.approx(5.0)
        assert states["channel:app"].windows == 1
    finally:
        await other.aclose()
