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

from .keys import Keys
from .models import Band, Decision, Envelope
from .pipeline import MessageFacts

__all__ = ["QueueStats", "QueueStore", "RedisQueueStore"]

BAND_SPAN: Final = 1e13  # score span of one band; received_at ms stays below it

_FACTS_LUA: Final = """
-- KEYS[1] = tier hash; then per message i: contacts zset, conversation hash
-- ARGV[1] = repeat window ms, ARGV[2] = sticky window ms; per message 3 args:
-- customer id ('' when the tier is cached locally), message id, received ms.
-- Records the contact (ZADD of the message id: a replay changes nothing) and
-- counts the customer's contacts strictly before this one within the window.
local out = {}
local window = tonumber(ARGV[1])
local sticky = tonumber(ARGV[2])
for i = 1, (#KEYS - 1) / 2 do
  local a = 2 + (i - 1) * 3
  local cust, id, received = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local ck, vk = KEYS[2 * i], KEYS[2 * i + 1]
  local tier = false
  if cust ~= '' then tier = redis.call('HGET', KEYS[1], cust) end
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', received - window)
  local contacts = redis.call('ZCOUNT', ck, received - window, '(' .. received)
  redis.call('ZADD', ck, received, id)
  redis.call('PEXPIRE', ck, window)
  local conv = redis.call('HMGET', vk, 'group', 'agent', 'last_ms')
  local group, agent = false, false
  if conv[3] and received - tonumber(conv[3]) <= sticky then
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
-- KEYS[1] = groups set; per message i: decision hash, queue zset, conversation hash.
-- ARGV[1] = decision ttl s, ARGV[2] = sticky window ms, ARGV[3] = message count n;
-- per message 5 args: id, score, decision json, group, received ms; then the
-- distinct groups of the batch.
local res = {}
local ttl = tonumber(ARGV[1])
local sticky = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
for i = 1, n do
  local k = 1 + (i - 1) * 3
  local a = 3 + (i - 1) * 5
  local dk, qk, ck = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local group = ARGV[a + 4]
  if redis.call('HSETNX', dk, 'decision', ARGV[a + 3]) == 0 then
    res[i] = redis.call('HGET', dk, 'decision')
  else
    redis.call('HSET', dk, 'group', group)
    redis.call('EXPIRE', dk, ttl)
    redis.call('ZADD', qk, ARGV[a + 2], ARGV[a + 1])
    redis.call('HSET', ck, 'group', group, 'last_ms', ARGV[a + 5])
    redis.call('PEXPIRE', ck, sticky)
    res[i] = 1
  end
end
for j = 4 + n * 5, #ARGV do
  redis.call('SADD', KEYS[1], ARGV[j])
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
        """One script call for the whole batch (it also records each contact)."""
        if not envelopes:
            return []
        keys: list[str] = [self.keys.customer_tiers()]
        args: list[str | int] = [self.repeat_window_ms, self.sticky_window_ms]
        cached: list[tuple[bool, str | None]] = []
        for env in envelopes:
            cid = env.customer.id
            keys.append(self.keys.contacts(cid))
            keys.append(self.keys.conversation(env.conversation_id))
            hit = self._tiers.get(cid, now_ms)
            cached.append(hit)
            args += ["" if hit[0] else cid, env.id, env.received_at_ms]
        raw = await self._facts(keys=keys, args=args)
        out: list[MessageFacts] = []
        for i, env in enumerate(envelopes):
            tier_b, contacts, group_b, agent_b = raw[4 * i : 4 * i + 4]
            is_cached, tier = cached[i]
            if not is_cached:
                tier = tier_b.decode() if tier_b else None
                self._tiers.put(env.customer.id, tier, now_ms)
            out.append(
                MessageFacts(
                    redis_tier=tier,
                    prior_contacts=int(contacts),
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
            self.decision_ttl_s, self.sticky_window_ms, len(decisions),
        ]
        groups: set[str] = set()
        for d, value in zip(decisions, encoded, strict=True):
            keys += [
                self.keys.decision(d.message_id),
                self.keys.queue(d.skill_group),
                self.keys.conversation(d.conversation_id),
            ]
            args += [d.message_id, repr(d.queue_score), value, d.skill_group,
                     d.received_at_ms]
            groups.add(d.skill_group)
        args += sorted(groups)
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
