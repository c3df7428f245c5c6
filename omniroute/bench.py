"""``omniroute bench``: the router pipeline against a raw aiokafka loop, same broker, same data.

(a) raw: consume -> orjson decode -> orjson encode -> produce, committing per batch;
(b) router: the worker's full hot path (decode + validate, Redis facts, tag,
    prioritise, route, atomic Redis enqueue, produce the decision, commit).
Both read the same N envelopes built from the bundled real messages, with the
same batch size, and are timed from their first record to their last commit.
Latency (p50/p99) comes from paced phases: another process publishes messages at a
fixed 5,000 msg/s and at half the measured router rate; each is timed from its
publication to its decision record on omni.routed.

Scaling (``--workers N``): N router worker processes in one consumer group over P
partitions, against one worker in the same run, each on fresh topics: the group is
let settle (every partition assigned, a warm-up set routed), then the parent
publishes the measured messages and the rate is messages / (last routed - publish
start). The one-worker phase also measures the cost per message of each resource:
router CPU (the workers' process time), Redis CPU (``INFO cpu``, and per script from
``INFO commandstats``) and broker CPU (its process), for the scaling model.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from .admin import ensure_topics
from .corpus import bundled_texts, demo_envelope
from .embedded import start_broker, start_redis
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
FIXED_RATE = 5000.0  # msg/s: the fixed offered load of the latency phase
LATENCY_SECONDS = 4.0  # length of a paced phase (at least LATENCY_MESSAGES messages)
WARMUP = 2000  # messages routed by a worker group before its measured set


@contextlib.contextmanager
def _infrastructure(base: Settings, external: bool) -> Iterator[tuple[Settings, int | None]]:
    """Settings on fresh topics and keys, and the broker's pid when it is embedded. The
    embedded run starts its own Redis too, so its CPU counters are the bench's alone."""
    tag = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        bootstrap = base.kafka_bootstrap
        redis_url = base.redis_url
        broker_pid: int | None = None
        if not external:
            broker = stack.enter_context(start_broker(log=base.tansu_log))
            bootstrap = broker.url
            broker_pid = broker.proc.pid if broker.proc is not None else None
            redis_url = stack.enter_context(start_redis()).url
        yield base.model_copy(update={
            "kafka_bootstrap": bootstrap, "redis_url": redis_url,
            "topic_prefix": f"bench{tag}.", "redis_prefix": f"bench{tag}",
            "consumer_group": f"bench-{tag}", "fast_rebalance": True, "topic_partitions": 4,
        }), broker_pid


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


def _paced_publisher(settings: Settings, topic: str, rate: float, count: int,
                     first_id: int) -> None:
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
                env = demo_envelope(first_id + i, texts[i % len(texts)],
                                    int(time.time() * 1000))
                await producer.send(topic, env.to_json(), key=env.conversation_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())


async def _latency_phase(settings: Settings, router: BatchRouter, rate: float,
                         first_id: int) -> list[float]:
    """Publish -> decision on omni.routed, in ms, at a fixed rate from another process.

    The publisher runs in a child process so that it does not take CPU from the
    router; the latency of each message is the timestamp of its decision record
    on omni.routed minus the time it was published (``received_at_ms``).
    """
    count = max(LATENCY_MESSAGES, int(rate * LATENCY_SECONDS))
    ids = {demo_envelope(first_id + i, "-", 0).id for i in range(count)}
    target = router.processed + count
    task = asyncio.create_task(router.run())
    child = multiprocessing.get_context("spawn").Process(
        target=_paced_publisher,
        args=(settings, settings.topic(topics.INBOUND), rate, count, first_id),
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
        while len(latencies) < count and time.monotonic() < deadline:
            batch = await watcher.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                for rec in recs:
                    d = orjson.loads(rec.value)
                    if d["message_id"] in ids:
                        latencies.append(float(rec.timestamp - d["received_at_ms"]))
    finally:
        await watcher.stop()
    return latencies


def _quantiles(latencies: list[float]) -> tuple[float, float]:
    latencies = sorted(latencies)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return round(q[49], 2), round(q[98], 2)


def _store(settings: Settings, redis: Any, holder: PipelineHolder) -> RedisQueueStore:
    routing = holder().config.routing
    return RedisQueueStore(redis, Keys(settings.redis_prefix), decision_ttl_s=3600,
                           repeat_window_s=routing.priority.repeat.window_s,
                           sticky_window_s=routing.sticky.window_s)


def _worker_process(settings: Settings, wid: int, status: Any, stop: MpEvent) -> None:
    """Child process: one router worker of the group; reports (worker, routed, partitions
    held, wall time, process CPU seconds) every 20 ms until ``stop``."""

    async def work() -> None:
        redis = connect(settings.redis_url)
        metrics = RouterMetrics(CollectorRegistry())
        holder = PipelineHolder(settings.config_dir, metrics)
        router = BatchRouter(settings, holder, _store(settings, redis, holder), metrics)
        await router.start()
        task = asyncio.create_task(router.run())
        try:
            while not stop.is_set():
                if task.done():
                    task.result()
                status.put((wid, router.processed, len(router.assigned_partitions),
                            time.time(), time.process_time()))
                await asyncio.sleep(0.02)
        finally:
            router.request_stop()
            await task
            await router.stop()
            await redis.aclose()

    asyncio.run(work())


def _proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _redis_counters(redis: Any) -> tuple[float, dict[str, tuple[int, int]]]:
    """Redis CPU seconds (main thread and children) and (calls, usec) per command."""
    info = await redis.info("cpu")
    cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    stats = await redis.info("commandstats")
    per = {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
           for k, v in stats.items() if k.startswith("cmdstat_")}
    return cpu, per


async def _scaling_phase(settings: Settings, workers: int, partitions: int, n: int,
                         broker_pid: int | None, texts: list[str]) -> dict[str, Any]:
    """``workers`` router processes in one group over ``partitions`` partitions, on fresh
    topics: msg/s for ``n`` messages once the group has settled, and CPU per message."""
    tag = uuid.uuid4().hex[:6]
    s = settings.model_copy(update={
        "topic_prefix": f"{settings.topic_prefix}w{workers}{tag}.",
        "consumer_group": f"{settings.consumer_group}-w{workers}{tag}",
        "topic_partitions": partitions,
    })
    await ensure_topics(s, [topics.INBOUND, topics.ROUTED, topics.DEAD_LETTER])
    ctx = multiprocessing.get_context("spawn")
    status = ctx.Queue()
    stop = ctx.Event()
    procs = [ctx.Process(target=_worker_process, args=(s, w, status, stop))
             for w in range(workers)]
    for proc in procs:
        proc.start()
    latest: dict[int, tuple[int, int, int, float, float]] = {}

    async def until(done: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench: {workers} worker(s): {what} not within {timeout_s} s")
            if any(not p.is_alive() for p in procs):
                raise RuntimeError("bench: a router worker process died")
            while not status.empty():
                row = status.get_nowait()
                latest[row[0]] = row
            await asyncio.sleep(0.01)

    def routed() -> int:
        return sum(r[1] for r in latest.values())

    def settled() -> bool:
        if len(latest) < workers:
            return False
        held = [r[2] for r in latest.values()]
        return sum(held) == partitions and (workers > partitions or all(h > 0 for h in held))

    redis = connect(s.redis_url)
    try:
        await until(settled, 180, "every partition assigned")
        now = int(time.time() * 1000)
        warm = [demo_envelope(20_000_000 + i, texts[i % len(texts)], now) for i in range(WARMUP)]
        await _publish(s, s.topic(topics.INBOUND),
                       [(e.conversation_id.encode(), e.to_json()) for e in warm])
        await until(lambda: routed() >= WARMUP, 180, "the warm-up set routed")
        await until(settled, 180, "a settled group after the warm-up")
        envs = [demo_envelope(30_000_000 + i, texts[i % len(texts)], now) for i in range(n)]
        payload = [(e.conversation_id.encode(), e.to_json()) for e in envs]
        base = routed()
        cpu0 = {w: r[4] for w, r in latest.items()}
        redis_cpu0, cmd0 = await _redis_counters(redis)
        broker0 = _proc_cpu_s(broker_pid)
        t0 = time.time()
        await _publish(s, s.topic(topics.INBOUND), payload)
        published_s = time.time() - t0
        await until(lambda: routed() >= base + n, 600, "the measured set routed")
        elapsed = max(r[3] for r in latest.values()) - t0
        broker1 = _proc_cpu_s(broker_pid)
        redis_cpu1, cmd1 = await _redis_counters(redis)
        router_cpu = sum(r[4] - cpu0.get(w, r[4]) for w, r in latest.items())
    finally:
        stop.set()
        for proc in procs:
            await asyncio.to_thread(proc.join, 30)
        await redis.aclose()
    us = 1e6 / n
    scripts = {cmd: round((cmd1[cmd][1] - cmd0.get(cmd, (0, 0))[1]) * 1.0 / n, 2)
               for cmd in cmd1 if cmd.startswith("eval")
               and cmd1[cmd][1] > cmd0.get(cmd, (0, 0))[1]}
    return {
        "workers": workers, "partitions": partitions,
        "msgs_per_s": round(n / elapsed),
        "publish_msgs_per_s": round(n / published_s),
        "cpu_us_per_msg": {
            "router": round(router_cpu * us, 1),
            "redis": round((redis_cpu1 - redis_cpu0) * us, 1),
            "redis_scripts": scripts,
            "broker": round((broker1 - broker0) * us, 1) if broker_pid else None,
        },
    }


async def _bench(settings: Settings, n: int, workers: int, partitions: int,
                 broker_pid: int | None) -> dict[str, Any]:
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
    metrics = RouterMetrics(CollectorRegistry())
    holder = PipelineHolder(settings.config_dir, metrics)
    router = BatchRouter(settings, holder, _store(settings, redis, holder), metrics)
    try:
        await router.start()
        routed = await _router_phase(settings, router, n)
        half = max(100.0, routed / 2)
        fixed = await _latency_phase(settings, router, FIXED_RATE, 10_000_000)
        at_half = await _latency_phase(settings, router, half, 15_000_000)
    finally:
        await router.stop()
        async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=5000):
            await redis.delete(key)
        await redis.aclose()
    p50, p99 = _quantiles(at_half)
    f50, f99 = _quantiles(fixed)
    result: dict[str, Any] = {
        "messages": n,
        "raw_msgs_per_s": round(raw),
        "router_msgs_per_s": round(routed),
        "ratio": round(routed / raw, 3),
        "p50_ms": p50,
        "p99_ms": p99,
        "latency_rate_msgs_per_s": round(half),
        "p50_ms_at_5k": f50,
        "p99_ms_at_5k": f99,
        "batch_max_records": settings.batch_max_records,
    }
    if workers:
        runs = [await _scaling_phase(settings, k, partitions, n, broker_pid, texts)
                for k in sorted({1, workers})]
        result["scaling"] = runs
        result["speedup"] = round(runs[-1]["msgs_per_s"] / runs[0]["msgs_per_s"], 2)
        result["cores"] = os.cpu_count()
    return result


def run_bench(n: int, settings: Settings, *, external: bool = False, workers: int = 0,
              partitions: int = 0) -> dict[str, Any]:
    """Run the benchmark: on an embedded broker and Redis, or on ``settings``' broker and
    Redis when ``external``. With ``workers`` > 0 also the scaling phases: 1 and
    ``workers`` router processes in one group over ``partitions`` (default: max(4,
    workers)) partitions."""
    with _infrastructure(settings, external) as (s, broker_pid):
        return asyncio.run(_bench(s, n, workers, partitions or max(4, workers), broker_pid))
