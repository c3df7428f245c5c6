"""The queue store and the router worker on a standalone Redis and on a real Redis Cluster
(valkey-server in cluster mode, three primaries), and across a primary failover.

On a cluster every script must touch one hash slot (the server refuses anything
else: CROSSSLOT), so running the same tests on both is the check that the key
layout and the per-slot split hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from omniroute.embedded import EmbeddedCluster, start_redis_cluster
from omniroute.router.keys import BUCKETS, Keys, bucket_of
from omniroute.router.metrics import RouterMetrics
from omniroute.router.models import Decision, Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.queues import RedisQueueStore
from omniroute.router.redis_client import ClusterClient, connect, is_cluster_client
from omniroute.router.reload import PipelineHolder
from omniroute.router.settings import Settings
from omniroute.router.worker import BatchRouter
from tests.helpers import envelope

pytestmark = pytest.mark.integration
MINI = Path(__file__).parent / "data" / "mini"
TEXTS = ("尺码怎么选", "外卖还没到，气死了", "饭菜变质了", "我要打12315投诉", "你好")


@pytest.fixture
async def client(any_redis_url: str) -> AsyncIterator[Redis]:
    """A client (standalone or cluster) and a fresh key prefix; the keys go afterwards."""
    redis = connect(any_redis_url)
    yield redis
    await redis.aclose()


def _keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:10]}")


async def _cleanup(redis: Redis, keys: Keys) -> None:
    async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        await redis.delete(key)


def _store(redis: Redis, keys: Keys) -> RedisQueueStore:
    return RedisQueueStore(redis, keys, decision_ttl_s=3600, repeat_window_s=3600,
                           sticky_window_s=3600)


def _envelopes(n: int, start: int = 0) -> list[Envelope]:
    # 3 messages per customer and conversation: repeat contacts and sticky groups
    return [envelope(start + i, TEXTS[i % len(TEXTS)], customer=f"c{(start + i) // 3}")
            for i in range(n)]


async def _decide(store: RedisQueueStore, envs: Sequence[Envelope], now_ms: int
                  ) -> tuple[list[Decision], list[bytes]]:
    pipeline = PipelineHolder(MINI, RouterMetrics(CollectorRegistry()))()
    facts = await store.facts(envs, now_ms)
    decisions = [pipeline.decide(e, now_ms, f, {}, None) for e, f in zip(envs, facts,
                                                                           strict=True)]
    return decisions, [d.to_json() for d in decisions]


async def _queued(redis: Redis, keys: Keys) -> list[str]:
    groups = [g.decode() if isinstance(g, bytes) else g
              for g in await redis.smembers(keys.groups())]
    members: list[str] = []
    for g in groups:
        rows: list[bytes] = await redis.zrange(keys.queue(g), 0, -1)  # type: ignore[assignment]
        members += [m.decode() for m in rows]
    return members


def test_the_key_layout_spreads_routing_state_and_keeps_queues_in_one_slot() -> None:
    keys = Keys("omni")
    assert keys.decision("m-1") == f"omni:{{r:{bucket_of('m-1')}}}:msg:m-1"
    assert keys.queue("general").split(":")[1] == keys.groups().split(":")[1] == "{q}"
    assert keys.enqueued().split(":")[1] == "{q}"
    spread = {bucket_of(f"conv-{i}") for i in range(1000)}
    assert len(spread) == BUCKETS


async def test_enqueue_is_exactly_once_and_a_replay_returns_the_stored_decision(
    client: Redis,
) -> None:
    keys = _keys()
    store = _store(client, keys)
    try:
        envs = _envelopes(300)
        decisions, encoded = await _decide(store, envs, envs[-1].received_at_ms)
        assert await store.enqueue(decisions, encoded) == [None] * len(envs)
        queued = await _queued(client, keys)
        assert sorted(queued) == sorted(e.id for e in envs)
        # a replay (another worker, a crash before commit): nothing new, stored decisions
        again = await store.enqueue(decisions, [b"{}"] * len(decisions))
        assert again == encoded
        assert sorted(await _queued(client, keys)) == sorted(queued)
        # the facts of a later batch see the contacts and the sticky group of each conversation
        later = [dataclasses.replace(e, id=e.id + "-later", received_at_ms=e.received_at_ms
                                     + 1000) for e in envs[:30]]
        facts = await store.facts(later, later[-1].received_at_ms)
        by_conv = {d.conversation_id: d.skill_group for d in decisions}
        for i, (env, fact) in enumerate(zip(later, facts, strict=True)):
            assert fact.sticky_group == by_conv[env.conversation_id]
            # the customer's three messages of the first batch, then the earlier ones of this
            assert fact.prior_contacts == 3 + i % 3
        if is_cluster_client(client):
            assert await client.zcard(keys.enqueued()) == 0  # marks are gone once settled
    finally:
        await _cleanup(client, keys)


class _CrashingStore(RedisQueueStore):
    """Fails the first call of one script before it runs, as a worker crash at that point."""

    crash_before: str = ""

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if self.crash_before and script is getattr(self, self.crash_before):
            self.crash_before = ""
            raise ConnectionError("crash injected by the test")
        return await super()._run(script, keys, args)


@pytest.mark.parametrize("crash_before", ["_queue", "_settle"])
async def test_a_replay_after_a_crash_between_cluster_steps_queues_once_in_the_first_group(
    redis_cluster_url: str, crash_before: str,
) -> None:
    redis = connect(redis_cluster_url)
    keys = _keys()
    try:
        envs = _envelopes(60)
        store = _CrashingStore(redis, keys, decision_ttl_s=3600, repeat_window_s=3600,
                               sticky_window_s=3600)
        decisions, encoded = await _decide(store, envs, envs[-1].received_at_ms)
        store.crash_before = crash_before
        with pytest.raises(ConnectionError):
            await store.enqueue(decisions, encoded)
        # the replay decides differently (a reload, new facts): the first decision stands
        other = [dataclasses.replace(d, skill_group="supervisor") for d in decisions]
        stored = await _store(redis, keys).enqueue(other, [d.to_json() for d in other])
        assert stored == encoded
        queued = await _queued(redis, keys)
        assert sorted(queued) == sorted(e.id for e in envs)
        assert await redis.zcard(keys.queue("supervisor")) == 0
        assert await redis.zcard(keys.enqueued()) == 0
        assert [await redis.hget(keys.decision(e.id), "pending") for e in envs] == [None] * 60
    finally:
        await _cleanup(redis, keys)
        await redis.aclose()


def _router(settings: Settings, redis: Redis) -> BatchRouter:
    metrics = RouterMetrics(CollectorRegistry())
    return BatchRouter(settings, PipelineHolder(MINI, metrics), _store(
        redis, Keys(settings.redis_prefix)), metrics)


async def _route(router: BatchRouter, count: int, during: Any = None,
                 timeout_s: float = 120.0) -> None:
    task = asyncio.create_task(router.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while router.processed < count:
            assert asyncio.get_running_loop().time() < deadline, (
                f"processed {router.processed} of {count}")
            if task.done():
                task.result()
            if during is not None and during():
                during = None
            await asyncio.sleep(0.02)
    finally:
        router.request_stop()
        await asyncio.wait_for(task, 30)
        await router.stop()


async def test_the_router_worker_routes_each_message_into_one_queue_once(
    topics_ready: Settings, any_redis_url: str,
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI, "redis_url": any_redis_url})
    keys = Keys(settings.redis_prefix)
    redis = connect(any_redis_url)
    try:
        envs = _envelopes(1500)
        async with EnvelopeProducer(settings) as producer:
            await producer.send_envelopes(envs)
            await producer.send_envelopes(envs[:200])  # duplicates on the topic
        router = _router(settings, redis)
        await _route(router, len(envs) + 200)
        # consumer lag per partition: every partition was read to its end
        lag = [router.metrics.registry.get_sample_value(
            "omni_router_consumer_lag_records", {"partition": str(p)}) for p in range(4)]
        assert lag == [0.0] * 4
        queued = await _queued(redis, keys)
        assert len(queued) == len(envs)
        assert set(queued) == {e.id for e in envs}
    finally:
        await _cleanup(redis, keys)
        await redis.aclose()


@pytest.fixture
def cluster_with_replicas() -> Iterator[EmbeddedCluster]:
    # two replicas each: after a failover the new primary still has one to WAIT for
    with start_redis_cluster(primaries=3, replicas=2) as cluster:
        yield cluster


async def test_exactly_once_enqueue_holds_across_a_primary_failover(
    topics_ready: Settings, cluster_with_replicas: EmbeddedCluster,
) -> None:
    """Kill the primary of the queues' slot mid-stream; its replica is promoted; with
    ``wait_replicas=1`` every message still sits in exactly one queue, once."""
    url = cluster_with_replicas.url + "?wait_replicas=1&wait_timeout_ms=1000"
    settings = topics_ready.model_copy(update={"config_dir": MINI, "redis_url": url})
    keys = Keys(settings.redis_prefix)
    redis = connect(url, socket_timeout=2)
    envs = _envelopes(4000)
    async with EnvelopeProducer(settings) as producer:
        await producer.send_envelopes(envs)
    router = _router(settings, redis)
    await redis.initialize()
    holder = cast(ClusterClient, redis).get_node_from_key(keys.queue("general"))
    assert holder is not None
    victim = holder.port
    assert victim in cluster_with_replicas.primaries

    def kill_when_busy() -> bool:
        if router.processed < 1000:
            return False
        cluster_with_replicas.kill(victim)
        return True

    try:
        await _route(router, len(envs), during=kill_when_busy)
        assert router.processed >= len(envs)
        probe = connect(cluster_with_replicas.url)
        await probe.initialize()
        try:
            now = cast(ClusterClient, probe).get_node_from_key(keys.queue("general"))
            assert now is not None
            assert now.port != victim  # a replica took over
            queued = await _queued(probe, keys)
            assert len(queued) == len(envs)
            assert set(queued) == {e.id for e in envs}
            assert [await probe.exists(keys.decision(e.id)) for e in envs[::50]] == [1] * 80
        finally:
            await probe.aclose()
    finally:
        await redis.aclose()
