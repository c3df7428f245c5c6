"""SIGKILL the worker process mid-stream, restart it: every message in exactly one queue, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis

from omniroute.embedded import free_port
from omniroute.router import topics
from omniroute.router.keys import Keys
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.helpers import consume_to_end, envelope
from tests.servers import TEXTS, queued

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
MINI = Path(__file__).parent / "data" / "mini"
N = 20_000


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "REDIS_URL": settings.redis_url,
        "OMNI_TOPIC_PREFIX": settings.topic_prefix,
        "OMNI_REDIS_PREFIX": settings.redis_prefix,
        "OMNI_CONSUMER_GROUP": settings.consumer_group,
        "OMNI_CONFIG_DIR": str(MINI),
        "OMNI_FAST_REBALANCE": "1",
        "OMNI_WORKER_WEB_PORT": str(free_port()),
        "OMNI_BATCH_MAX_RECORDS": "100",
    }
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "omniroute", "worker", "--loglevel", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )



def _wait(pred: object, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]  # a zero-argument callable
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


async def test_sigkill_mid_stream_loses_nothing_and_assigns_nothing_twice(
    topics_ready: Settings, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    settings = topics_ready
    keys = Keys(settings.redis_prefix)
    envs = [envelope(i, TEXTS[i % len(TEXTS)], customer=f"c{i % 500}") for i in range(N)]
    async with EnvelopeProducer(settings) as producer:
        for i in range(0, N, 2000):
            await producer.send_envelopes(envs[i : i + 2000])
    log = tmp_path / "worker.log"

    first = _worker(settings, log)
    try:
        _wait(lambda: len(queued(sync_redis, keys)) >= N // 10, 60, first, log)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    at_kill = len(queued(sync_redis, keys))
    assert at_kill < N, "the worker finished before the kill; the test proves nothing"

    second = _worker(settings, log)
    try:
        _wait(lambda: len(queued(sync_redis, keys)) >= N, 90, second, log)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]

    members = queued(sync_redis, keys)
    assert len(members) == N, f"{len(members) - N} extra queue entries"
    assert set(members) == {e.id.encode() for e in envs}
    # every record up to the end offsets (replays after the kill included), not just the
    # first N: a message decided again into another group at the tail must be seen
    routed = await consume_to_end(settings.kafka_bootstrap, settings.topic(topics.ROUTED))
    decided: dict[str, set[str]] = {}
    for rec in routed:
        d = orjson.loads(rec.value)
        decided.setdefault(d["message_id"], set()).add(d["skill_group"])
    assert len(decided) == N
    assert all(len(g) == 1 for g in decided.values()), "a message was decided into two groups"
