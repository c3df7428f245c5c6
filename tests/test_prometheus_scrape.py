"""Prometheus for real: Debian's ``prometheus`` scrapes every endpoint of a running demo
(the HTTP app and the worker's web server, both of ``omniroute run``) every second,
with docker/prometheus/alerts.yml loaded. Checked:

* every metric the dashboard and the alert rules use is exported by a scraped process
  (Prometheus holds its metadata, with the right type);
* the series the demo's traffic produces exist (decisions, queues, SLA gauges,
  staffed slots, edge counters, ...), each named below, so a renamed label-less
  series cannot hide;
* every dashboard query and every alert expression evaluates without error, and the
  rules evaluate healthy; with the demo routing, "router absent" and "process down"
  are quiet.

Everything the test starts is stopped; only loopback is used. Under ``CI=true`` a
missing prometheus fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from omniroute.embedded import free_port
from tests.demo_stack import running_demo
from tests.test_dashboard import dashboard_exprs, family, histograms

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RULES = Path(__file__).resolve().parent.parent / "docker" / "prometheus" / "alerts.yml"
_NAME = re.compile(r"\b(omni_[a-z0-9_]+)")

#: Series the demo plus this test's traffic must produce (not just declare).
MUST_HAVE_SERIES = {
    "omni_messages_in_total", "omni_decisions_total", "omni_decision_latency_seconds_bucket",
    "omni_queue_depth", "omni_queue_oldest_age_seconds", "omni_config_info",
    "omni_router_batch_records_bucket", "omni_adapter_requests_total",
    "omni_adapter_accepted_total", "omni_adapter_rejected_total",
    "omni_router_duplicates_total", "omni_adapter_ack_latency_seconds_bucket",
    "omni_sla_open_conversations", "omni_staffed_slots", "omni_sla_events_total",
    "omni_dead_letters_total", "up",
}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"] if "alert" in r]


@contextlib.asynccontextmanager
async def prometheus(workdir: Path, targets: dict[str, str]) -> AsyncIterator[str]:
    """Prometheus scraping ``targets`` (job -> host:port) every second; yields its URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in targets.items()],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "prometheus not ready in 30 s"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def _api(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as resp:
        body = await resp.json()
        assert body["status"] == "success", (url, params, body)
        return body["data"]


async def _traffic(base: str, info: dict[str, str]) -> None:
    """What a desk does in its first minute: agents log in and work, a channel retries,
    a caller has a wrong token, and a broken record reaches the router."""
    agent = {"Authorization": f"Bearer {info['agent']}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(f"{base}/v1/queues", headers=agent) as resp:
            queues = (await resp.json())["queues"]
        group = max(queues, key=lambda q: q["depth"])["group"]
        async with http.put(f"{base}/v1/agents/prom-a1", json={"groups": [group], "slots": 2},
                            headers=agent) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/v1/agents/prom-a1/claim", headers=agent) as resp:
            claimed = (await resp.json())["claimed"]
        conv = claimed["conversation_id"]
        async with http.post(f"{base}/v1/agents/prom-a1/conversations/{conv}/resolve",
                             headers=agent) as resp:
            assert resp.status == 200
        message = {"channel": "app", "account": "prom", "channel_msg_id": "prom-1",
                   "customer": {"id": "cust-prom"}, "text": "退款什么时候到账"}
        ingest = {"Authorization": "Bearer demo-token"}
        for _ in range(2):  # the second is the channel's retry: a duplicate
            async with http.post(f"{base}/v1/messages", json={"messages": [message]},
                                 headers=ingest) as resp:
                assert resp.status == 202, await resp.text()
        async with http.post(f"{base}/v1/messages", json={"messages": [message]},
                             headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
    producer = AIOKafkaProducer(bootstrap_servers=info["kafka"])
    await producer.start()
    try:  # a record no adapter would write: the router dead-letters it
        await producer.send_and_wait("omni.inbound", orjson.dumps({"not": "an envelope"}),
                                     key=b"prom-bad")
    finally:
        await producer.stop()


async def test_prometheus_scrapes_the_demo_and_every_used_series_exists(
    tmp_path: Path, redis_url: str
) -> None:
    prometheus_binary()  # fail or skip before starting anything
    dashboard = dashboard_exprs()
    alerts = alert_exprs()
    used = {n for _, e in [*dashboard, *alerts] for n in _NAME.findall(e)} | {"up"}
    with running_demo(tmp_path / "demo", redis_url) as demo:
        info = demo.info
        await _traffic(info["base"], info)
        targets = {
            "omniroute-ingest": info["metrics_http"].removeprefix("http://"),
            "omniroute-worker": info["metrics_worker"].removeprefix("http://"),
        }
        async with prometheus(tmp_path, targets) as prom, aiohttp.ClientSession() as session:
            # every process is scraped
            deadline = time.monotonic() + 30
            while True:
                active = (await _api(session, f"{prom}/api/v1/targets"))["activeTargets"]
                health = {t["labels"]["job"]: t["health"] for t in active}
                if health == dict.fromkeys(targets, "up"):
                    break
                assert time.monotonic() < deadline, f"targets not all up: {active}"
                await asyncio.sleep(0.5)

            # the series the traffic produces appear (gauges refresh every few seconds)
            deadline = time.monotonic() + 60
            while True:
                names = set(await _api(session, f"{prom}/api/v1/label/__name__/values"))
                missing = sorted(MUST_HAVE_SERIES - names)
                if not missing:
                    break
                assert time.monotonic() < deadline, f"series never scraped: {missing}"
                await asyncio.sleep(1)

            # every metric used is exported by a scraped process, with the right type
            metadata = await _api(session, f"{prom}/api/v1/metadata")
            hist = histograms()
            for name in sorted(used - {"up"}):
                base = family(name)
                assert base in metadata, f"{name}: no scraped process exports {base}"
                kind = metadata[base][0]["type"]
                if base in hist:
                    assert kind == "histogram", (base, kind)
                elif base.endswith("_total"):
                    assert kind == "counter", (base, kind)
                else:
                    assert kind in ("gauge", "counter"), (base, kind)
            assert used >= MUST_HAVE_SERIES, sorted(MUST_HAVE_SERIES - used)

            # every query of the dashboard and every alert evaluates
            for _title, expr in [*dashboard, *alerts]:
                await _api(session, f"{prom}/api/v1/query", query=expr)
            decided = await _api(session, f"{prom}/api/v1/query",
                                 query="sum(omni_decisions_total)")
            assert float(decided["result"][0]["value"][1]) >= 60  # the demo's messages

            # the rules loaded and evaluate healthy; nothing says the router is gone
            deadline = time.monotonic() + 20
            while True:
                groups = (await _api(session, f"{prom}/api/v1/rules"))["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                 not r["lastEvaluation"].startswith("0001") for r in rules):
                    break
                assert time.monotonic() < deadline, "rules were never evaluated"
                await asyncio.sleep(0.5)
            assert {r["name"] for r in rules} == {a for a, _ in alerts}
            assert [r["name"] for r in rules if r["health"] != "ok"] == []
            firing = {a["labels"]["alertname"] for a in
                      (await _api(session, f"{prom}/api/v1/alerts"))["alerts"]}
            assert "OmniRouterAbsent" not in firing
            assert "OmniProcessDown" not in firing
            # the broken record was counted, by reason, where the rule looks for it
            dead = await _api(session, f"{prom}/api/v1/query",
                              query="sum by (reason) (omni_dead_letters_total)")
            assert sum(float(r["value"][1]) for r in dead["result"]) >= 1, dead
