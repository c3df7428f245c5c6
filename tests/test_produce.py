"""The one acknowledged send: keyed batches land where the default partitioner puts
each key, in order; a broker that does not acknowledge is a BrokerUnavailable."""

from __future__ import annotations

import pytest

from omniroute.admin import ensure_topics
from omniroute.embedded import start_broker
from omniroute.router import kafka, topics
from omniroute.router.exceptions import BrokerUnavailable
from omniroute.router.settings import Settings
from tests.helpers import consume

pytestmark = pytest.mark.integration


async def test_same_partition_as_a_plain_send(topics_ready: Settings) -> None:
    topic = topics_ready.topic(topics.ROUTED)
    keys = [f"conv-{i}".encode() for i in range(40)]
    producer = kafka.producer(topics_ready)
    await producer.start()
    try:
        plain = {k: (await producer.send_and_wait(topic, b"plain", key=k)).partition for k in keys}
        await kafka.send_acked(producer, topic,
                               [(k, b"batched-%d" % i) for i, k in enumerate(keys)], 5.0)
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


async def test_records_larger_than_a_batch_go_out_whole(topics_ready: Settings) -> None:
    topic = topics_ready.topic(topics.CHATTER)
    big = [(b"room-%d" % i, bytes([65 + i]) * 40_000) for i in range(3)]  # > 16 KiB batches
    producer = kafka.producer(topics_ready)
    await producer.start()
    try:
        await kafka.send_acked(producer, topic, big, 5.0)
    finally:
        await producer.stop()
    records = await consume(topics_ready.kafka_bootstrap, topic, 3)
    assert sorted((r.key, r.value) for r in records) == big


async def test_a_broker_that_went_away_is_broker_unavailable(settings: Settings) -> None:
    with start_broker() as server:
        own = settings.model_copy(update={"kafka_bootstrap": server.url})
        await ensure_topics(own, [topics.ROUTED])
        producer = kafka.producer(own)
        await producer.start()
        try:
            topic = own.topic(topics.ROUTED)
            await kafka.send_acked(producer, topic, [(b"k", b"before")], 5.0)
            server.stop()
            with pytest.raises(BrokerUnavailable, match=r"1 record\(s\) on .*omni\.routed"):
                await kafka.send_acked(producer, topic, [(b"k", b"after")], 1.0)
        finally:
            await producer.stop()
