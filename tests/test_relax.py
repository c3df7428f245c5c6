"""Skill relaxation on a real Redis: waiting too long moves a message to the next fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.router import topics
from omniroute.router.app import WorkerRuntime
from omniroute.router.keys import Keys
from omniroute.router.pipeline import Pipeline
from omniroute.router.queues import RedisQueueStore
from omniroute.router.relax import Relaxer
from omniroute.router.settings import Settings
from omniroute.skills.config import load_config
from omniroute.skills.rules import Rule
from tests.helpers import consume, envelope
from tests.test_routing_logic import MINI

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


async def test_waiting_messages_move_along_the_fallbacks_once(
    settings: Settings, aredis: Redis
) -> None:
    keys = Keys(settings.redis_prefix)
    pipeline = Pipeline(load_config(MINI))
    store = RedisQueueStore(aredis, keys, decision_ttl_s=3600, repeat_window_s=60,
                            sticky_window_s=60)
    old = envelope(1, "外卖还没到", received_at_ms=T0)
    fresh = envelope(2, "外卖还没到", received_at_ms=T0 + 50_000)
    other = envelope(3, "尺码怎么选", received_at_ms=T0)  # routed by another rule
    decisions = [pipeline.decide(e, T0) for e in (old, fresh, other)]
    await store.enqueue(decisions, [d.to_json() for d in decisions])
    rule = Rule(id="logistics", target="logistics", fallbacks=("general", "senior"),
                relax_after_s=30)
    relaxer = Relaxer(aredis, keys)

    moves = await relaxer.run_once((rule,), now_ms=T0 + 40_000)
    assert [(m.message_id, m.from_group, m.to_group) for m in moves] == [
        (old.id, "logistics", "general")
    ]
    assert await relaxer.run_once((rule,), now_ms=T0 + 40_000) == []  # moved once only
    assert await aredis.zscore(keys.queue("general"), old.id) is not None
    assert await aredis.zscore(keys.queue("logistics"), fresh.id) is not None
    assert await aredis.hget(keys.decision(old.id), "group") == b"general"

    later = await relaxer.run_once((rule,), now_ms=T0 + 65_000)
    assert {(m.message_id, m.to_group) for m in later} == {(old.id, "senior")}
    assert await aredis.zscore(keys.queue("general"), other.id) is not None

    # a message an agent has claimed is never put back
    await aredis.zrem(keys.queue("logistics"), fresh.id)
    assert await relaxer.run_once((rule,), now_ms=T0 + 200_000) == []
    assert await aredis.zscore(keys.queue("general"), fresh.id) is None


async def test_the_worker_tells_the_sla_worker_about_each_move(
    topics_ready: Settings, aredis: Redis, tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(MINI, cfg)
    routing = cfg / "routing.yaml"
    routing.write_text(routing.read_text(encoding="utf-8").replace(
        "target: logistics, fallbacks: [general]}",
        "target: logistics, fallbacks: [general], relax_after_s: 30}"), encoding="utf-8")
    settings = topics_ready.model_copy(update={"config_dir": cfg})
    runtime = WorkerRuntime(settings, CollectorRegistry())
    waiting = envelope(7, "外卖还没到", received_at_ms=T0)
    decision = runtime.holder().decide(waiting, T0)
    await runtime.store.enqueue([decision], [decision.to_json()])
    await runtime.router.start()
    try:
        moves = await runtime.relax(T0 + 31_000)
    finally:
        await runtime.router.stop()
        await runtime.redis.aclose()
    assert [(m.message_id, m.to_group) for m in moves] == [(waiting.id, "general")]
    records = await consume(settings.kafka_bootstrap, settings.topic(topics.AGENT_EVENTS), 1)
    event = orjson.loads(records[0].value)
    assert (event["type"], event["conversation_id"], event["group"], event["to_group"]) == (
        "transfer", waiting.conversation_id, "logistics", "general"
    )
    assert runtime.metrics.registry.get_sample_value(
        "omni_relaxations_total", {"from_group": "logistics", "to_group": "general"}
    ) == 1
