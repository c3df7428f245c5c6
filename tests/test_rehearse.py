"""`omniroute rehearse`: the four shipped scenarios meet the issue's targets on a
virtual clock, deterministically; the outputs are written and the CLI prints a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from omniroute.cli import app
from omniroute.rehearse import (
    Rehearsal,
    load_scenario,
    rehearse,
    scenario_path,
    shipped_scenarios,
)
from omniroute.router.events import SurgeSignal


def run(name: str, out: Path | None = None) -> dict[str, Any]:
    return rehearse(load_scenario(scenario_path(name)), out, chart=False)


def test_shipped_scenarios() -> None:
    assert shipped_scenarios() == [
        "double11-midnight", "flash-step", "livestream-ramp", "payment-outage"]


def test_livestream_ramp_signals_a_minute_before_the_first_breach(tmp_path: Path) -> None:
    s = run("livestream-ramp", tmp_path)
    print(orjson.dumps(s).decode())
    assert s["first_breach_s"] is not None  # without the advice the ramp does breach
    assert s["lead_time_s"] >= 60
    # the signal is about the ramp (led by the room's heat), not a false alarm earlier
    assert s["first_signal"] == "surge.warning group:livestream"
    assert s["mark_s"] - 120 <= s["first_signal_s"] <= s["mark_s"] + 60
    assert s["breach_rate_with_advice"] <= 0.05 < s["breach_rate_without_advice"]
    # advice close to what the true peak needs (Erlang C + 120 % reserve)
    advised, needed = s["staffing_advised"]["livestream"], s["staffing_needed"]["livestream"]
    assert 0.7 * needed <= advised <= 1.5 * needed
    lines = [orjson.loads(x) for x in (tmp_path / "timeline.jsonl").read_bytes().splitlines()]
    warnings = [x["signal"] for x in lines if "signal" in x
                and x["signal"]["type"] == "surge.warning"]
    assert warnings
    for w in warnings:  # every warning is a valid omni.surge record with its figures
        assert SurgeSignal.from_dict(w).to_dict() == w
        assert w["predicted_breach_in_s"] >= 0
        assert w["staffing_reserve"] == 1.2
        assert "extra_agents" in w
        assert w["evidence"]["slots"] >= 0
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == s


def test_flash_step_is_signalled_within_15_s() -> None:
    s = run("flash-step")
    print(orjson.dumps(s).decode())
    assert 0 <= s["signal_after_mark_s"] <= 15
    assert s["breach_rate_with_advice"] <= 0.05 < s["breach_rate_without_advice"]


def test_double11_promotion_is_advised_30_minutes_ahead(tmp_path: Path) -> None:
    s = run("double11-midnight", tmp_path)
    print(orjson.dumps(s).decode())
    assert s["lead_time_s"] >= 60
    assert s["first_breach_s"] >= s["mark_s"]  # the breaches come with the promotion
    assert s["breach_rate_with_advice"] <= 0.05 < s["breach_rate_without_advice"]
    assert set(s["staffing_advised"]) == {"livestream", "payment"}
    lines = [orjson.loads(x) for x in (tmp_path / "timeline.jsonl").read_bytes().splitlines()]
    scheduled = [x for x in lines if x["run"] == "no_advice" and "signal" in x
                 and x["signal"].get("cause") == "scheduled"]
    assert {x["signal"]["scope"] for x in scheduled} == {"group:livestream", "group:payment"}
    for x in scheduled:  # 30 min before 00:00 (the scenario starts 23:25)
        assert x["t_s"] == 300.0
        assert x["signal"]["evidence"]["starts_in_s"] == 1800.0
        assert x["signal"]["predicted_breach_in_s"] >= 1800
        assert x["signal"]["extra_agents"] > 0
    # the scheduled advice is the first signal: no warning out of a thin early baseline
    # (a 15 s burst of a quiet group over a baseline of two minutes), no surge.start of a
    # tag whose baseline is one window, no handling time learned while the desk fills up
    assert s["first_signal_s"] == 300.0
    assert s["first_signal"] in ("surge.warning group:livestream", "surge.warning group:payment")
    signals = [x for x in lines if x["run"] == "no_advice" and "signal" in x]
    assert all(x["t_s"] >= 300.0 for x in signals)
    horizon = 300.0  # warning_horizon_s: before it, only the schedule gives reason to warn
    quiet = [x["signal"] for x in signals if x["t_s"] < s["mark_s"] - horizon]
    assert quiet
    assert all(w["type"] == "surge.warning" and w["cause"] == "scheduled" for w in quiet)
    ahead = [x["signal"] for x in signals if x["t_s"] < s["mark_s"]]
    assert all(w["type"] == "surge.warning" and (
        w["cause"] == "scheduled" or "scheduled" in w["evidence"]["drivers"]) for w in ahead)


def test_payment_outage_is_flagged_as_an_incident_within_60_s() -> None:
    s = run("payment-outage")
    print(orjson.dumps(s).decode())
    assert s["first_incident_s"] is not None
    assert 0 <= s["first_incident_s"] - s["mark_s"] <= 60
    assert s["first_signal_s"] >= s["mark_s"]  # no false alarm in the normal half hour
    assert s["breach_rate_with_advice"] <= 0.05 < s["breach_rate_without_advice"]


# every scenario meets the targets (its ``targets``) on other seeds than its own
# (tested above): seed 2 of livestream-ramp once broke 43 % with the advice (no new advice
# once the advised agents had logged in), seed 13 of payment-outage raised surge.start
# two minutes before the outage. Seeds 3-5 were checked too when this was written.
SEEDS = [(name, seed) for name in (
    "livestream-ramp", "flash-step", "double11-midnight", "payment-outage") for seed in (1, 2)]


@pytest.mark.parametrize(("name", "seed"), [*SEEDS, ("payment-outage", 13)])
def test_targets_hold_on_other_seeds(name: str, seed: int) -> None:
    sc = load_scenario(scenario_path(name))
    assert seed != sc.seed
    s = rehearse(sc.model_copy(update={"seed": seed}), None, chart=False)
    print(orjson.dumps(s).decode())
    t = sc.targets
    assert s["first_breach_s"] is not None  # without the advice the peak does breach
    if t.lead_time_s is not None:  # ramps: a signal at least a minute before the breach
        assert s["lead_time_s"] >= t.lead_time_s
    if t.signal_within_s is not None:  # the step burst: signalled within 15 s
        assert 0 <= s["signal_after_mark_s"] <= t.signal_within_s
    if t.incident_within_s is not None:  # the incident: flagged within 60 s, no false alarm
        assert 0 <= s["first_incident_s"] - s["mark_s"] <= t.incident_within_s
        assert s["first_signal_s"] >= s["mark_s"]
    assert t.advised_breach_rate is not None
    assert s["breach_rate_with_advice"] <= t.advised_breach_rate < s[
        "breach_rate_without_advice"]


def test_rehearsal_is_deterministic_for_a_seed() -> None:
    sc = load_scenario(scenario_path("payment-outage"))
    assert rehearse(sc) == rehearse(sc)
    a, b = Rehearsal(sc), Rehearsal(sc.model_copy(update={"seed": sc.seed + 1}))
    assert [d.received_at_ms for d in a.decisions] != [d.received_at_ms for d in b.decisions]


def test_cli_writes_the_outputs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = CliRunner().invoke(app, ["rehearse", "payment-outage", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["scenario"] == "payment-outage"
    png = (tmp_path / "chart.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert len(png) > 10_000
    assert (tmp_path / "timeline.jsonl").stat().st_size > 0


def test_cli_names_an_unknown_scenario(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rehearse", "no-such-peak", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "livestream-ramp" in result.output
