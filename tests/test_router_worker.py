"""The router worker on a real broker and a real Redis: ingest -> decision -> queue."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.router import topics
from omniroute.router.keys import Keys
from omniroute.router.metrics import RouterMetrics
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.queues import RedisQueueStore
from omniroute.router.reload import PipelineHolder
from omniroute.router.settings import Settings
from omniroute.router.worker import BatchRouter
from tests.helpers import consume, envelope

pytestmark = pytest.mark.integration
MINI = Path(__file__).parent / "data" / "mini"


def _router(settings: Settings, redis: Redis, registry: CollectorRegistry) -> BatchRouter:
    metrics = RouterMetrics(registry)
    holder = PipelineHolder(MINI, metrics)
    store = RedisQueueStore(
        redis, Keys(settings.redis_prefix), decision_ttl_s=3600,
        repeat_window_s=3600, sticky_window_s=3600,
    )
    return BatchRouter(settings, holder, store, metrics)


async def _run_until(router: BatchRouter, processed: int, timeout_s: float = 30.0) -> None:
    task = asyncio.create_task(router.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while router.processed < processed:
            assert asyncio.get_running_loop().time() < deadline, (
                f"processed {router.processed} of {processed}"
            )
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        router.request_stop()
        await asyncio.wait_for(task, 10)
        await router.stop()


async def test_messages_reach_exactly_one_queue_in_priority_then_age_order(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    keys = Keys(settings.redis_prefix)
    envs = [
        envelope(1, "尺码怎么选"),  # product.info -> general, P4
        envelope(2, "外卖还没到，气死了"),  # logistics.delay + angry -> logistics
        envelope(3, "饭菜变质了"),  # food_safety -> food_safety
        envelope(4, "有人威胁我，我被打了"),  # safety -> emergency P0
        envelope(5, "你好"),  # nothing -> general P4 (older than 1? no: newer)
        envelope(6, "我要打12315投诉"),  # legal -> legal_pr
    ]
    async with EnvelopeProducer(settings) as producer:
        await producer.send_envelopes(envs)
    router = _router(settings, aredis, CollectorRegistry())
    await _run_until(router, len(envs))

    routed = await consume(settings.kafka_bootstrap, settings.topic(topics.ROUTED), len(envs))
    decisions = {d["message_id"]: d for d in (orjson.loads(r.value) for r in routed)}
    assert set(decisions) == {e.id for e in envs}
    expected = {1: "general", 2: "logistics", 3: "food_safety", 4: "emergency", 5: "general",
                6: "legal_pr"}
    for n, group in expected.items():
        d = decisions[envs[n - 1].id]
        assert d["skill_group"] == group, d
        assert d["config_version"].startswith("mini-1")
        assert d["priority"]["reasons"], d
    assert decisions[envs[3].id]["priority"]["band"] == "P0"
    # every message sits in exactly one queue, exactly once
    members: list[bytes] = []
    for group in {*expected.values()}:
        members += await aredis.zrange(keys.queue(group), 0, -1)
    assert sorted(members) == sorted(e.id.encode() for e in envs)
    # general: same band (P4) -> oldest first
    assert await aredis.zrange(keys.queue("general"), 0, -1) == [
        envs[0].id.encode(), envs[4].id.encode()
    ]
    # queue gauges: depth and the age of the oldest waiting message per group
    registry = router.metrics.registry
    router.clock = lambda: (envs[0].received_at_ms + 90_000) / 1000
    await router.refresh_stats()
    assert registry.get_sample_value("omni_queue_depth", {"skill_group": "general"}) == 2
    assert registry.get_sample_value(
        "omni_queue_oldest_age_seconds", {"skill_group": "general"}
    ) == pytest.approx(90.0)
    assert registry.get_sample_value(
        "omni_decisions_total", {"skill_group": "emergency", "band": "P0"}
    ) == 1


async def test_poison_records_go_to_dead_letter_and_the_partition_keeps_flowing(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    good = [envelope(i, "外卖还没到") for i in range(10)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    inbound = settings.topic(topics.INBOUND)
    try:
        # one partition (same key) so the poison sits between good records
        for i, env in enumerate(good):
            await producer.send_and_wait(inbound, env.to_json(), key=b"same")
            if i == 3:
                await producer.send_and_wait(inbound, b"\xff not json", key=b"same")
            if i == 6:
                bad = orjson.loads(env.to_json())
                bad["channel"] = "fax"
                await producer.send_and_wait(inbound, orjson.dumps(bad), key=b"same")
    finally:
        await producer.stop()
    registry = CollectorRegistry()
    router = _router(settings, aredis, registry)
    await _run_until(router, len(good) + 2)
    dead = await consume(settings.kafka_bootstrap, settings.topic(topics.DEAD_LETTER), 2)
    reasons = sorted(orjson.loads(r.value)["reason"] for r in dead)
    assert reasons[0].startswith("invalid_envelope: field 'channel' must be one of")
    assert reasons[1].startswith("invalid_envelope: not JSON")
    assert all(orjson.loads(r.value)["source"]["topic"] == inbound for r in dead)
    assert all(orjson.loads(r.value)["stage"] == "router" for r in dead)
    assert orjson.loads(dead[0].value)["value_b64"]  # the original bytes are kept
    depth = await aredis.zcard(Keys(settings.redis_prefix).queue("logistics"))
    general = await aredis.zcard(Keys(settings.redis_prefix).queue("general"))
    assert depth + general == len(good)  # logistics max_queue 3 overflows to general
    assert registry.get_sample_value(
        "omni_dead_letters_total", {"reason": "invalid_envelope"}
    ) == 2


async def test_replayed_batch_is_not_enqueued_twice_and_reemits_the_first_decision(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    envs = [envelope(i, "退款没到账", customer="same-customer") for i in range(4)]
    async with EnvelopeProducer(settings) as producer:
        await producer.send_envelopes(envs)
    registry = CollectorRegistry()
    await _run_until(_router(settings, aredis, registry), 4)
    # a second consumer group replays the same records: the effect of a crash before commit
    replay_settings = settings.model_copy(update={"consumer_group": settings.consumer_group + "b"})
    replay_registry = CollectorRegistry()
    await _run_until(_router(replay_settings, aredis, replay_registry), 4)
    keys = Keys(settings.redis_prefix)
    assert await aredis.zcard(keys.queue("payment")) == 4
    assert replay_registry.get_sample_value("omni_router_duplicates_total") == 4
    routed = await consume(settings.kafka_bootstrap, settings.topic(topics.ROUTED), 8)
    by_id: dict[str, set[bytes]] = {}
    for r in routed:
        by_id.setdefault(orjson.loads(r.value)["message_id"], set()).add(r.value)
    assert all(len(v) == 1 for v in by_id.values()), "a replay must re-emit the same decision"
    # repeat contact: the 3rd and 4th message of the same customer were escalated
    reasons = [orjson.loads(next(iter(v)))["priority"]["reasons"] for v in by_id.values()]
    assert sum(any("repeat contact" in r for r in rs) for rs in reasons) == 2


async def test_config_reload_between_batches_loses_nothing(
    topics_ready: Settings, aredis: Redis, tmp_path: Path
) -> None:
    import shutil

    cfg = tmp_path / "cfg"
    shutil.copytree(MINI, cfg)
    settings = topics_ready.model_copy(update={"config_dir": cfg})
    metrics = RouterMetrics(CollectorRegistry())
    holder = PipelineHolder(cfg, metrics)
    store = RedisQueueStore(aredis, Keys(settings.redis_prefix), decision_ttl_s=3600,
                            repeat_window_s=3600, sticky_window_s=3600)
    router = BatchRouter(settings, holder, store, metrics)
    first_version = holder.version
    task = asyncio.create_task(router.run())
    try:
        async with EnvelopeProducer(settings) as producer:
            await producer.send_envelopes([envelope(i, "外卖还没到") for i in range(50)])
            deadline = asyncio.get_running_loop().time() + 30
            while router.processed < 50:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            routing = cfg / "routing.yaml"
            routing.write_text(routing.read_text(encoding="utf-8").replace(
                "version: mini-1", "version: mini-2"), encoding="utf-8")
            assert holder.reload()
            await producer.send_envelopes([envelope(i, "外卖还没到") for i in range(50, 100)])
            while router.processed < 100:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
    finally:
        router.request_stop()
        await asyncio.wait_for(task, 10)
        await router.stop()
    routed = await consume(settings.kafka_bootstrap, settings.topic(topics.ROUTED), 100)
    versions = Counter(orjson.loads(r.value)["config_version"].split("+")[0] for r in routed)
    assert versions == {"mini-1": 50, "mini-2": 50}
    assert first_version.startswith("mini-1")


@pytest.mark.timeout(120)
async def test_two_workers_in_one_group_share_and_hand_over_partitions(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI, "batch_max_records": 100})
    keys = Keys(settings.redis_prefix)
    n = 6000
    envs = [envelope(i, "外卖还没到", customer=f"c{i % 300}") for i in range(n)]
    first = _router(settings, aredis, CollectorRegistry())
    second = _router(settings, aredis, CollectorRegistry())
    first_task = asyncio.create_task(first.run())
    loop = asyncio.get_running_loop()
    second_task: asyncio.Task[None] | None = None

    async def until(check: Callable[[], bool]) -> None:
        deadline = loop.time() + 30
        while not check():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.05)

    try:
        async with EnvelopeProducer(settings) as producer:
            for i in range(0, n, 500):
                await producer.send_envelopes(envs[i : i + 500])
                if i == 1000:
                    await until(lambda: first.processed > 0)
                    second_task = asyncio.create_task(second.run())  # rebalance mid-stream
                if i == 2500:
                    await until(lambda: bool(second.assigned_partitions))
                if i == 4000:
                    await until(lambda: second.processed > 0)
                    first.request_stop()  # hand its partitions over mid-stream
                    await asyncio.wait_for(first_task, 30)
                    await first.stop()
        deadline = loop.time() + 60
        while True:
            total = sum([await aredis.zcard(keys.queue(g)) for g in ("logistics", "general",
                                                                     "senior")])
            if total >= n or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        first.request_stop()
        second.request_stop()
        tasks = [t for t in (first_task, second_task) if t is not None]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await first.stop()
        await second.stop()
    members: list[bytes] = []
    for g in ("logistics", "general", "senior"):
        members += await aredis.zrange(keys.queue(g), 0, -1)
    assert len(members) == n, f"{len(members) - n:+d} queue entries"
    assert set(members) == {e.id.encode() for e in envs}
    assert first.processed > 0
    assert second.processed > 0
