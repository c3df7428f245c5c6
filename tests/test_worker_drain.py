"""SIGTERM while a batch is in hand: the batch finishes and commits, nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from omniroute.router import topics
from omniroute.router.keys import Keys
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.helpers import consume_to_end, envelope
from tests.servers import (
    TEXTS,
    PrivateRedis,
    queued,
    start_worker,
    stop_worker,
    unread_request_bytes,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
N = 20_000



async def committed(settings: Settings) -> int:
    """Sum of the router group's committed offsets on omni.inbound: records it is done with."""
    topic = settings.topic(topics.INBOUND)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.consumer_group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetch the metadata
        parts = consumer.partitions_for_topic(topic) or set()
        assert parts, f"no partitions for {topic}"
        total = 0
        for p in parts:
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def test_sigterm_mid_batch_commits_the_batch_and_a_restart_routes_nothing_twice(
    topics_ready: Settings, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    settings = topics_ready.model_copy(update={"redis_url": server.url})
    keys = Keys(settings.redis_prefix)
    r = redis.Redis.from_url(server.url)
    log = tmp_path / "worker.log"
    try:
        envs = [envelope(i, TEXTS[i % len(TEXTS)], customer=f"c{i % 500}") for i in range(N)]
        async with EnvelopeProducer(settings) as producer:
            for i in range(0, N, 2000):
                await producer.send_envelopes(envs[i : i + 2000])
        env = worker_env(settings, OMNI_BATCH_MAX_RECORDS="500")

        first = start_worker(env, log, loglevel="info")
        try:
            wait_for(lambda: len(queued(r, keys)) >= N // 10, 90, first, log, "routing")
            # Freeze Redis while the backlog flows: the worker's next script call (facts
            # or enqueue of a batch it holds) waits unanswered. Signal it right then.
            server.pause()
            try:
                wait_for(lambda: unread_request_bytes(server.port) > 0, 10, first, log,
                         "the worker waiting on Redis")
                os.killpg(first.pid, signal.SIGTERM)
                wait_for(lambda: "Signal received: 15" in log.read_text(), 10,
                         first, log, "the signal to be handled")
            finally:
                server.resume()
        finally:
            code = stop_worker(first)
        assert code == 0, log.read_text()[-3000:]
        at_stop = queued(r, keys)
        assert N // 10 <= len(at_stop) < N, "the backlog was not mid-way at the signal"
        assert len(set(at_stop)) == len(at_stop), "a message sits in two queues"
        # the batch in hand finished: what is in Redis is exactly what was committed
        assert await committed(settings) == len(at_stop)
        # every record up to the end offsets: a doubled decision at the tail is counted too
        routed = await consume_to_end(settings.kafka_bootstrap, settings.topic(topics.ROUTED))
        assert len(routed) == len(at_stop)

        second = start_worker(env, log)
        try:
            wait_for(lambda: len(queued(r, keys)) >= N, 90, second, log, "the rest")
        finally:
            code = stop_worker(second)
        assert code == 0, log.read_text()[-3000:]
        members = queued(r, keys)
        assert len(members) == N, f"{len(members) - N} extra queue entries"
        assert set(members) == {e.id.encode() for e in envs}
        assert await committed(settings) == N
        # the restarted worker replayed nothing: one decision per message on omni.routed
        routed = await consume_to_end(settings.kafka_bootstrap, settings.topic(topics.ROUTED))
        ids = [orjson.loads(rec.value)["message_id"] for rec in routed]
        assert len(ids) == len(set(ids)) == N
    finally:
        r.close()
        server.stop()
