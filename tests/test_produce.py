"""Keyed batch produce lands each key on the partition the default partitioner picks."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from omniroute.router import topics
from omniroute.router.produce import produce_keyed
from omniroute.router.settings import Settings
from tests.helpers import consume

pytestmark = pytest.mark.integration


async def test_same_partition_as_a_plain_send(topics_ready: Settings) -> None:
    topic = topics_ready.topic(topics.ROUTED)
    keys = [f"conv-{i}".encode() for i in range(40)]
    producer = AIOKafkaProducer(bootstrap_servers=topics_ready.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        plain = {k: (await producer.send_and_wait(topic, b"plain", key=k)).partition for k in keys}
        await produce_keyed(producer, topic, [(k, b"batched-%d" % i) for i, k in enumerate(keys)])
    finally:
        await producer.stop()
    records = await consume(topics_ready.kafka_bootstrap, topic, 80)
    batched = {r.key: r.partition for r in records if r.value.startswith(b"batched")}
    assert batched == plain
    assert len(set(plain.values())) > 1, "keys should spread over partitions"
    # order within a key's partition is the order given
    values = [r.value for r in records if r.value.startswith(b"batched")]
    by_partition: dict[int, list[int]] = {}
    for r in records:
        if r.value.startswith(b"batched"):
            by_partition.setdefault(r.partition, []).append(int(r.value.split(b"-")[1]))
    assert all(v == sorted(v) for v in by_partition.values())
    assert len(values) == 40
