"""The embedded broker and Redis used by every integration test really work."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from omniroute.router import topics
from omniroute.router.settings import Settings

pytestmark = pytest.mark.integration


async def test_broker_round_trip(topics_ready: Settings) -> None:
    topic = topics_ready.topic(topics.INBOUND)
    producer = AIOKafkaProducer(bootstrap_servers=topics_ready.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=topics_ready.kafka_bootstrap, auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=5000)
        values = [r.value for recs in got.values() for r in recs]
    finally:
        await consumer.stop()
    assert values == [b"hello"]


async def test_redis_answers(aredis: Redis, settings: Settings) -> None:
    await aredis.set(f"{settings.redis_prefix}:probe", "1")
    assert await aredis.get(f"{settings.redis_prefix}:probe") == b"1"
