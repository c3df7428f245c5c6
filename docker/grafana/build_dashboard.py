"""Build docker/grafana/dashboards/omniroute.json from the metric name constants.

Every panel's query is written with the names in ``router/metrics.py`` and
``sla/metrics.py`` (never a string typed here), so a renamed or removed metric breaks
this script instead of leaving a panel that shows nothing. tests/test_dashboard.py
checks that the committed JSON is what this script writes, and
tests/test_prometheus_scrape.py that every series it queries exists in a real
Prometheus scraping the demo.

    python docker/grafana/build_dashboard.py          # rewrite the JSON
    python docker/grafana/build_dashboard.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omniroute.router import metrics as r
from omniroute.sla import metrics as s

OUT = Path(__file__).resolve().parent / "dashboards" / "omniroute.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# (title, [(legend, expr)], unit) per row; a row is two panels wide
ROWS: list[tuple[str, list[tuple[str, list[tuple[str, str]], str]]]] = [
    ("Traffic 流量", [
        ("Messages in / s by channel", [
            ("{{channel}}", f"sum by (channel) (rate({r.MESSAGES_IN}[1m]))")], "reqps"),
        ("Envelopes accepted at the edge / s", [
            ("{{channel}}", f"sum by (channel) (rate({r.ADAPTER_ACCEPTED}[1m]))")], "reqps"),
        ("Decisions / s by skill group", [
            ("{{skill_group}}", f"sum by (skill_group) (rate({r.DECISIONS}[1m]))")], "reqps"),
        ("Decisions / s by band", [
            ("{{band}}", f"sum by (band) (rate({r.DECISIONS}[1m]))")], "reqps"),
        ("Ingest-to-decision latency", [
            (f"p{q}", f"histogram_quantile({q / 100:g}, sum by (le) "
                      f"(rate({r.DECISION_LATENCY}_bucket[5m])))")
            for q in (50, 99)
        ], "s"),
        ("Edge ack latency p99 by channel", [
            ("{{channel}}", "histogram_quantile(0.99, sum by (le, channel) "
                            f"(rate({r.ADAPTER_ACK_LATENCY}_bucket[5m])))")], "s"),
    ]),
    ("Queues and staffing 队列与人力", [
        ("Queue depth by group", [
            ("{{skill_group}}", f"max by (skill_group) ({r.QUEUE_DEPTH})")], "short"),
        ("Oldest waiting by group", [
            ("{{skill_group}}", f"max by (skill_group) ({r.QUEUE_OLDEST_AGE})")], "s"),
        ("Staffed slots by group", [
            ("{{skill_group}}", f"max by (skill_group) ({s.STAFFED_SLOTS})")], "short"),
        ("Overflows and relaxations / s", [
            ("overflow from {{from_group}}", f"sum by (from_group) (rate({r.OVERFLOWS}[5m]))"),
            ("relaxed {{from_group}} -> {{to_group}}",
             f"sum by (from_group, to_group) (rate({r.RELAXATIONS}[5m]))"),
        ], "reqps"),
    ]),
    ("SLA 时效", [
        ("Open conversations by group", [
            ("{{skill_group}}", f"max by (skill_group) ({s.SLA_OPEN})")], "short"),
        ("At risk and breached (open)", [
            ("at risk {{skill_group}}", f"max by (skill_group) ({s.SLA_AT_RISK})"),
            ("breached {{skill_group}}", f"max by (skill_group) ({s.SLA_BREACHED_OPEN})"),
        ], "short"),
        ("Warnings, breaches, escalations / min", [
            ("warnings {{skill_group}}", f"sum by (skill_group) (rate({s.SLA_WARNINGS}[5m])) * 60"),
            ("breaches {{skill_group}}", f"sum by (skill_group) (rate({s.SLA_BREACHES}[5m])) * 60"),
            ("escalations {{skill_group}}",
             f"sum by (skill_group) (rate({s.SLA_ESCALATIONS}[5m])) * 60"),
        ], "short"),
        ("Deadline fire lag", [("lag", f"max({s.SLA_FIRE_LAG})")], "s"),
    ]),
    ("Forecast 预测", [
        ("Predicted wait of an arrival now", [
            ("{{skill_group}}", f"max by (skill_group) ({s.FORECAST_WAIT})")], "s"),
        ("First SLA breach forecast in", [
            ("{{skill_group}}", f"min by (skill_group) ({s.FORECAST_BREACH_IN})")], "s"),
        ("Forecast arrivals per minute", [
            ("{{skill_group}}", f"max by (skill_group) ({s.FORECAST_RATE})")], "short"),
        ("Agents to add for the projected peak", [
            ("{{skill_group}}", f"max by (skill_group) ({s.FORECAST_EXTRA_AGENTS})")], "short"),
    ]),
    ("Surge and live rooms 激增与直播", [
        ("Arrival rate vs baseline (per min)", [
            ("rate {{scope}}", f"max by (scope) ({s.SURGE_RATE})"),
            ("baseline {{scope}}", f"max by (scope) ({s.SURGE_BASELINE})"),
        ], "short"),
        ("Surges on and extra agents needed", [
            ("surge {{scope}}", f"max by (scope) ({s.SURGE_ACTIVE})"),
            ("extra agents {{scope}}", f"max by (scope) ({s.SURGE_EXTRA_AGENTS})"),
        ], "short"),
        ("Surge signals / min by type", [
            ("{{type}}", f"sum by (type) (increase({s.SURGE_SIGNALS}[5m])) / 5")], "short"),
        ("Live chatter filtered and gifts/likes / s", [
            ("chatter {{rule}}", f"sum by (rule) (rate({r.ADAPTER_FILTERED}[1m]))"),
            ("{{kind}}", f"sum by (kind) (rate({r.ADAPTER_SIGNALS}[1m]))"),
        ], "reqps"),
    ]),
    ("Health 健康", [
        ("Dead letters / s by reason", [
            ("{{reason}}", f"sum by (reason) (rate({r.DEAD_LETTERS}[5m]))")], "reqps"),
        ("Edge rejects and duplicates / s", [
            ("{{channel}} {{reason}}",
             f"sum by (channel, reason) (rate({r.ADAPTER_REJECTED}[5m]))"),
            ("{{channel}} duplicate", f"sum by (channel) (rate({r.ADAPTER_DUPLICATES}[5m]))"),
            ("router replays", f"sum(rate({r.DUPLICATES}[5m]))"),
        ], "reqps"),
        ("SLA worker inputs / s", [
            ("{{topic}} {{result}}", f"sum by (topic, result) (rate({s.SLA_EVENTS}[1m]))")],
         "reqps"),
        ("Routing config and reloads", [
            ("active {{version}}", f"max by (version) ({r.CONFIG_VERSION})"),
            ("reloads {{result}}", f"sum by (result) (increase({r.CONFIG_RELOADS}[1h]))"),
        ], "short"),
        ("SLA config and reloads", [
            ("active {{version}}", f"max by (version) ({s.SLA_CONFIG_VERSION})"),
            ("reloads {{result}}", f"sum by (result) (increase({s.SLA_CONFIG_RELOADS}[1h]))"),
        ], "short"),
        ("Router consumer lag by partition", [
            ("partition {{partition}}", f"max by (partition) ({r.CONSUMER_LAG})")], "short"),
        ("Edge requests and PII masked / s", [
            ("requests {{channel}}", f"sum by (channel) (rate({r.ADAPTER_REQUESTS}[1m]))"),
            ("masked {{kind}}", f"sum by (kind) (rate({r.ADAPTER_PII_MASKED}[1m]))"),
        ], "reqps"),
        ("Processes up", [("{{job}} {{instance}}", 'up{job=~"omniroute.*"}')], "short"),
        ("Router batch size p50", [
            ("p50", f"histogram_quantile(0.5, sum by (le) (rate({r.BATCH_SIZE}_bucket[5m])))")],
         "short"),
    ]),
]


def _panel(pid: int, title: str, queries: list[tuple[str, str]], unit: str,
           x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
             "legendFormat": legend}
            for i, (legend, expr) in enumerate(queries)
        ],
    }


def build() -> dict[str, Any]:
    """The dashboard as a JSON-able dict."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, queries, unit) in enumerate(row):
            panels.append(_panel(pid, title, queries, unit, 12 * (i % 2), y + 8 * (i // 2)))
            pid += 1
        y += 8 * ((len(row) + 1) // 2)
    return {
        "title": "omniroute", "uid": "omniroute", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "tags": ["omniroute"],
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    """The file's text."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
