"""``omniroute bench``: the router pipeline against a raw aiokafka loop, same broker, same data.

(a) raw: consume -> orjson decode -> orjson encode -> produce, committing per batch;
(b) router: the worker's full hot path (decode + validate, Redis facts, tag,
    prioritise, route, atomic Redis enqueue, produce the decision, commit).
Both read the same N envelopes built from the bundled real messages, with the
same batch size, and are timed from their first record to their last commit.
Latency (p50/p99) comes from a third, paced phase: another process publishes
messages at half the measured router rate; each is timed from its publication to
its decision record on omni.routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from .admin import ensure_topics
from .corpus import bundled_texts, demo_envelope
from .embedded import redis_or_embedded, start_broker
from .router import kafka, topics
from .router.keys import Keys
from .router.metrics import RouterMetrics
from .router.queues import RedisQueueStore
from .router.redis_client import connect
from .router.reload import PipelineHolder
from .router.settings import Settings
from .router.worker import BatchRouter

__all__ = ["run_bench"]

LATENCY_MESSAGES = 2000


@contextlib.contextmanager
def _infrastructure(base: Settings, external: bool) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        bootstrap = base.kafka_bootstrap
        redis_url = base.redis_url
        if not external:
            bootstrap = stack.enter_context(start_broker()).url
            redis_url = stack.enter_context(redis_or_embedded(base.redis_url))
        yield base.model_copy(update={
            "kafka_bootstrap": bootstrap, "redis_url": redis_url,
            "topic_prefix": f"bench{tag}.", "redis_prefix": f"bench{tag}",
            "consumer_group": f"bench-{tag}", "fast_rebalance": True, "topic_partitions": 4,
        })


async def _publish(settings: Settings, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.producer(settings, batch=True)
    await producer.start()
    try:
        for i in range(0, len(values), 5000):
            futs = [await producer.send(topic, v, key=k) for k, v in values[i : i + 5000]]
            await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _raw_loop(settings: Settings, src: str, dst: str, n: int) -> float:
    """Baseline: msgs/s of consume -> decode -> encode -> produce -> commit."""
    # the router's own client settings: the comparison is of the work per message
    producer = kafka.producer(settings, batch=True)
    consumer = kafka.consumer(settings, src, group_id=f"{settings.consumer_group}-raw")
    await producer.start()
    await consumer.start()
    done = 0
    started: float | None = None
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=250,
                                           max_records=settings.batch_max_records)
            if not any(batch.values()):
                continue
            if started is None:
                started = time.perf_counter()
            futs = []
            for recs in batch.values():
                for rec in recs:
                    assert rec.value is not None
                    out = orjson.dumps(orjson.loads(rec.value))
                    futs.append(await producer.send(dst, out, key=rec.key))
                    done += 1
            await asyncio.gather(*futs)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs})
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def _router_phase(
    settings: Settings, router: BatchRouter, n: int
) -> float:
    first: float | None = None
    original = router.prepare

    async def timed(records: Any) -> Any:
        nonlocal first
        if first is None:
            first = time.perf_counter()
        return await original(records)

    router.prepare = timed  # type: ignore[method-assign]  # wrap to note the first record
    target = router.processed + n
    task = asyncio.create_task(router.run())
    try:
        while router.processed < target:
            if task.done():
                task.result()
            await asyncio.sleep(0.001)
        assert first is not None
        return n / (time.perf_counter() - first)
    finally:
        router.request_stop()
        await task
        router.prepare = original  # type: ignore[method-assign]  # restore


def _paced_publisher(settings: Settings, topic: str, rate: float, count: int) -> None:
    """Child process: publish ``count`` envelopes at ``rate``/s, stamping each on publish."""

    async def publish() -> None:
        texts = bundled_texts()
        producer = kafka.producer(settings, linger_ms=0)
        await producer.start()
        try:
            start = time.perf_counter()
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                env = demo_envelope(10_000_000 + i, texts[i % len(texts)],
                                    int(time.time() * 1000))
                await producer.send(topic, env.to_json(), key=env.conversation_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())


async def _latency_phase(settings: Settings, router: BatchRouter, rate: float) -> list[float]:
    """Publish -> decision on omni.routed, in ms, at a fixed rate from another process.

    The publisher runs in a child process so that it does not take CPU from the
    router; the latency of each message is the timestamp of its decision record
    on omni.routed minus the time it was published (``received_at_ms``).
    """
    ids = {demo_envelope(10_000_000 + i, "-", 0).id for i in range(LATENCY_MESSAGES)}
    target = router.processed + LATENCY_MESSAGES
    task = asyncio.create_task(router.run())
    child = multiprocessing.get_context("spawn").Process(
        target=_paced_publisher,
        args=(settings, settings.topic(topics.INBOUND), rate, LATENCY_MESSAGES),
    )
    child.start()
    try:
        deadline = time.monotonic() + 120
        while router.processed < target and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        router.request_stop()
        await task
        await asyncio.to_thread(child.join, 30)
    watcher = kafka.consumer(settings, settings.topic(topics.ROUTED), group_id=None)
    await watcher.start()
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while len(latencies) < LATENCY_MESSAGES and time.monotonic() < deadline:
            batch = await watcher.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                for rec in recs:
                    d = orjson.loads(rec.value)
                    if d["message_id"] in ids:
                        latencies.append(float(rec.timestamp - d["received_at_ms"]))
    finally:
        await watcher.stop()
    return latencies


async def _bench(settings: Settings, n: int) -> dict[str, Any]:
    await ensure_topics(settings, [topics.INBOUND, topics.ROUTED, topics.DEAD_LETTER,
                                   "bench.raw-in", "bench.raw-out"])
    texts = bundled_texts()
    now = int(time.time() * 1000)
    envs = [demo_envelope(i, texts[i % len(texts)], now) for i in range(n)]
    payload = [(e.conversation_id.encode(), e.to_json()) for e in envs]
    await _publish(settings, settings.topic("bench.raw-in"), payload)
    await _publish(settings, settings.topic(topics.INBOUND), payload)

    raw = await _raw_loop(settings, settings.topic("bench.raw-in"),
                          settings.topic("bench.raw-out"), n)

    redis = connect(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    metrics = RouterMetrics(CollectorRegistry())
    holder = PipelineHolder(settings.config_dir, metrics)
    routing = holder().config.routing
    store = RedisQueueStore(redis, keys, decision_ttl_s=3600,
                            repeat_window_s=routing.priority.repeat.window_s,
                            sticky_window_s=routing.sticky.window_s)
    router = BatchRouter(settings, holder, store, metrics)
    try:
        await router.start()
        routed = await _router_phase(settings, router, n)
        latencies = await _latency_phase(settings, router, max(100.0, routed / 2))
    finally:
        await router.stop()
        async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=5000):
            await redis.delete(key)
        await redis.aclose()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "messages": n,
        "raw_msgs_per_s": round(raw),
        "router_msgs_per_s": round(routed),
        "ratio": round(routed / raw, 3),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "latency_rate_msgs_per_s": round(max(100.0, routed / 2)),
        "batch_max_records": settings.batch_max_records,
    }


def run_bench(n: int, settings: Settings, *, external: bool = False) -> dict[str, Any]:
    """Run the benchmark: on an embedded broker (and an embedded Redis unless one answers
    at ``REDIS_URL``), or on ``settings``' broker and Redis when ``external``."""
    with _infrastructure(settings, external) as s:
        return asyncio.run(_bench(s, n))
