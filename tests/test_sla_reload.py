"""Hot reload of sla.yaml, like the routing configuration's (issue 11, item 15):
validated before it is active, a rejected change keeps the old version, the version
is published as a metric, and the SLA worker uses a new version from its next tick
(file change) or on ``reload()``, which a running ``omniroute sla`` calls on SIGHUP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.embedded import free_port
from omniroute.router.models import Band, Channel
from omniroute.router.settings import Settings, default_config_dir
from omniroute.sla.metrics import SlaMetrics
from omniroute.sla.reload import SlaConfigHolder
from omniroute.sla.worker import SlaWorker
from tests.test_sla_support import FakeClock, decision

LIVE_TARGET = "    first_response: 30\n"  # livestream-question in the shipped sla.yaml
# the forecast staffs livestream against that target; sla.yaml must keep the two equal
LIVE_FORECAST = "      livestream: {aht_s: 60, answer_target_s: 30}\n"
VERSION = 'version: "2026-11-1"'


def _sla_yaml(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    path = cfg / "sla.yaml"
    shutil.copy(default_config_dir() / "sla.yaml", path)
    text = path.read_text(encoding="utf-8")
    assert text.count(LIVE_TARGET) == 1
    assert text.count(LIVE_FORECAST) == 1
    assert VERSION in text
    return path


def _edit(path: Path, old: str, new: str) -> None:
    """Rewrite the file and move its modification time on (coarse clocks)."""
    before = path.stat().st_mtime_ns
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def _retarget(path: Path, old_s: int, new_s: int) -> None:
    """Move the livestream first-response target, and the forecast's with it."""
    text = path.read_text(encoding="utf-8")
    text = text.replace(f"    first_response: {old_s}\n", f"    first_response: {new_s}\n", 1)
    text = text.replace(f"answer_target_s: {old_s}}}", f"answer_target_s: {new_s}}}", 1)
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_holder_swaps_a_valid_change_and_keeps_the_old_on_a_bad_one(tmp_path: Path) -> None:
    path = _sla_yaml(tmp_path)
    registry = CollectorRegistry()
    holder = SlaConfigHolder(path, SlaMetrics(registry))
    v1 = holder.version
    assert v1.startswith("2026-11-1+")
    assert _sample(registry, "omni_sla_config_info", version=v1) == 1
    assert holder.reload_if_changed() is False  # nothing changed

    _retarget(path, 30, 45)
    assert holder.reload_if_changed() is True
    v2 = holder.version
    assert v2 != v1  # the label is the same: the hash tells the versions apart
    assert v2.startswith("2026-11-1+")
    policy = holder().policy("livestream-question")
    assert policy is not None
    assert policy.first_response is not None
    assert policy.first_response.target_s == 45
    assert _sample(registry, "omni_sla_config_info", version=v2) == 1
    assert _sample(registry, "omni_sla_config_info", version=v1) is None
    assert _sample(registry, "omni_sla_config_reloads_total", result="applied") == 1

    # a policy target the forecast no longer staffs for, an unknown calendar, then broken
    # YAML: all rejected, v2 keeps running
    _edit(path, "    first_response: 45\n", "    first_response: 40\n")
    assert holder.reload_if_changed() is False
    _edit(path, "    first_response: 40\n", "    first_response: 45\n")
    _edit(path, "calendar: default", "calendar: nowhere")
    assert holder.reload_if_changed() is False
    _edit(path, VERSION, 'version: "2026-11-1\n  : ]')
    assert holder.reload() is False
    assert holder.version == v2
    assert holder() is not None
    assert _sample(registry, "omni_sla_config_reloads_total", result="rejected") == 3
    assert _sample(registry, "omni_sla_config_info", version=v2) == 1


def test_a_fixed_config_is_never_reloaded(tmp_path: Path) -> None:
    config = SlaConfigHolder(_sla_yaml(tmp_path))()
    holder = SlaConfigHolder(None, config=config)
    assert holder.reload() is False
    assert holder.reload_if_changed() is False
    assert holder() is config


@pytest.mark.integration
async def test_the_worker_uses_a_new_sla_yaml_from_its_next_tick_and_on_reload(
    topics_ready: Settings, aredis: Redis, tmp_path: Path
) -> None:
    path = _sla_yaml(tmp_path)
    settings = topics_ready.model_copy(update={"config_dir": path.parent})
    registry = CollectorRegistry()
    worker = SlaWorker(settings, registry, FakeClock(), redis=aredis, tick_s=3600)
    await worker.start(consume=False, loops=False)
    try:
        assert worker.store is not None
        v1 = worker.holder.version

        async def live_target_s(n: int) -> float:
            assert worker.store is not None
            state = await worker.store.on_decision(
                decision(n, channel=Channel.LIVESTREAM, group="livestream", band=Band.P2))
            assert state is not None
            assert state.policy == "livestream-question"
            return state.timers["first_response"].target_s

        assert await live_target_s(1) == 30

        # a changed file: the next tick applies it
        _retarget(path, 30, 45)
        await worker.tick()
        assert worker.holder.version != v1
        assert await live_target_s(2) == 45

        # a rejected change: the worker keeps running on the version before it
        v2 = worker.holder.version
        _edit(path, "calendar: default", "calendar: nowhere")
        await worker.tick()
        assert worker.holder.version == v2
        assert await live_target_s(3) == 45

        # SIGHUP (reload) picks up the fixed file at once
        _edit(path, "calendar: nowhere", "calendar: default")
        _retarget(path, 45, 50)
        assert worker.reload() is True
        assert await live_target_s(4) == 50
        assert _sample(registry, "omni_sla_config_reloads_total", result="applied") == 2
        assert _sample(registry, "omni_sla_config_reloads_total", result="rejected") == 1
        assert _sample(registry, "omni_sla_config_info", version=worker.holder.version) == 1
    finally:
        await worker.stop()


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_sighup_makes_a_running_sla_process_load_the_changed_sla_yaml(
    topics_ready: Settings, tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(default_config_dir(), cfg)
    path = cfg / "sla.yaml"
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": topics_ready.kafka_bootstrap,
        "REDIS_URL": topics_ready.redis_url,
        "OMNI_TOPIC_PREFIX": topics_ready.topic_prefix,
        "OMNI_REDIS_PREFIX": topics_ready.redis_prefix,
        "OMNI_CONSUMER_GROUP": topics_ready.consumer_group,
        "OMNI_CONFIG_DIR": str(cfg),
        "OMNI_SLA_WEB_PORT": str(port),
        # the longest tick: the file-change check of the next tick cannot be what
        # applies the edit within this test, only the SIGHUP can
        "OMNI_SLA_TICK_S": "60",
    }
    log = tmp_path / "sla.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "omniroute", "sla", "--loglevel", "info"],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def until(pred: Any, what: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = _readyz(port)
            if pred(status, body):
                return body
            if proc.poll() is not None:
                pytest.fail(f"omniroute sla exited {proc.returncode}:\n"
                            f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: /readyz stayed {status} {body}\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.1)

    try:
        v1 = until(lambda status, _: status == 200, "ready", 60)["config_version"]
        assert v1.startswith("2026-11-1+")

        _retarget(path, 30, 45)
        time.sleep(1.5)  # past the readiness cache: not picked up without the signal
        assert _readyz(port)[1]["config_version"] == v1
        os.kill(proc.pid, signal.SIGHUP)
        v2 = until(lambda _, body: body.get("config_version") not in (None, v1),
                   "a new config_version after SIGHUP", 20)["config_version"]
        assert v2.startswith("2026-11-1+")  # same label, another content hash
        assert proc.poll() is None  # SIGHUP reloads; it does not end the process
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]
