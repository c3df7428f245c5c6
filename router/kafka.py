"""Kafka clients, written once: how every process builds its producers and consumers,
and the acknowledged send.

- :func:`producer`: acks=all (idempotence when ``OMNI_KAFKA_IDEMPOTENCE``); the
  default profile answers a channel fast, ``batch=True`` is the router's
  throughput profile.
- :func:`consumer`: one consumer group, offsets committed by hand after a batch's
  effects, from the earliest offset, group membership per :func:`group_membership`.
- :func:`stop_clients`: the teardown of a worker's consumer and producer.
- :func:`send_acked`: produce keyed records and await every acknowledgement, or
  raise :class:`~router.exceptions.BrokerUnavailable`. Records go out as one batch
  per partition instead of one ``send`` per record (``send`` costs several
  microseconds of Python per record), with the same key -> partition mapping as
  the default partitioner (murmur2, like the Java client): a conversation's records
  stay in order on one partition.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from .exceptions import BrokerUnavailable
from .settings import Settings

__all__ = [
    "check_broker",
    "consumer",
    "faust_group_membership",
    "group_membership",
    "producer",
    "send_acked",
    "stop_clients",
]

MAX_FETCH_BYTES = 64 * 1024 * 1024  # one fetch response
MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024  # one partition's share of it
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # one produce request (a Douyin push is up to 1 MiB)
BATCH_BYTES = 1_048_576  # the router's record batches (the default is 16 KiB)

# murmur2 is pure Python in aiokafka (~4 us); conversation keys repeat, so remember them.
_hash = functools.lru_cache(maxsize=65_536)(murmur2)


def _membership_s(settings: Settings) -> tuple[float, float, float]:
    """(session, rebalance, heartbeat) seconds: the settings, or the shortest for tests."""
    if settings.fast_rebalance:
        return 6.0, 3.0, 1.0
    return (settings.kafka_session_timeout_s, settings.kafka_rebalance_timeout_s,
            settings.kafka_heartbeat_interval_s)


def group_membership(settings: Settings) -> dict[str, Any]:
    """aiokafka's group options: timeouts and static membership (README, "Operations").

    Every figure of a rebalance scales with the session timeout on the embedded
    broker (Kafka's 45 s default made a restart take over two minutes), and a dead
    worker is noticed only after it. Heartbeats run on their own task, ten per
    session by default, so a late one does not evict a live worker.
    """
    session_s, rebalance_s, heartbeat_s = _membership_s(settings)
    return {"session_timeout_ms": int(session_s * 1000),
            "rebalance_timeout_ms": int(rebalance_s * 1000),
            "heartbeat_interval_ms": int(heartbeat_s * 1000),
            "group_instance_id": settings.group_instance_id}


def faust_group_membership(settings: Settings) -> dict[str, Any]:
    """The same for the faust ``App``'s own consumer (seconds).

    Its group is joined before the router starts: with faust's defaults the broker
    held that first JoinGroup for about half a minute.
    """
    session_s, rebalance_s, heartbeat_s = _membership_s(settings)
    return {"broker_session_timeout": session_s,
            "broker_rebalance_timeout": rebalance_s,
            "broker_heartbeat_interval": heartbeat_s,
            "consumer_group_instance_id": settings.group_instance_id}


def producer(settings: Settings, *, batch: bool = False, **overrides: Any) -> AIOKafkaProducer:
    """A producer (not started) with acks=all.

    Args:
        settings: Bootstrap servers, idempotence, produce timeout.
        batch: The router's throughput profile (5 ms linger, 1 MiB batches, aiokafka's
            request timeout). Otherwise the edge profile: 2 ms linger, requests time
            out after ``produce_timeout_s``.
        overrides: Any other aiokafka option (the benchmark's unbatched publisher).
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
    }
    if batch:
        options.update(linger_ms=5, max_batch_size=BATCH_BYTES)
    else:
        options.update(linger_ms=2, max_request_size=MAX_REQUEST_BYTES,
                       request_timeout_ms=int(settings.produce_timeout_s * 1000))
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer (not started) of ``topics`` (full names) in ``group_id``.

    Offsets are committed by the caller after a batch's effects (at-least-once);
    a new group starts at the earliest offset. Fetches are sized for batches of
    ``batch_max_records`` and wait at most ``fetch_max_wait_ms``.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.batch_max_records,
        "fetch_max_bytes": MAX_FETCH_BYTES,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
    }
    if group_id is not None:
        options.update(group_membership(settings))
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def check_broker(client: AIOKafkaProducer | AIOKafkaConsumer, settings: Settings) -> None:
    """Readiness: the broker answers a metadata request within ``produce_timeout_s``.

    Raises:
        BrokerUnavailable: it does not.
    """
    inner = client.client if isinstance(client, AIOKafkaProducer) else client._client
    try:
        await asyncio.wait_for(inner.fetch_all_metadata(), settings.produce_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"Kafka at {settings.kafka_bootstrap} does not answer ({exc!r})"
        ) from exc


async def stop_clients(
    consumer: AIOKafkaConsumer | None, producer: AIOKafkaProducer | None
) -> None:
    """Stop a worker's clients, either of which may be None (never started).

    The consumer goes first: it stops fetching and leaves its group, so its
    partitions move on; then the producer flushes what is still buffered. The
    producer is stopped even when stopping the consumer fails.
    """
    try:
        if consumer is not None:
            await consumer.stop()
    finally:
        if producer is not None:
            await producer.stop()


async def send_acked(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    timeout_s: float | None,
) -> None:
    """Produce (key, value) records to ``topic`` and await every acknowledgement.

    Args:
        producer: A started producer.
        topic: The full topic name.
        records: Keyed records; one key's records keep their order.
        timeout_s: Deadline for all acknowledgements; None waits for the producer's
            own request timeout (the router retries a whole batch anyway).

    Raises:
        BrokerUnavailable: the broker did not acknowledge in time, or refused.
    """
    if not records:
        return
    try:
        await asyncio.wait_for(_send_batches(producer, topic, records), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"Kafka did not acknowledge {len(records)} record(s) on {topic} ({exc!r}); "
            "retry later"
        ) from exc


async def _send_batches(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> None:
    partitions = sorted(await producer.partitions_for(topic))
    count = len(partitions)
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        p = partitions[(_hash(key) & 0x7FFFFFFF) % count]
        by_partition.setdefault(p, []).append((key, value))
    futures: list[Any] = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            # a full batch refuses the record (the first record of a batch always fits)
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    for future in futures:
        # after the caller's deadline the batch may still fail; that was already
        # answered (503), so its late error must not be logged as never retrieved
        future.add_done_callback(_retrieve)
    await asyncio.gather(*futures)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
