"""The router under a Redis outage and a broker outage mid-stream: retry, never skip.

README, "Delivery guarantees": Redis or broker failures retry the same batch with
backoff, they never skip it; a message is never lost and never sits in two queues;
decisions on omni.routed are at-least-once (a replay re-emits the same decision).
Both servers here are the test's own, so taking them away disturbs no other test.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from omniroute.admin import ensure_topics
from omniroute.embedded import EmbeddedProcess, start_broker
from omniroute.router import topics
from omniroute.router.keys import Keys
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.helpers import consume, envelope
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

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(240)]
N = 6_000
# Longer than the fast-rebalance session timeout (6 s): the broker comes back to a
# group whose member it may have expired, so partitions can change hands mid-batch.
BROKER_OUTAGE_S = 8.0



async def backlog(settings: Settings) -> set[bytes]:
    """Produce N envelopes to omni.inbound; return their ids."""
    envs = [envelope(i, TEXTS[i % len(TEXTS)], customer=f"c{i % 300}") for i in range(N)]
    async with EnvelopeProducer(settings) as producer:
        for i in range(0, N, 2000):
            await producer.send_envelopes(envs[i : i + 2000])
    return {e.id.encode() for e in envs}


async def assert_routed_once(settings: Settings, r: redis.Redis, ids: set[bytes]) -> None:
    """Every message in exactly one queue, once; every decision of a message names one group."""
    members = queued(r, Keys(settings.redis_prefix))
    assert len(members) == len(set(members)), "a message was enqueued twice"
    assert set(members) == ids, f"{len(ids - set(members))} message(s) lost"
    routed = await consume(settings.kafka_bootstrap, settings.topic(topics.ROUTED), N, 60)
    groups: dict[bytes, set[str]] = {}
    for rec in routed:
        d = orjson.loads(rec.value)
        groups.setdefault(d["message_id"].encode(), set()).add(d["skill_group"])
    assert set(groups) == ids
    assert all(len(g) == 1 for g in groups.values()), "a message was decided into two groups"


@pytest.fixture
def private_broker() -> Iterator[EmbeddedProcess]:
    with start_broker() as server:
        try:
            yield server
        finally:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)  # never leave it frozen


async def test_redis_outage_mid_stream_loses_nothing_and_enqueues_nothing_twice(
    topics_ready: Settings, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    settings = topics_ready.model_copy(update={"redis_url": server.url})
    keys = Keys(settings.redis_prefix)
    r = redis.Redis.from_url(server.url, socket_timeout=5)
    log = tmp_path / "worker.log"
    try:
        ids = await backlog(settings)
        worker = start_worker(worker_env(settings, OMNI_BATCH_MAX_RECORDS="200"), log)
        try:
            wait_for(lambda: len(queued(r, keys)) >= N // 10, 90, worker, log, "routing")
            server.kill()  # Redis goes away mid-stream
            wait_for(lambda: "retrying in" in log.read_text(), 30, worker, log,
                     "the worker to retry its batch")
            r.close()
            server.start()  # back on the same port, with what it had acknowledged
            wait_for(lambda: len(queued(r, keys)) >= N, 120, worker, log, "the rest")
        finally:
            code = stop_worker(worker)
        assert code == 0, log.read_text()[-3000:]
        assert len(queued(r, keys)) == N
        await assert_routed_once(settings, r, ids)
    finally:
        r.close()
        server.stop()


async def test_broker_outage_mid_stream_loses_nothing_and_enqueues_nothing_twice(
    settings: Settings, private_broker: EmbeddedProcess, sync_redis: redis.Redis,
    aredis: AsyncRedis, tmp_path: Path,  # aredis: this test's keys are deleted afterwards
) -> None:
    # The embedded Tansu keeps topics in memory: a restart would lose them, so the
    # outage is a freeze (SIGSTOP) of the broker process: connections stay open and
    # every request goes unanswered, then SIGCONT.
    assert private_broker.proc is not None
    settings = settings.model_copy(update={"kafka_bootstrap": private_broker.url})
    await ensure_topics(settings)
    keys = Keys(settings.redis_prefix)
    port = int(private_broker.url.rsplit(":", 1)[1])
    log = tmp_path / "worker.log"
    ids = await backlog(settings)
    worker = start_worker(worker_env(settings, OMNI_BATCH_MAX_RECORDS="200"), log)
    try:
        wait_for(lambda: len(queued(sync_redis, keys)) >= N // 10, 90, worker, log, "routing")
        os.kill(private_broker.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: unread_request_bytes(port) > 0, 10, worker, log,
                     "the worker waiting on the broker")
            time.sleep(BROKER_OUTAGE_S)  # the outage's length, not a synchronisation
            during = len(queued(sync_redis, keys))
        finally:
            os.kill(private_broker.proc.pid, signal.SIGCONT)
        assert during < N, "the backlog was routed before the outage; the test proves nothing"
        wait_for(lambda: len(queued(sync_redis, keys)) >= N, 120, worker, log, "the rest")
    finally:
        code = stop_worker(worker)
    assert code == 0, log.read_text()[-3000:]
    await assert_routed_once(settings, sync_redis, ids)
