"""Helpers shared by the SLA and agent API tests (no tests here; named to stay in test_sla_*)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from omniroute.router.keys import Keys
from omniroute.router.models import Band, Channel, Decision, Priority, TagHit
from omniroute.router.queues import RedisQueueStore
from omniroute.router.settings import Settings, default_config_dir
from omniroute.skills.config import load_config

# 2026-11-25 10:00:00 Asia/Shanghai (a Wednesday, a working day, inside the morning shift)
T0_MS = 1_795_572_000_000


class FakeClock:
    """A controllable wall clock (seconds); tests advance it by hand."""

    def __init__(self, start_ms: int = T0_MS) -> None:
        self.t = start_ms / 1000

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def ms(self) -> int:
        return round(self.t * 1000)


def decision(
    n: int | str,
    *,
    conv: str | None = None,
    group: str = "general",
    band: Band = Band.P2,
    channel: Channel = Channel.WECHAT,
    received_ms: int = T0_MS,
    tags: Sequence[str] = (),
) -> Decision:
    """A routing decision as the router worker would produce it."""
    return Decision(
        message_id=f"m-{n}",
        conversation_id=conv or f"c-{n}",
        channel=channel,
        customer_id=f"cust-{n}",
        tags=tuple(TagHit(t, ()) for t in tags),
        priority=Priority(50.0, band, ("test",)),
        skill_group=group,
        queue=group,
        rule_id="test",
        config_version="test",
        received_at_ms=received_ms,
        decided_at_ms=received_ms + 5,
    )


async def enqueue(redis: Redis, keys: Keys, decisions: Sequence[Decision]) -> None:
    """Put decisions in Redis the way the router worker does: through its own enqueue
    script (decision hash, queue member, groups set, conversation hash, TTLs), with the
    router's default decision TTL and the shipped configuration's windows. A change of
    key layout on either side then breaks the tests that build on this."""
    routing = load_config(default_config_dir()).routing
    store = RedisQueueStore(
        redis, keys,
        decision_ttl_s=Settings.model_fields["decision_ttl_s"].default,
        repeat_window_s=routing.priority.repeat.window_s,
        sticky_window_s=routing.sticky.window_s,
    )
    earlier = await store.enqueue(decisions, [d.to_json() for d in decisions])
    assert earlier == [None] * len(decisions), "a decision was already in Redis"


async def poll(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Wait until ``predicate()`` is true, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


async def consume_json(
    bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 15.0,
) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning until ``until(records)`` holds (or time out)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not until(out):
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(out)} record(s) on {topic}: {out}")
            batch = await consumer.getmany(timeout_ms=200)
            out += [orjson.loads(r.value) for recs in batch.values() for r in recs]
    finally:
        await consumer.stop()
    return out
