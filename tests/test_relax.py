"""Skill relaxation on a real Redis: waiting too long moves a message to the next fallback."""

from __future__ import annotations

import shutil
import uuid
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
from omniroute.router.redis_client import connect
from omniroute.router.relax import Relaxer
from omniroute.router.settings import Settings
from omniroute.skills.config import load_config
from omniroute.skills.rules import Rule
from tests.helpers import consume, envelope
from tests.test_routing_logic import MINI

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test of this module runs on a standalone Redis and on a Redis Cluster."""
    return any_redis_url


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


class _CrashingRelaxer(Relaxer):
    """Dies once right after a move's {q} step, before its decision is settled."""

    crashed = False

    async def _settle_one(self, message_id: str, mark: bytes) -> None:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("crash injected by the test")
        await super()._settle_one(message_id, mark)


async def test_a_crash_between_the_cluster_steps_is_settled_by_the_next_scan(
    redis_cluster_url: str,
) -> None:
    redis = connect(redis_cluster_url)
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    try:
        store = RedisQueueStore(redis, keys, decision_ttl_s=3600, repeat_window_s=60,
                                sticky_window_s=60)
        old = envelope(1, "外卖还没到", received_at_ms=T0)
        decision = Pipeline(load_config(MINI)).decide(old, T0)
        await store.enqueue([decision], [decision.to_json()])
        rule = Rule(id="logistics", target="logistics", fallbacks=("general", "senior"),
                    relax_after_s=30)
        with pytest.raises(ConnectionError):
            await _CrashingRelaxer(redis, keys).run_once((rule,), now_ms=T0 + 40_000)
        # the queue move and its event happened together; the decision is behind
        assert await redis.zscore(keys.queue("general"), old.id) is not None
        assert await redis.hlen(keys.relax_outbox()) == 1
        assert await redis.hget(keys.decision(old.id), "group") == b"logistics"
        assert await redis.hlen(keys.relax_moves()) == 1

        relaxer = Relaxer(redis, keys)
        assert await relaxer.run_once((rule,), now_ms=T0 + 40_000) == []  # no second move
        assert await redis.hget(keys.decision(old.id), "group") == b"general"
        assert (await redis.hget(keys.decision(old.id), "relaxed") or b"").startswith(
            b"relaxed after 40 s")
        assert await redis.hlen(keys.relax_moves()) == 0
        assert await redis.hlen(keys.relax_outbox()) == 1  # its one event, still there
        # and the chain goes on from the settled group
        later = await relaxer.run_once((rule,), now_ms=T0 + 65_000)
        assert [(m.message_id, m.to_group) for m in later] == [(old.id, "senior")]
    finally:
        async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
