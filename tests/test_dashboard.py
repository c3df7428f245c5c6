"""The Grafana dashboard matches the metrics: it is generated from the metric name
constants (docker/grafana/build_dashboard.py), the committed JSON is what the
generator writes, every query names only metrics that exist, and every metric the
processes export has a panel. (That the series exist in a real Prometheus scraping
the demo: tests/test_prometheus_scrape.py.)"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from omniroute.router import metrics as router_metrics
from omniroute.sla import metrics as sla_metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "omniroute.json"
GENERATOR = ROOT / "docker" / "grafana" / "build_dashboard.py"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_NAME = re.compile(r"\b(omni_[a-z0-9_]+)")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric_names() -> dict[str, str]:
    """Every exported metric name -> its constant's module (the one place names live)."""
    out: dict[str, str] = {}
    for module in (router_metrics, sla_metrics):
        for key, value in vars(module).items():
            if key.isupper() and isinstance(value, str) and value.startswith("omni_"):
                out[value] = module.__name__
    return out


def histograms() -> set[str]:
    """Names of the histograms (their series carry _bucket/_sum/_count)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    router_metrics.RouterMetrics(registry)
    router_metrics.AdapterMetrics(registry)
    sla_metrics.SlaMetrics(registry)
    return {m.name for m in registry.collect() if m.type == "histogram"}


def family(series: str) -> str:
    """The metric family a series name belongs to."""
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in histograms():
            return series[: -len(suffix)]
    return series


def dashboard_exprs(doc: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard."""
    doc = doc or json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def series_used(exprs: list[str]) -> set[str]:
    """The omni_* series names the expressions select."""
    return {m for e in exprs for m in _NAME.findall(e)}


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == generator().render(), (
        "docker/grafana/dashboards/omniroute.json is stale: "
        "run python docker/grafana/build_dashboard.py"
    )


def test_every_query_names_a_metric_that_exists() -> None:
    known = metric_names()
    hist = histograms()
    for title, expr in dashboard_exprs():
        names = _NAME.findall(expr)
        assert names or "up{" in expr, f"{title}: no metric in {expr!r}"
        for name in names:
            base = family(name)
            assert base in known, f"panel {title!r}: unknown metric {name}"
            if base in hist:
                assert name != base, f"panel {title!r}: a histogram is queried by its series"


def test_every_exported_metric_has_a_panel() -> None:
    shown = {family(n) for n in series_used([e for _, e in dashboard_exprs()])}
    missing = sorted(set(metric_names()) - shown)
    assert missing == [], f"metrics without a panel: {missing}"


def test_layout_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps another panel"
                cells.add((x, y))
        for t in p.get("targets", []):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert doc["uid"] == "omniroute"


def test_a_renamed_metric_breaks_the_generator(monkeypatch: Any) -> None:
    """The generator reads the constants: a rename reaches the dashboard (and a stale
    committed JSON then fails the first test)."""
    monkeypatch.setattr(router_metrics, "QUEUE_DEPTH", "omni_renamed_depth")
    exprs = [e for _, e in dashboard_exprs(generator().build())]
    assert "omni_renamed_depth" in series_used(exprs)
    assert "omni_queue_depth" not in series_used(exprs)
