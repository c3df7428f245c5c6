"""docker/prometheus/alerts.yml: valid rules over metric names that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from omniroute.router import metrics as router_metrics
from omniroute.sla import metrics as sla_metrics

RULES = Path(__file__).resolve().parent.parent / "docker" / "prometheus" / "alerts.yml"


def _metric_names() -> set[str]:
    names = set()
    for module in (router_metrics, sla_metrics):
        for value in vars(module).values():
            if isinstance(value, str) and value.startswith("omni_"):
                names.add(value)
    return names


def test_rules_parse_and_use_known_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "OmniSlaBreachRateHigh", "OmniSlaConversationsAtRisk", "OmniSurgeActive",
        "OmniQueueOldestAgeHigh", "OmniDeadLetters", "OmniProcessDown",
    }
    known = _metric_names()
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "warn", "ticket"}
        for name in re.findall(r"\bomni_[a-z_]+", rule["expr"]):
            assert name in known, f"{rule['alert']}: unknown metric {name}"


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'); YAML checked above")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


FORECAST_TESTS = RULES.parent / "forecast_alerts_test.yml"


def test_forecast_alert_fires_and_stays_quiet() -> None:
    """promtool unit tests: OmniSlaBreachForecast fires on a breach forecast within
    5 minutes held for a minute, not on +Inf, a far one or a 30 s blip, and once per
    group however many SLA workers export it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    doc = yaml.safe_load(FORECAST_TESTS.read_text(encoding="utf-8"))
    alerts = [t for case in doc["tests"] for t in case["alert_rule_test"]]
    assert any(t["exp_alerts"] for t in alerts)
    assert any(not t["exp_alerts"] for t in alerts)
    out = subprocess.run([promtool, "test", "rules", str(FORECAST_TESTS)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
