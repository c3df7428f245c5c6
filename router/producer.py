"""The one way adapters hand envelopes to Kafka: acks=all, awaited, or an error.

An adapter acknowledges its channel only after ``send_envelopes`` returned; if
the broker does not acknowledge within ``produce_timeout_s`` it raises
:class:`~router.exceptions.BrokerUnavailable` and the adapter answers with a
retryable status (HTTP 503, SMTP 451), so the channel re-delivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from . import topics
from .exceptions import BrokerUnavailable
from .models import Envelope
from .settings import Settings

__all__ = ["EnvelopeProducer", "EnvelopeSink"]


class EnvelopeSink(Protocol):
    """What an adapter needs from the producer (tests may hand in their own)."""

    async def send_envelopes(self, envelopes: Sequence[Envelope]) -> None:
        """Produce to omni.inbound and wait for the broker's acknowledgement."""

    async def send_records(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce (key, value) records to ``topic`` (full name) and wait for acks."""


class EnvelopeProducer:
    """aiokafka producer with acks=all; ``start``/``stop`` are idempotent."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.inbound_topic = settings.topic(topics.INBOUND)

    async def start(self) -> None:
        """Connect to the broker (retried lazily by ``send_*`` if this fails)."""
        async with self._lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=self._settings.kafka_idempotence,
                linger_ms=2,
                request_timeout_ms=int(self._settings.produce_timeout_s * 1000),
                max_request_size=4 * 1024 * 1024,
            )
            try:
                await asyncio.wait_for(producer.start(), self._settings.produce_timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                await producer.stop()
                raise BrokerUnavailable(
                    f"Kafka at {self._settings.kafka_bootstrap} is unreachable ({exc!r}); "
                    "retry later"
                ) from exc
            self._producer = producer

    async def stop(self) -> None:
        """Flush and disconnect."""
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()

    async def __aenter__(self) -> EnvelopeProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        """True once the producer has bootstrapped."""
        return self._producer is not None

    async def check(self) -> None:
        """Readiness: connect if needed, then ask the broker for metadata now.

        Raises:
            BrokerUnavailable: the broker does not answer within the produce timeout.
        """
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        try:
            await asyncio.wait_for(
                producer.client.fetch_all_metadata(), self._settings.produce_timeout_s
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"Kafka at {self._settings.kafka_bootstrap} does not answer ({exc!r})"
            ) from exc

    async def send_envelopes(self, envelopes: Sequence[Envelope]) -> None:
        """Produce every envelope (key = conversation id) and await all acks."""
        await self.send_records(
            self.inbound_topic,
            [(e.conversation_id.encode(), e.to_json()) for e in envelopes],
        )

    async def send_records(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce records and await every acknowledgement, or raise BrokerUnavailable."""
        if not records:
            return
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in records]
            await asyncio.wait_for(asyncio.gather(*futures), self._settings.produce_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"Kafka did not acknowledge {len(records)} record(s) on {topic} ({exc!r}); "
                "retry later"
            ) from exc
