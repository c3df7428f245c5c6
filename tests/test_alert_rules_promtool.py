"""``promtool test rules`` over docker/prometheus/*_test.yml (alerts_test.yml and the
forecast's own file): every alert of alerts.yml has a case where it fires (labels and
rendered annotations) and one where it stays quiet, and all of them pass. Under
``CI=true`` a missing promtool fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parent.parent / "docker" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
UNIT_TESTS = sorted(PROMETHEUS.glob("*_test.yml"))  # alerts_test.yml, forecast_alerts_...


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    fires: set[str] = set()
    quiet: set[str] = set()
    assert PROMETHEUS / "alerts_test.yml" in UNIT_TESTS
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["alerts.yml"], path
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert sorted(alerts - fires) == [], "alerts never shown firing in docker/prometheus/*_test.yml"
    assert sorted(alerts - quiet) == [], "alerts never shown quiet in docker/prometheus/*_test.yml"
    assert sorted((fires | quiet) - alerts) == [], "cases for alerts that do not exist"


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run([promtool(), "test", "rules", *map(str, UNIT_TESTS)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
