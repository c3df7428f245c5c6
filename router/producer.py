"""The one way adapters hand envelopes to Kafka: acks=all, awaited, or an error.

An adapter acknowledges its channel only after ``send_envelopes`` returned; if
the broker does not acknowledge within ``produce_timeout_s`` it raises
:class:`~router.exceptions.BrokerUnavailable` and the adapter answers with a
retryable status (HTTP 503, SMTP 451), so the channel re-delivers.

It is also the one place PII masking cannot be skipped: ``send_envelopes`` masks
every envelope (:func:`router.pii.mask_envelope`) before it is encoded, whichever
ingest path built it (generic API, WeChat, WeCom, Douyin, phone, SMTP, IMAP).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from . import kafka, topics
from .exceptions import BrokerUnavailable
from .lifecycle import Lifecycle
from .metrics import AdapterMetrics
from .models import Envelope
from .pii import mask_envelope
from .settings import Settings

__all__ = ["EnvelopeProducer", "EnvelopeSink"]


class EnvelopeSink(Protocol):
    """What an adapter needs from the producer (tests may hand in their own)."""

    async def send_envelopes(
        self, envelopes: Sequence[Envelope], *, timeout_s: float | None = None
    ) -> None:
        """Produce to omni.inbound and wait for the broker's acknowledgement.

        ``timeout_s`` shortens the deadline of the call (the producer's own is
        ``produce_timeout_s``); past it the call raises BrokerUnavailable.
        """

    async def send_records(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], *,
        timeout_s: float | None = None,
    ) -> None:
        """Produce (key, value) records to ``topic`` (full name) and wait for acks,
        within ``timeout_s`` as for ``send_envelopes``."""


class EnvelopeProducer(Lifecycle):
    """aiokafka producer with acks=all; ``start``/``stop`` are idempotent.

    Args:
        settings: Bootstrap servers, produce timeout, topic prefix.
        metrics: Where values masked here are counted (``omni_adapter_pii_masked_total``
            by envelope channel); the HTTP context binds its own when none is given.
    """

    def __init__(self, settings: Settings, metrics: AdapterMetrics | None = None) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self.inbound_topic = settings.topic(topics.INBOUND)
        self.metrics = metrics
        self._connecting: asyncio.Future[None] | None = None

    async def _start(self) -> None:
        """Connect to the broker (retried lazily by ``send_*`` if this fails)."""
        producer = kafka.producer(self._settings)
        try:
            await asyncio.wait_for(producer.start(), self._settings.produce_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await producer.stop()
            raise BrokerUnavailable(
                f"Kafka at {self._settings.kafka_bootstrap} is unreachable ({exc!r}); "
                "retry later"
            ) from exc
        self._producer = producer  # only now: senders use it once it is connected

    async def _stop(self) -> None:
        """Flush and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    @property
    def connected(self) -> bool:
        """True once the producer has bootstrapped."""
        return self.running

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self.start()
        producer = self._producer
        if producer is None:  # stopped meanwhile
            raise BrokerUnavailable("the producer was stopped; retry later")
        return producer

    async def check(self) -> None:
        """Readiness: connect if needed, then ask the broker for metadata now.

        Raises:
            BrokerUnavailable: the broker does not answer within the produce timeout.
        """
        await kafka.check_broker(await self._started(), self._settings)

    def mask(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Every envelope PII-masked (counted in ``metrics`` when set)."""
        out = []
        for env in envelopes:
            masked, result = mask_envelope(env)
            if result.counts and self.metrics is not None:
                for kind, n in result.counts.items():
                    self.metrics.pii_masked.labels(env.channel.value, kind).inc(n)
            out.append(masked)
        return out

    async def send_envelopes(
        self, envelopes: Sequence[Envelope], *, timeout_s: float | None = None
    ) -> None:
        """Mask PII, produce every envelope (key = conversation id) and await all acks."""
        await self.send_records(
            self.inbound_topic,
            [(e.conversation_id.encode(), e.to_json()) for e in self.mask(envelopes)],
            timeout_s=timeout_s,
        )

    def _connect(self) -> asyncio.Future[None]:
        """One connect attempt, shared by every sender that waits for it."""
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.ensure_future(self.start())
            task.add_done_callback(_retrieve)
        return task

    async def send_records(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], *,
        timeout_s: float | None = None,
    ) -> None:
        """Produce records and await every acknowledgement, or raise BrokerUnavailable.

        One deadline, ``produce_timeout_s`` or the caller's shorter ``timeout_s`` (a
        channel whose platform gives up sooner), covers the whole call: waiting for the
        connection (a connect in progress goes on in the background past it), then
        metadata, queueing and every acknowledgement. A timeout does not mean the
        records are not written: the producer may still deliver them, which is why
        the channels retry with the same message id and the dedupe drops repeats.
        """
        if not records:
            return
        limit_s = self._settings.produce_timeout_s
        timeout_s = limit_s if timeout_s is None else min(timeout_s, limit_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._producer is None:
            try:
                await asyncio.wait_for(asyncio.shield(self._connect()), timeout_s)
            except TimeoutError as exc:
                raise BrokerUnavailable(
                    f"Kafka at {self._settings.kafka_bootstrap} did not answer within "
                    f"{timeout_s:g} s; retry later"
                ) from exc
        await kafka.send_acked(
            await self._started(), topic, records, max(deadline - loop.time(), 0.0)
        )


def _retrieve(task: asyncio.Future[None]) -> None:
    """A connect nobody waits for any more must not log 'exception never retrieved'."""
    if not task.cancelled():
        task.exception()
