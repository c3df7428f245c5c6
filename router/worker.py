"""The router worker's hot path: batch consume -> decide -> one Redis script -> produce -> commit.

Per batch (up to ``batch_max_records`` records from ``getmany``):

1. decode each record into an Envelope; a record that fails goes to the
   dead-letter topic with its reason, and the rest of the batch flows on;
2. read per-message facts (tier, prior contacts, sticky group) in one script;
3. decide every message with the active :class:`~router.pipeline.Pipeline`;
4. apply every decision in one atomic script (dedupe + enqueue);
5. produce the decisions (for replays: the decision stored the first time) and
   dead letters, await the broker's acks;
6. only then commit the batch's offsets.

A crash anywhere before 6 replays the batch; step 4 makes the replay a no-op in
Redis, so a message is never lost and never sits in two queues. Redis or broker
failures retry the same batch with backoff instead of skipping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError, SlotNotCoveredError

from ..skills.tagger import TagResult
from . import kafka, topics
from .dead_letter import dead_letter_record
from .exceptions import BrokerUnavailable, InvalidEnvelope, NotStarted
from .lifecycle import Lifecycle
from .metrics import RouterMetrics
from .models import Decision, Envelope
from .pipeline import Pipeline
from .queues import QueueStore, depths_of
from .retry import retrying
from .settings import Settings
from .text import clip

__all__ = ["BatchResult", "BatchRouter", "Prepared"]

log = logging.getLogger(__name__)
MAX_IN_FLIGHT_BATCHES = 2  # decided batches whose effects may be applying at once
MAX_REASON_CHARS = 1000  # a dead letter's reason is cut to this; the record is kept whole
#: What a batch step retries on (with backoff) instead of skipping the batch; a Redis
#: Cluster leaves a slot uncovered for a moment while a replica takes over.
TRANSIENT = (RedisError, SlotNotCoveredError, KafkaError, OSError, BrokerUnavailable)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decided batch whose effects have not been applied yet."""

    records: int
    envelopes: list[Envelope]
    decisions: list[Decision]
    encoded: list[bytes]  # each decision's JSON, encoded once
    dead: list[tuple[ConsumerRecord[bytes, bytes], str]]
    now_ms: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did (for logs, tests and the benchmark)."""

    records: int
    routed: int
    duplicates: int
    dead_letters: int


class BatchRouter(Lifecycle):
    """Consumes omni.inbound in one consumer group; ``start``/``stop`` are idempotent."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Callable[[], Pipeline],
        store: QueueStore,
        metrics: RouterMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._pipeline = pipeline  # called per batch: a reload swaps it between batches
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.inbound = settings.topic(topics.INBOUND)
        self.routed = settings.topic(topics.ROUTED)
        self.dead_letter = settings.topic(topics.DEAD_LETTER)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._depths: dict[str, int] = {}
        self.processed = 0

    async def _start(self) -> None:
        """Connect the producer and the consumer (joins the group)."""
        self._stopping.clear()
        self._producer = kafka.producer(self.settings, batch=True)
        await self._producer.start()
        self._consumer = kafka.consumer(self.settings, self.inbound,
                                        group_id=self.settings.consumer_group)
        await self._consumer.start()

    async def _stop(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        await kafka.stop_clients(consumer, producer)

    async def check_broker(self) -> None:
        """Readiness: the broker answers a metadata request now."""
        consumer = self._consumer
        if consumer is None:
            raise BrokerUnavailable("not connected to Kafka yet")
        await kafka.check_broker(consumer, self.settings)

    async def stop(self) -> None:
        """Stop consuming; the current batch finishes and commits first (see ``run``)."""
        self._stopping.set()  # also when called during start: the stop is not lost
        await super().stop()

    async def publish(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce keyed records (acks=all) with the worker's producer."""
        if self._producer is None:
            raise NotStarted("BatchRouter.publish() needs start() first")
        await kafka.send_acked(self._producer, topic, records, self.settings.produce_timeout_s)

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """Partitions of omni.inbound this worker owns right now."""
        if self._consumer is None:
            return frozenset()
        return frozenset(tp.partition for tp in self._consumer.assignment())

    def request_stop(self) -> None:
        """Ask ``run`` to return after the batch in hand is committed (SIGTERM drain)."""
        self._stopping.set()

    async def refresh_stats(self) -> None:
        """Read queue depth / oldest age into the gauges and the overflow view."""
        stats = await self.store.stats(int(self.clock() * 1000))
        for group, s in stats.items():
            self.metrics.queue_depth.labels(group).set(s.depth)
            self.metrics.queue_oldest_age.labels(group).set(s.oldest_age_s)
        self._depths = depths_of(stats)

    async def run(self) -> None:
        """Consume until ``request_stop``/``stop``; every batch is committed after its effects.

        Batches overlap: while the effects of up to ``MAX_IN_FLIGHT_BATCHES``
        decided batches are applied (Redis script, produce, commit), the next batch
        is decoded and decided. Commits stay in order: a batch commits only after
        the one before it has. If the task running this
        is cancelled (SIGTERM), the batches in hand still finish and commit before
        the cancellation propagates (drain).
        """
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        in_flight: list[asyncio.Future[None]] = []
        try:
            while not self._stopping.is_set():
                batch = await self._poll(consumer)
                if not any(batch.values()):
                    continue
                records = [r for part in batch.values() for r in part]
                prepared = await retrying(partial(self.prepare, records), TRANSIENT,
                                          "batch step prepare")
                while len(in_flight) >= MAX_IN_FLIGHT_BATCHES:
                    await asyncio.shield(in_flight.pop(0))
                offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
                previous = in_flight[-1] if in_flight else None
                in_flight.append(asyncio.ensure_future(
                    self._finish_and_commit(prepared, offsets, previous)))
            for fut in in_flight:
                await asyncio.shield(fut)
        except asyncio.CancelledError:
            for fut in in_flight:
                await fut
            raise
        finally:
            self._stopping.clear()  # a stop request ends this run, not the next one

    async def _poll(
        self, consumer: AIOKafkaConsumer
    ) -> dict[Any, list[ConsumerRecord[bytes, bytes]]]:
        """``getmany``, or nothing once a stop is requested: during a rebalance
        ``getmany`` waits for the new assignment with no timeout of its own."""
        fetch = asyncio.ensure_future(
            consumer.getmany(timeout_ms=250, max_records=self.settings.batch_max_records)
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not fetch.done():
                fetch.cancel()
        if fetch.cancelled() or not fetch.done():
            return {}
        batch: dict[Any, list[ConsumerRecord[bytes, bytes]]] = fetch.result()
        await self._observe_lag(consumer)
        return batch

    async def _observe_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Consumer lag per owned partition: the broker's highwater (as of the last fetch)
        minus this worker's position (the next offset it will read)."""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(KafkaError, AssertionError):  # revoked meanwhile
                position = await consumer.position(tp)
                self.metrics.consumer_lag.labels(str(tp.partition)).set(
                    max(0, highwater - position))

    async def _finish_and_commit(
        self, prepared: Prepared, offsets: dict[Any, int], previous: asyncio.Future[None] | None
    ) -> None:
        await retrying(partial(self.finish, prepared), TRANSIENT, "batch step finish")
        if previous is not None:
            await previous  # commits stay in batch order
        consumer = self._consumer
        if consumer is None:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance took these partitions away: the effects are durable and
            # idempotent, and the new owner replays from the last committed offset.
            log.warning("commit of %d partition(s) failed (%r); the new owner replays them",
                        len(offsets), exc)

    async def prepare(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> Prepared:
        """Steps 1-3: decode, read facts, decide. No effect anywhere yet.

        A record that cannot be decoded, tagged, decided or encoded becomes a dead
        letter with its reason, whatever it raises; the rest of the batch flows on.
        Only the batch-wide facts call can fail the batch (and is retried).
        """
        pipeline = self._pipeline()
        now_ms = int(self.clock() * 1000)
        envelopes: list[Envelope] = []
        sources: list[ConsumerRecord[bytes, bytes]] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for rec in records:
            decoded = _decode(rec)
            if isinstance(decoded, Envelope):
                envelopes.append(decoded)
                sources.append(rec)
            else:
                dead.append((rec, decoded))
        # Tagging needs no Redis: do it while the facts script runs.
        facts_call = asyncio.ensure_future(self.store.facts(envelopes, now_ms))
        tag = pipeline.tagger.tag
        tagged = [_tag_or_none(tag, env) for env in envelopes]
        facts = await facts_call
        decisions: list[Decision] = []
        encoded: list[bytes] = []
        depths = dict(self._depths)  # local view; this batch's own enqueues count too
        for env, fact, rec, tags in zip(envelopes, facts, sources, tagged, strict=True):
            try:
                decision = pipeline.decide(env, now_ms, fact, depths, tags)
                value = decision.to_json()
            except Exception as exc:
                log.exception("cannot decide %r", env)
                dead.append((rec, _reason("decide_failed", exc)))
                continue
            decisions.append(decision)
            encoded.append(value)
            depths[decision.skill_group] = depths.get(decision.skill_group, 0) + 1
        self._depths = depths
        return Prepared(len(records), envelopes, decisions, encoded, dead, now_ms)

    async def finish(self, prepared: Prepared) -> BatchResult:
        """Steps 4-5: the atomic Redis script, then produce decisions and dead letters."""
        producer = self._producer
        if producer is None:
            raise NotStarted("BatchRouter.finish() needs start() first")
        decisions = prepared.decisions
        stored = await self.store.enqueue(decisions, prepared.encoded)
        duplicates = 0
        out: list[tuple[bytes, bytes]] = []
        for decision, value, prior in zip(decisions, prepared.encoded, stored, strict=True):
            if prior is not None:
                duplicates += 1
                value = prior
            out.append((decision.conversation_id.encode(), value))
        dead: list[tuple[bytes, bytes]] = []
        for rec, reason in prepared.dead:
            log.warning("dead-lettering %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset,
                        reason)
            dead.append((rec.key or b"",
                         dead_letter_record(rec, reason, prepared.now_ms, "router")))
        # no deadline of its own: a slow broker times out in aiokafka, and the whole
        # step is retried (its effects are idempotent)
        await asyncio.gather(kafka.send_acked(producer, self.routed, out, None),
                             kafka.send_acked(producer, self.dead_letter, dead, None))
        self._observe(prepared, stored, duplicates)
        self.processed += prepared.records
        return BatchResult(prepared.records, len(decisions) - duplicates, duplicates,
                           len(prepared.dead))

    def _observe(self, prepared: Prepared, stored: Sequence[bytes | None], duplicates: int) -> None:
        """Metrics, only once the effects are durable; counted per label set, not per message."""
        m = self.metrics
        m.batch_size.observe(prepared.records)
        channels = Counter(env.channel.value for env in prepared.envelopes)
        for channel, count in channels.items():
            m.messages_in.labels(channel).inc(count)
        decided: Counter[tuple[str, str]] = Counter()
        overflowed: Counter[str] = Counter()
        latency: dict[str, list[float]] = defaultdict(list)
        for decision, prior in zip(prepared.decisions, stored, strict=True):
            if prior is None:
                decided[(decision.skill_group, decision.priority.band.value)] += 1
                latency[decision.channel.value].append(
                    max(0.0, (decision.decided_at_ms - decision.received_at_ms) / 1000)
                )
                if decision.overflow_from:
                    overflowed[decision.overflow_from] += 1
        for (group, band), count in decided.items():
            m.decisions.labels(group, band).inc(count)
        for channel, values in latency.items():
            histogram = m.decision_latency.labels(channel)
            for value in values:
                histogram.observe(value)
        for group, count in overflowed.items():
            m.overflows.labels(group).inc(count)
        if duplicates:
            m.duplicates.inc(duplicates)
        for reason, count in Counter(r.split(":", 1)[0] for _rec, r in prepared.dead).items():
            m.dead_letters.labels(reason).inc(count)


def _reason(kind: str, exc: BaseException) -> str:
    """A dead-letter reason: ``kind`` (the metric label) first, then what was raised."""
    try:
        detail = str(exc) if isinstance(exc, InvalidEnvelope) else f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception that cannot print itself still gets its type named
        detail = f"{type(exc).__name__} (unprintable)"
    return f"{kind}: {clip(detail, MAX_REASON_CHARS)}"


def _decode(rec: ConsumerRecord[bytes, bytes]) -> Envelope | str:
    """The record's envelope, or the dead-letter reason why there is none."""
    try:
        if rec.value is None:
            raise InvalidEnvelope("empty record (tombstone)")
        return Envelope.from_json(rec.value)
    except InvalidEnvelope as exc:
        return _reason("invalid_envelope", exc)
    except Exception as exc:  # a decoder bug must cost one record, not the partition
        log.exception("cannot decode %s[%d]@%d", rec.topic, rec.partition, rec.offset)
        return _reason("decode_failed", exc)


def _tag_or_none(tag: Callable[[str], TagResult], env: Envelope) -> TagResult | None:
    """Tag ``env``; on failure None, and ``decide`` tags again inside its guard."""
    try:
        return tag(env.text)
    except Exception:
        return None
