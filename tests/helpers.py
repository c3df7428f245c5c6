"""Test helpers: consume from a topic with a deadline or up to its end, build envelopes,
check the JSON error form of a refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import ClientResponse
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from omniroute.router.models import Channel, Customer, Envelope, Order, message_id


async def consume(
    bootstrap: str, topic: str, n: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read at least ``n`` records from the start of ``topic`` or fail at the deadline."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    assert len(out) >= n, f"only {len(out)} of {n} records on {topic} within {timeout_s} s"
    return out


async def consume_to_end(
    bootstrap: str, topic: str, timeout_s: float = 60.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, all partitions, up to its end. Call it once the producers
    are done; fails at the deadline.

    For exact counts: unlike ``consume``, which stops once it holds at least ``n``, this
    reads until each partition's position reaches its end, so a duplicate at the tail is
    read too. The end of a partition is the larger of ``end_offsets`` and the high-water
    mark of the fetch answers: the embedded broker answers ``end_offsets`` (ListOffsets,
    latest) with the first offset of the last record batch, short of the real end, while
    its fetch answers carry the true high-water mark.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer.topics()  # fetch the metadata
        parts = consumer.partitions_for_topic(topic) or set()
        assert parts, f"no partitions for {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        listed: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s

        async def behind() -> list[TopicPartition]:
            lagging = []
            for tp in tps:
                highwater = consumer.highwater(tp)  # None until a fetch answered for tp
                end = max(listed[tp], highwater if highwater is not None else 0)
                if highwater is None or await consumer.position(tp) < end:
                    lagging.append(tp)
            return lagging

        while lagging := await behind():
            assert time.monotonic() < deadline, (
                f"{topic}: partitions {[tp.partition for tp in lagging]} not read to their "
                f"end within {timeout_s} s ({len(out)} records read)")
            batch = await consumer.getmany(*lagging, timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


async def eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``check`` until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


def envelope(
    n: int,
    text: str,
    *,
    customer: str | None = None,
    channel: Channel = Channel.APP,
    received_at_ms: int = 1_700_000_000_000,
    amount: float | None = None,
    tier: str | None = None,
    conversation: str | None = None,
) -> Envelope:
    """A valid envelope numbered ``n``."""
    cust = customer or f"cust-{n}"
    return Envelope(
        id=message_id(channel, "test", str(n)),
        channel=channel,
        account="test",
        channel_msg_id=str(n),
        conversation_id=conversation or f"conv-{cust}",
        customer=Customer(cust, tier=tier),
        text=text,
        received_at_ms=received_at_ms + n,
        order=Order(f"o{n}", amount) if amount is not None else None,
    )


async def json_error(resp: ClientResponse, reasons: dict[str, int]) -> str:
    """The refusal is JSON ``{"error", "message"}`` with a known reason and its status;
    return the reason."""
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    body = await resp.json()
    assert set(body) == {"error", "message"}, body
    assert reasons.get(body["error"]) == resp.status, (resp.status, body)
    assert isinstance(body["message"], str)
    assert body["message"]
    return str(body["error"])
