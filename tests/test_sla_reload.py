"""Hot reload of sla.yaml, like the routing configuration's (issue 11, item 15):
validated before it is active, a rejected change keeps the old version, the version
is published as a metric, and the SLA worker uses a new version from its next tick
(file change) or on ``reload()`` (SIGHUP)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.router.models import Band, Channel
from omniroute.router.settings import Settings, default_config_dir
from omniroute.sla.metrics import SlaMetrics
from omniroute.sla.reload import SlaConfigHolder
from omniroute.sla.worker import SlaWorker
from tests.test_sla_support import FakeClock, decision

LIVE_TARGET = "    first_response: 30\n"  # livestream-question in the shipped sla.yaml
VERSION = 'version: "2026-11-1"'


def _sla_yaml(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    path = cfg / "sla.yaml"
    shutil.copy(default_config_dir() / "sla.yaml", path)
    text = path.read_text(encoding="utf-8")
    assert text.count(LIVE_TARGET) == 1
    assert VERSION in text
    return path


def _edit(path: Path, old: str, new: str) -> None:
    """Rewrite the file and move its modification time on (coarse clocks)."""
    before = path.stat().st_mtime_ns
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
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

    _edit(path, LIVE_TARGET, "    first_response: 45\n")
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

    # an unknown calendar, then broken YAML: both rejected, v2 keeps running
    _edit(path, "calendar: default", "calendar: nowhere")
    assert holder.reload_if_changed() is False
    _edit(path, VERSION, 'version: "2026-11-1\n  : ]')
    assert holder.reload() is False
    assert holder.version == v2
    assert holder() is not None
    assert _sample(registry, "omni_sla_config_reloads_total", result="rejected") == 2
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
        _edit(path, LIVE_TARGET, "    first_response: 45\n")
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
        _edit(path, "    first_response: 45\n", "    first_response: 50\n")
        assert worker.reload() is True
        assert await live_target_s(4) == 50
        assert _sample(registry, "omni_sla_config_reloads_total", result="applied") == 2
        assert _sample(registry, "omni_sla_config_reloads_total", result="rejected") == 1
        assert _sample(registry, "omni_sla_config_info", version=worker.holder.version) == 1
    finally:
        await worker.stop()
