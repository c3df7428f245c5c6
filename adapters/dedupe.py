"""Adapter-side deduplication of channel retries (Redis ``SET NX`` with a TTL).

Order of operations, in every adapter::

    seen?  -> yes: answer the channel "ok", count a duplicate, produce nothing
           -> no:  produce (acks=all) -> mark -> answer the channel

A message is marked only *after* the broker acknowledged it, so a crash or a
broker failure between "seen?" and "mark" never loses a message: the channel
retries, the key is absent, the message is produced again. The price is an
occasional duplicate on Kafka (two concurrent retries, or a crash after the ack
but before the mark); the router deduplicates those by envelope id, which is
derived from channel + account + channel message id (``router.models.message_id``).

Redis trouble never blocks ingest: if Redis does not answer, ``seen`` says
"not seen" and ``mark`` gives up quietly (both log a warning); the router's own
dedupe is the backstop.

Keys: ``Keys.adapter_dedupe(channel, id)``. The adapters pass the envelope id
(``message_id(channel, account, channel_msg_id)``) as ``id``, so two accounts
of one channel never collide. One key per message, so a batch touches many
hash slots: the batch forms use a non-transactional pipeline, which redis-py's
cluster client splits per node.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..router.keys import Keys
from ..router.models import Envelope
from ..router.producer import EnvelopeSink

__all__ = ["DEFAULT_DEDUPE_TTL_S", "Deduper", "Produced", "produce_once"]

log = logging.getLogger(__name__)

#: How long a produced channel message id is remembered. WeChat retries within
#: ~15 s, Douyin re-pushes within minutes; a day covers slow replays too.
DEFAULT_DEDUPE_TTL_S: Final = 86_400


class Deduper:
    """Remembers which channel messages an adapter has already produced.

    Args:
        redis: An asyncio Redis client (shared; not closed here).
        keys: The key builder (``HttpContext.keys``).
        ttl_s: Seconds a mark lives.
    """

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int = DEFAULT_DEDUPE_TTL_S) -> None:
        if ttl_s < 1:
            raise ValueError(f"dedupe ttl_s must be >= 1 second, got {ttl_s!r}")
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"Deduper(prefix={self._keys.prefix!r}, ttl_s={self.ttl_s})"

    async def seen(self, channel: str, channel_msg_id: str) -> bool:
        """True if this channel message was already produced (and marked)."""
        try:
            key = self._keys.adapter_dedupe(channel, channel_msg_id)
            return bool(await self._redis.exists(key))
        except (RedisError, OSError) as exc:
            log.warning("dedupe: Redis unavailable, treating %s as new (%r)", channel, exc)
            return False

    async def mark(self, channel: str, channel_msg_id: str) -> None:
        """Remember that this message was produced (call only after the broker's ack)."""
        try:
            await self._redis.set(
                self._keys.adapter_dedupe(channel, channel_msg_id), b"1", nx=True, ex=self.ttl_s
            )
        except (RedisError, OSError) as exc:
            log.warning("dedupe: could not mark a %s message (%r); router dedupes", channel, exc)

    async def seen_many(self, channel: str, channel_msg_ids: Sequence[str]) -> list[bool]:
        """``seen`` for a batch, in one round trip; same order as the input."""
        if not channel_msg_ids:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for mid in channel_msg_ids:
                    pipe.exists(self._keys.adapter_dedupe(channel, mid))
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("dedupe: Redis unavailable, treating a %s batch as new (%r)", channel, exc)
            return [False] * len(channel_msg_ids)
        return [bool(r) for r in results]

    async def mark_many(self, channel: str, channel_msg_ids: Sequence[str]) -> None:
        """``mark`` for a batch, in one round trip."""
        if not channel_msg_ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for mid in channel_msg_ids:
                    pipe.set(self._keys.adapter_dedupe(channel, mid), b"1", nx=True, ex=self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("dedupe: could not mark a %s batch (%r); the router dedupes", channel, exc)


@dataclass(frozen=True, slots=True)
class Produced:
    """Outcome of :func:`produce_once`."""

    produced: tuple[Envelope, ...]
    duplicates: tuple[Envelope, ...]  # already produced earlier, or repeated in the batch


async def produce_once(
    sink: EnvelopeSink,
    deduper: Deduper | None,
    envelopes: Sequence[Envelope],
    *,
    timeout_s: float | None = None,
) -> Produced:
    """seen? -> produce the new ones in one batch (acks=all) -> mark them.

    Dedupes by envelope id (``Keys.adapter_dedupe(channel, envelope.id)``), both
    against Redis and within the batch. Without a deduper only the in-batch
    dedupe applies.

    Raises:
        BrokerUnavailable: the broker did not acknowledge (within ``timeout_s``
            if given); nothing was marked, so the channel's retry goes through.
    """
    unique: list[Envelope] = []
    repeated: list[Envelope] = []
    ids: set[str] = set()
    for env in envelopes:
        (repeated if env.id in ids else unique).append(env)
        ids.add(env.id)
    fresh = unique
    if deduper is not None and unique:
        by_channel: dict[str, list[Envelope]] = {}
        for env in unique:
            by_channel.setdefault(env.channel.value, []).append(env)
        fresh = []
        for channel, group in by_channel.items():
            flags = await deduper.seen_many(channel, [e.id for e in group])
            for env, seen in zip(group, flags, strict=True):
                (repeated if seen else fresh).append(env)
    if fresh:
        await sink.send_envelopes(fresh, timeout_s=timeout_s)
        if deduper is not None:
            by_channel = {}
            for env in fresh:
                by_channel.setdefault(env.channel.value, []).append(env)
            for channel, group in by_channel.items():
                await deduper.mark_many(channel, [e.id for e in group])
    return Produced(tuple(fresh), tuple(repeated))
