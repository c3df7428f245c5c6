"""Test helpers: consume from a topic with a deadline, build envelopes, check the JSON
error form of a refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import ClientResponse
from aiokafka import AIOKafkaConsumer, ConsumerRecord

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
