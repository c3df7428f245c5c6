"""Prometheus for real: Debian's ``prometheus`` scrapes every endpoint of a running demo
(the HTTP app and the worker's web server, both of ``omniroute run``) every second,
with docker/prometheus/alerts.yml loaded. Checked:

* every metric the dashboard and the alert rules use (the names are read from the
  dashboard JSON and alerts.yml, not kept by hand) has samples in Prometheus, and a
  scraped process exports it with the right type. The demo runs on a copy of config/
  with short SLA targets (every policy warns, breaches and escalates within seconds)
  and two-second surge windows; the test's traffic adds what a desk sees in its first
  minute (agents, a retry, a wrong token, a phone number, a Douyin push with chatter
  and gifts, a broken record); the surge gauges are set for every scope at the close
  of each window, surge or not;
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
from omniroute.router.settings import default_config_dir
from tests.demo_stack import running_demo
from tests.test_dashboard import dashboard_exprs, family, histograms
from tests.test_douyin import SECRETS as DOUYIN_SECRETS
from tests.test_douyin import comment, push_headers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

RULES = Path(__file__).resolve().parent.parent / "docker" / "prometheus" / "alerts.yml"
_NAME = re.compile(r"\b(omni_[a-z0-9_]+)")
SURGE_WINDOW_S = 2.0


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def fast_config(directory: Path) -> Path:
    """A copy of config/ whose SLA timers run out in seconds (every policy on the 24x7
    calendar, first response warned at 1 s and breached at 3 s; the ladders escalate
    at the breach) and whose surge windows last two seconds, each learnt in full."""
    shutil.copytree(default_config_dir(), directory)
    sla = yaml.safe_load((directory / "sla.yaml").read_text(encoding="utf-8"))
    for policy in sla["policies"]:
        policy.update(calendar="always", first_response={"target_s": 3, "warning_s": 1})
    surge = sla["surge"]
    surge.update(window_s=SURGE_WINDOW_S, ewma_alpha=1.0)
    # a group's answer target is its policy's first-response target
    for group in (surge.get("forecast", {}).get("groups") or {}).values():
        if "answer_target_s" in group:
            group["answer_target_s"] = 3
    for group in surge.get("group_answer_target_s") or {}:
        surge["group_answer_target_s"][group] = 3
    (directory / "sla.yaml").write_text(yaml.safe_dump(sla, allow_unicode=True),
                                        encoding="utf-8")
    return directory


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
                   "customer": {"id": "cust-prom"}, "text": "退款什么时候到账 电话13812345678"}
        ingest = {"Authorization": "Bearer demo-token"}
        for _ in range(2):  # the second is the channel's retry: a duplicate
            async with http.post(f"{base}/v1/messages", json={"messages": [message]},
                                 headers=ingest) as resp:
                assert resp.status == 202, await resp.text()
        async with http.post(f"{base}/v1/messages", json={"messages": [message]},
                             headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        # a live room: a question and a cheer (chatter) in one push, Douyin's re-push of
        # it (duplicates), then gifts
        comments = [comment("prom-c1", "这个尺码怎么选"),
                    comment("prom-c2", "666", viewer="sec_v2")]
        for msg_type, items in (
            ("live_comment", comments), ("live_comment", comments),
            ("live_gift", [{"msg_id": "prom-g1", "sec_openid": "sec_v3", "sec_gift_id": "rose",
                            "gift_num": 2, "gift_value": 10,
                            "timestamp": int(time.time() * 1000)}]),
        ):
            body = orjson.dumps(items)
            async with http.post(f"{base}/douyin/live", data=body,
                                 headers=push_headers(body, msg_type=msg_type)) as resp:
                assert resp.status == 200, await resp.text()
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
    assert len(used) >= 30, sorted(used)  # the names were read, not lost to a parse change
    assert "omni_decisions_total" in used
    env = {"OMNI_CONFIG_DIR": str(fast_config(tmp_path / "config")),
           **{f"OMNI_DOUYIN_SECRET_{kind.upper()}": secret
              for kind, secret in DOUYIN_SECRETS.items()}}
    with running_demo(tmp_path / "demo", redis_url, env=env) as demo:
        info = demo.info
        await _traffic(info["base"], info)
        # the surge gauges of every scope appear once a window has closed
        await asyncio.sleep(2 * SURGE_WINDOW_S)
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

            # every series used has samples (gauges refresh every few seconds)
            deadline = time.monotonic() + 60
            while True:
                names = set(await _api(session, f"{prom}/api/v1/label/__name__/values"))
                missing = sorted(used - names)
                if not missing:
                    break
                assert time.monotonic() < deadline, f"used but never scraped: {missing}"
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
