"""Redis work queues: per-batch facts and the idempotent enqueue, one Lua script each.

Effects of a batch happen in one atomic script, so a crash or a replay can never
leave a message half-routed:

* the decision hash ``Keys.decision(id)`` is the dedupe record; if it exists the
  message was already routed and the script returns the stored decision instead;
* otherwise it writes the decision, ``ZADD``s the message into its group's queue
  (score = band rank * 1e13 + received ms: most urgent, then oldest, first),
  records the conversation's group (sticky routing) and the customer's contact
  (repeat-contact detection).

Every key a script touches is passed in KEYS. On Redis Cluster a batch must be
split by hash slot; this store targets a standalone server or a Sentinel primary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from redis.asyncio import Redis

from router.keys import Keys
from router.models import Band, Decision, Envelope
from router.pipeline import MessageFacts

__all__ = ["QueueStats", "QueueStore", "RedisQueueStore"]

BAND_SPAN: Final = 1e13  # score span of one band; received_at ms stays below it

_FACTS_LUA: Final = """
-- KEYS[1] = tier hash; then per message: contacts zset, conversation hash
-- ARGV[1] = now ms, ARGV[2] = repeat window ms, ARGV[3] = sticky window ms
-- ARGV[3 + i] = customer id, or '' when the tier is cached locally
local out = {}
local now = tonumber(ARGV[1])
local n = #KEYS - 1
for i = 1, n / 2 do
  local cust = ARGV[3 + i]
  local tier = false
  if cust ~= '' then tier = redis.call('HGET', KEYS[1], cust) end
  local contacts = redis.call('ZCOUNT', KEYS[2 * i], now - tonumber(ARGV[2]), '+inf')
  local conv = redis.call('HMGET', KEYS[2 * i + 1], 'group', 'agent', 'last_ms')
  local group, agent = false, false
  if conv[3] and now - tonumber(conv[3]) <= tonumber(ARGV[3]) then
    group = conv[1]
    agent = conv[2]
  end
  out[#out + 1] = tier
  out[#out + 1] = contacts
  out[#out + 1] = group
  out[#out + 1] = agent
end
return out
"""

_ENQUEUE_LUA: Final = """
-- KEYS[1] = groups set; per message i: decision hash, queue zset, conversation hash,
-- contacts zset (4 keys). ARGV[1] = decision ttl s, ARGV[2] = repeat window ms,
-- ARGV[3] = sticky window ms; per message 5 args: id, score, decision json, group, received ms
local res = {}
local ttl = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local sticky = tonumber(ARGV[3])
local n = (#KEYS - 1) / 4
for i = 1, n do
  local k = 1 + (i - 1) * 4
  local a = 3 + (i - 1) * 5
  local dk, qk, ck, tk = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local id, score, json = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local group, received = ARGV[a + 4], tonumber(ARGV[a + 5])
  local prev = redis.call('HGET', dk, 'decision')
  if prev then
    res[i] = prev
  else
    redis.call('HSET', dk, 'group', group, 'decision', json)
    redis.call('EXPIRE', dk, ttl)
    redis.call('ZADD', qk, score, id)
    redis.call('SADD', KEYS[1], group)
    redis.call('HSET', ck, 'group', group, 'last_ms', received)
    redis.call('PEXPIRE', ck, sticky)
    redis.call('ZADD', tk, received, id)
    redis.call('ZREMRANGEBYSCORE', tk, '-inf', received - window)
    redis.call('PEXPIRE', tk, window)
    res[i] = 1
  end
end
return res
"""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth and oldest waiting age of one group's queue."""

    depth: int
    oldest_age_s: float


class QueueStore(Protocol):
    """What the router worker needs from the queue store."""

    async def facts(self, envelopes: Sequence[Envelope], now_ms: int) -> list[MessageFacts]:
        """Tier, prior contacts and sticky group/agent of each envelope."""

    async def enqueue(
        self, decisions: Sequence[Decision], encoded: Sequence[bytes]
    ) -> list[bytes | None]:
        """Apply the decisions (``encoded``: their JSON); per decision None if new, else the
        decision stored earlier."""

    async def stats(self, now_ms: int) -> dict[str, QueueStats]:
        """Depth and oldest age per group that has ever had a queue."""


class _TierCache:
    """Small TTL cache of customer tiers, so hot customers skip the Redis read."""

    def __init__(self, ttl_s: float, size: int) -> None:
        self.ttl_ms = ttl_s * 1000
        self.size = size
        self._data: dict[str, tuple[float, str | None]] = {}

    def get(self, customer_id: str, now_ms: int) -> tuple[bool, str | None]:
        hit = self._data.get(customer_id)
        if hit is None or now_ms - hit[0] > self.ttl_ms:
            return False, None
        return True, hit[1]

    def put(self, customer_id: str, tier: str | None, now_ms: int) -> None:
        if self.size <= 0:
            return
        if len(self._data) >= self.size:
            self._data.clear()  # cheap bound; a busy cache refills within one TTL
        self._data[customer_id] = (now_ms, tier)


class RedisQueueStore:
    """The Redis implementation of :class:`QueueStore`."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        decision_ttl_s: int,
        repeat_window_s: float,
        sticky_window_s: float,
        tier_cache_ttl_s: float = 60.0,
        tier_cache_size: int = 100_000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.decision_ttl_s = decision_ttl_s
        self.repeat_window_ms = int(repeat_window_s * 1000)
        self.sticky_window_ms = int(sticky_window_s * 1000)
        self._tiers = _TierCache(tier_cache_ttl_s, tier_cache_size)
        self._facts = redis.register_script(_FACTS_LUA)
        self._enqueue = redis.register_script(_ENQUEUE_LUA)

    def configure(self, *, repeat_window_s: float, sticky_window_s: float) -> None:
        """Apply windows from a reloaded routing configuration."""
        self.repeat_window_ms = int(repeat_window_s * 1000)
        self.sticky_window_ms = int(sticky_window_s * 1000)

    async def facts(self, envelopes: Sequence[Envelope], now_ms: int) -> list[MessageFacts]:
        """One script call for the whole batch."""
        if not envelopes:
            return []
        keys: list[str] = [self.keys.customer_tiers()]
        args: list[str | int] = [now_ms, self.repeat_window_ms, self.sticky_window_ms]
        cached: list[tuple[bool, str | None]] = []
        for env in envelopes:
            keys.append(self.keys.contacts(env.customer.id))
            keys.append(self.keys.conversation(env.conversation_id))
            hit = self._tiers.get(env.customer.id, now_ms)
            cached.append(hit)
            args.append("" if hit[0] else env.customer.id)
        raw = await self._facts(keys=keys, args=args)
        out: list[MessageFacts] = []
        in_batch: dict[str, int] = {}
        for i, env in enumerate(envelopes):
            tier_b, contacts, group_b, agent_b = raw[4 * i : 4 * i + 4]
            is_cached, cached_tier = cached[i]
            if is_cached:
                tier = cached_tier
            else:
                tier = tier_b.decode() if tier_b else None
                self._tiers.put(env.customer.id, tier, now_ms)
            earlier = in_batch.get(env.customer.id, 0)
            in_batch[env.customer.id] = earlier + 1
            out.append(
                MessageFacts(
                    redis_tier=tier,
                    prior_contacts=int(contacts) + earlier,
                    sticky_group=group_b.decode() if group_b else None,
                    sticky_agent=agent_b.decode() if agent_b else None,
                )
            )
        return out

    async def enqueue(
        self, decisions: Sequence[Decision], encoded: Sequence[bytes]
    ) -> list[bytes | None]:
        """One atomic script call for the whole batch."""
        if not decisions:
            return []
        keys: list[str] = [self.keys.groups()]
        args: list[str | int | float | bytes] = [
            self.decision_ttl_s, self.repeat_window_ms, self.sticky_window_ms,
        ]
        for d, value in zip(decisions, encoded, strict=True):
            keys += [
                self.keys.decision(d.message_id),
                self.keys.queue(d.skill_group),
                self.keys.conversation(d.conversation_id),
                self.keys.contacts(d.customer_id),
            ]
            args += [d.message_id, repr(d.queue_score), value, d.skill_group,
                     d.received_at_ms]
        raw = await self._enqueue(keys=keys, args=args)
        return [None if r == 1 else bytes(r) for r in raw]

    async def stats(self, now_ms: int) -> dict[str, QueueStats]:
        """Depth and oldest age per group (one pipeline)."""
        members = await self.redis.smembers(self.keys.groups())
        groups = sorted(g.decode() if isinstance(g, bytes) else g for g in members)
        if not groups:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for g in groups:
            q = self.keys.queue(g)
            pipe.zcard(q)
            for band in Band:
                lo = band.rank * BAND_SPAN
                pipe.zrangebyscore(q, lo, lo + BAND_SPAN - 1, start=0, num=1, withscores=True)
        raw = await pipe.execute()
        out: dict[str, QueueStats] = {}
        step = 1 + len(Band)
        for i, g in enumerate(groups):
            depth = int(raw[i * step])
            oldest_ms: float | None = None
            for band_rows in raw[i * step + 1 : (i + 1) * step]:
                for _member, score in band_rows:
                    received = score % BAND_SPAN
                    oldest_ms = received if oldest_ms is None else min(oldest_ms, received)
            age = max(0.0, (now_ms - oldest_ms) / 1000) if oldest_ms is not None else 0.0
            out[g] = QueueStats(depth, age)
        return out


def depths_of(stats: Mapping[str, QueueStats]) -> dict[str, int]:
    """Queue depth per group, for overflow decisions."""
    return {g: s.depth for g, s in stats.items()}
