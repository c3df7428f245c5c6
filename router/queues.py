"""Redis work queues: per-batch facts and the idempotent enqueue, in Lua scripts.

On a standalone server (or a Sentinel primary) a batch's effects happen in one
atomic script, so a crash or a replay can never leave a message half-routed:

* the decision hash ``Keys.decision(id)`` is the dedupe record; if it exists the
  message was already routed and the script returns the stored decision instead;
* otherwise it writes the decision, ``ZADD``s the message into its group's queue
  (score = band rank * 1e13 + received ms: most urgent, then oldest, first),
  records the conversation's group (sticky routing) and the customer's contact
  (repeat-contact detection).

On Redis Cluster every script touches one hash slot (see ``router.keys``): the
batch is split per routing bucket and per slot, one script call each, run
concurrently, in three steps that each stay idempotent:

1. *decide* (per bucket of the message ids): ``HSETNX`` the decision with a
   ``pending`` mark; a message already decided returns its stored decision and
   whether it is still pending;
2. *queue* (the ``{q}`` slot, one call): for every new or still-pending message,
   ``ZADD NX`` an enqueue mark, and only if the mark is new ``ZADD`` the queue;
3. *settle* (per bucket): drop the ``pending`` marks, write conversation state;
   then the enqueue marks are removed.

A replay after a crash between any two steps finds the decision (so the same group
and score, whatever the replay would decide now) and the enqueue mark, so the
message is queued exactly once. With ``wait_replicas`` (``REDIS_URL`` option) each
step waits until replicas hold its writes, so a primary failover keeps them too;
what a failover can lose otherwise is listed in the README ("Redis Cluster").
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from .exceptions import OmniError
from .keys import Keys, bucket_of
from .models import Band, Decision, Envelope
from .pipeline import RedisFacts
from .redis_client import is_cluster_client

__all__ = ["QueueStats", "QueueStore", "RedisQueueStore", "ReplicationLag"]

BAND_SPAN: Final = 1e13  # score span of one band; received_at ms stays below it

_FACTS_LUA: Final = """
-- KEYS: nc contacts zsets, then nv conversation hashes, then the tier hash if nt > 0.
-- ARGV[1] repeat window ms, ARGV[2] sticky window ms, ARGV[3] nc, ARGV[4] nv,
-- ARGV[5] nt; then nc pairs (message id, received ms), nv received ms, nt customer ids.
-- Records each contact (ZADD of the message id: a replay changes nothing) and counts
-- the customer's contacts strictly before it within the window; reads the sticky
-- group/agent of each conversation; reads tiers.
-- Returns nc counts, then nv pairs (group, agent), then nt tiers.
local out = {}
local window, sticky = tonumber(ARGV[1]), tonumber(ARGV[2])
local nc, nv, nt = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local a = 5
for i = 1, nc do
  local id, received = ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 2
  local ck = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', received - window)
  out[#out + 1] = redis.call('ZCOUNT', ck, received - window, '(' .. received)
  redis.call('ZADD', ck, received, id)
  redis.call('PEXPIRE', ck, window)
end
for i = 1, nv do
  local received = tonumber(ARGV[a + 1])
  a = a + 1
  local conv = redis.call('HMGET', KEYS[nc + i], 'group', 'agent', 'last_ms')
  local group, agent = false, false
  if conv[3] and received - tonumber(conv[3]) <= sticky then
    group = conv[1]
    agent = conv[2]
  end
  out[#out + 1] = group
  out[#out + 1] = agent
end
for i = 1, nt do
  out[#out + 1] = redis.call('HGET', KEYS[nc + nv + 1], ARGV[a + i])
end
return out
"""

_ENQUEUE_LUA: Final = """
-- Standalone: the whole batch, atomically.
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

_DECIDE_LUA: Final = """
-- Cluster step 1, one routing bucket. KEYS: decision hashes.
-- ARGV[1] = decision ttl s; per message 2 args: decision json, group.
-- Returns per message 2 values: 1 and '' when new (written with a pending mark), else
-- the stored decision and its pending mark ('' when settled).
local res = {}
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local dk = KEYS[i]
  if redis.call('HSETNX', dk, 'decision', ARGV[2 * i]) == 1 then
    redis.call('HSET', dk, 'group', ARGV[2 * i + 1], 'pending', '1')
    redis.call('EXPIRE', dk, ttl)
    res[#res + 1] = 1
    res[#res + 1] = ''
  else
    local stored = redis.call('HMGET', dk, 'decision', 'pending')
    res[#res + 1] = stored[1]
    res[#res + 1] = stored[2] or ''
  end
end
return res
"""

_QUEUE_LUA: Final = """
-- Cluster step 2, the {q} slot. KEYS[1] = groups set, KEYS[2] = enqueue marks,
-- KEYS[3..] = the queue of each message. ARGV[1] = now ms, ARGV[2] = mark ttl ms;
-- per message 3 args: id, score, group. A message is queued only with a new mark.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
local added = 0
for i = 3, #KEYS do
  local a = 2 + (i - 3) * 3
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[a + 1]) == 1 then
    redis.call('ZADD', KEYS[i], ARGV[a + 2], ARGV[a + 1])
    redis.call('SADD', KEYS[1], ARGV[a + 3])
    added = added + 1
  end
end
return added
"""

_SETTLE_LUA: Final = """
-- Cluster step 3, one routing bucket. KEYS: nd decision hashes, then conversation
-- hashes. ARGV[1] = sticky window ms, ARGV[2] = nd; per conversation 2 args: group,
-- received ms (a later message's state is never overwritten by an earlier one).
local nd, sticky = tonumber(ARGV[2]), tonumber(ARGV[1])
for i = 1, nd do redis.call('HDEL', KEYS[i], 'pending') end
for i = nd + 1, #KEYS do
  local a = 3 + (i - nd - 1) * 2
  local last = redis.call('HGET', KEYS[i], 'last_ms')
  if not last or tonumber(last) <= tonumber(ARGV[a + 1]) then
    redis.call('HSET', KEYS[i], 'group', ARGV[a], 'last_ms', ARGV[a + 1])
    redis.call('PEXPIRE', KEYS[i], sticky)
  end
end
return 1
"""


_HMGET_LUA: Final = "return redis.call('HMGET', KEYS[1], unpack(ARGV))"  # tiers (cluster)
_ZREM_LUA: Final = "return redis.call('ZREM', KEYS[1], unpack(ARGV))"  # enqueue marks (cluster)


class ReplicationLag(OmniError, RedisError):
    """Fewer replicas than ``wait_replicas`` acknowledged a batch step's writes in time (or
    the slot moved meanwhile); the step is retried, its effects being idempotent."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth and oldest waiting age of one group's queue."""

    depth: int
    oldest_age_s: float


class QueueStore(Protocol):
    """What the router worker needs from the queue store."""

    async def facts(self, envelopes: Sequence[Envelope], now_ms: int) -> list[RedisFacts]:
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
    """The Redis implementation of :class:`QueueStore` (standalone server or Redis Cluster).

    On a cluster client (``redis+cluster://``) every batch is split per hash slot; the
    client's ``wait_replicas`` option makes each step wait for replicas (``WAIT``).
    """

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
        self.cluster = is_cluster_client(redis)
        self._initialized = False
        self.wait_replicas: int = getattr(redis, "wait_replicas", 0)
        self.wait_timeout_ms: int = getattr(redis, "wait_timeout_ms", 2000)
        self._tiers = _TierCache(tier_cache_ttl_s, tier_cache_size)
        self._facts = redis.register_script(_FACTS_LUA)
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self._decide = redis.register_script(_DECIDE_LUA)
        self._queue = redis.register_script(_QUEUE_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)
        self._tiers_script = redis.register_script(_HMGET_LUA)
        self._unmark = redis.register_script(_ZREM_LUA)

    def configure(self, *, repeat_window_s: float, sticky_window_s: float) -> None:
        """Apply windows from a reloaded routing configuration."""
        self.repeat_window_ms = int(repeat_window_s * 1000)
        self.sticky_window_ms = int(sticky_window_s * 1000)

    async def _initialize(self) -> None:
        """A cluster client learns the slot map before the first concurrent calls (redis-py
        breaks connections when several calls trigger its lazy initialisation at once)."""
        if self.cluster and not self._initialized:
            await self.redis.initialize()
            self._initialized = True

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """One script call on the slot of ``keys`` (all in one slot on a cluster); with
        ``wait_replicas``, followed on the same connection by ``WAIT``."""
        if not self.cluster:
            return await script(keys=keys, args=args)
        try:
            return await self._run_cluster(script, keys, args)
        except AttributeError as exc:
            # redis-py's cluster client refreshes its slot map after a failed call by
            # closing every connection, also those other calls are using at that moment
            raise RedisConnectionError(f"connection reset by a topology refresh ({exc})"
                                       ) from exc

    async def _run_cluster(self, script: AsyncScript, keys: list[str], args: list[Any]
                           ) -> Any:
        if not self.wait_replicas:
            return await script(keys=keys, args=args)
        rc: Any = self.redis
        node = rc.get_node_from_key(keys[0])
        for attempt in (1, 2):
            pipe = rc.pipeline()
            # (the pipeline's evalsha() is refused in cluster mode; the raw command is not)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args,
                                 target_nodes=node)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms,
                                 target_nodes=node)
            try:
                result, acked = await pipe.execute()
                break
            except NoScriptError:  # a new primary after a failover: load and retry once
                if attempt == 2:
                    raise
                await rc.script_load(script.script)
        if int(acked) < self.wait_replicas or rc.get_node_from_key(keys[0]) is not node:
            raise ReplicationLag(
                f"{acked} of {self.wait_replicas} replica(s) of {node.name} acknowledged "
                f"within {self.wait_timeout_ms} ms"
            )
        return result

    async def facts(self, envelopes: Sequence[Envelope], now_ms: int) -> list[RedisFacts]:
        """Standalone: one script call for the whole batch (it also records each contact).
        Cluster: one call per routing bucket, concurrently, and one tier read."""
        if not envelopes:
            return []
        await self._initialize()
        cached = [self._tiers.get(env.customer.id, now_ms) for env in envelopes]
        uncached = sorted({env.customer.id for env, hit in zip(envelopes, cached, strict=True)
                           if not hit[0]})
        contacts: list[int] = [0] * len(envelopes)
        sticky: list[tuple[Any, Any]] = [(None, None)] * len(envelopes)
        tiers: dict[str, str | None] = {}
        if not self.cluster:
            idx = list(range(len(envelopes)))
            raw = await self._facts_call(envelopes, idx, idx, uncached, self.keys.customer_tiers())
            self._spread(raw, idx, idx, uncached, contacts, sticky, tiers)
        else:
            by_contact: dict[str, list[int]] = defaultdict(list)
            by_conv: dict[str, list[int]] = defaultdict(list)
            for i, env in enumerate(envelopes):
                by_contact[bucket_of(env.customer.id)].append(i)
                by_conv[bucket_of(env.conversation_id)].append(i)
            buckets = sorted(set(by_contact) | set(by_conv))

            async def one(b: str) -> None:
                ci, vi = by_contact.get(b, []), by_conv.get(b, [])
                raw = await self._facts_call(envelopes, ci, vi, [], "")
                self._spread(raw, ci, vi, [], contacts, sticky, tiers)

            async def tier_read() -> None:
                if uncached:
                    values = await self._run(self._tiers_script, [self.keys.customer_tiers()],
                                             uncached)
                    tiers.update(zip(uncached, (_text(v) for v in values), strict=True))

            await asyncio.gather(tier_read(), *(one(b) for b in buckets))
        out: list[RedisFacts] = []
        for i, env in enumerate(envelopes):
            is_cached, tier = cached[i]
            if not is_cached:
                tier = tiers.get(env.customer.id)
                self._tiers.put(env.customer.id, tier, now_ms)
            group_b, agent_b = sticky[i]
            out.append(RedisFacts(redis_tier=tier, prior_contacts=contacts[i],
                                    sticky_group=_text(group_b), sticky_agent=_text(agent_b)))
        return out

    async def _facts_call(self, envelopes: Sequence[Envelope], contact_idx: list[int],
                          conv_idx: list[int], tier_ids: list[str], tier_key: str) -> Any:
        keys = [self.keys.contacts(envelopes[i].customer.id) for i in contact_idx]
        keys += [self.keys.conversation(envelopes[i].conversation_id) for i in conv_idx]
        if tier_ids:
            keys.append(tier_key)
        args: list[Any] = [self.repeat_window_ms, self.sticky_window_ms, len(contact_idx),
                           len(conv_idx), len(tier_ids)]
        for i in contact_idx:
            args += [envelopes[i].id, envelopes[i].received_at_ms]
        args += [envelopes[i].received_at_ms for i in conv_idx]
        args += tier_ids
        return await self._run(self._facts, keys, args)

    @staticmethod
    def _spread(raw: Any, contact_idx: list[int], conv_idx: list[int], tier_ids: list[str],
                contacts: list[int], sticky: list[tuple[Any, Any]],
                tiers: dict[str, str | None]) -> None:
        nc, nv = len(contact_idx), len(conv_idx)
        for j, i in enumerate(contact_idx):
            contacts[i] = int(raw[j])
        for j, i in enumerate(conv_idx):
            sticky[i] = (raw[nc + 2 * j], raw[nc + 2 * j + 1])
        for j, cid in enumerate(tier_ids):
            tiers[cid] = _text(raw[nc + 2 * nv + j])

    async def enqueue(
        self, decisions: Sequence[Decision], encoded: Sequence[bytes]
    ) -> list[bytes | None]:
        """Standalone: one atomic script call for the whole batch. Cluster: decide, queue
        and settle, each split per slot and run concurrently (module docstring)."""
        if not decisions:
            return []
        if self.cluster:
            await self._initialize()
            return await self._enqueue_cluster(decisions, encoded)
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

    async def _enqueue_cluster(
        self, decisions: Sequence[Decision], encoded: Sequence[bytes]
    ) -> list[bytes | None]:
        by_msg: dict[str, list[int]] = defaultdict(list)
        for i, d in enumerate(decisions):
            by_msg[bucket_of(d.message_id)].append(i)
        stored: list[bytes | None] = [None] * len(decisions)
        to_queue: list[tuple[str, str, str]] = []  # (message id, score, group)
        new: list[int] = []
        unsettled: list[int] = []

        async def decide(idx: list[int]) -> None:
            keys = [self.keys.decision(decisions[i].message_id) for i in idx]
            args: list[Any] = [self.decision_ttl_s]
            for i in idx:
                args += [encoded[i], decisions[i].skill_group]
            raw = await self._run(self._decide, keys, args)
            for j, i in enumerate(idx):
                value, pending = raw[2 * j], raw[2 * j + 1]
                if value == 1:
                    new.append(i)
                    continue
                stored[i] = bytes(value)
                if pending:  # a crash came between this message's steps: finish them
                    unsettled.append(i)

        await asyncio.gather(*(decide(idx) for idx in by_msg.values()))
        for i in new:
            d = decisions[i]
            to_queue.append((d.message_id, repr(d.queue_score), d.skill_group))
        for i in unsettled:
            first = Decision.from_json(stored[i] or b"")  # the group decided the first time
            to_queue.append((first.message_id, repr(first.queue_score), first.skill_group))
        if to_queue:
            keys = [self.keys.groups(), self.keys.enqueued()]
            keys += [self.keys.queue(group) for _id, _score, group in to_queue]
            args: list[Any] = [int(decisions[0].decided_at_ms), self.decision_ttl_s * 1000]
            for row in to_queue:
                args += list(row)
            await self._run(self._queue, keys, args)
        settle: dict[str, tuple[list[str], list[tuple[str, str, int]]]] = defaultdict(
            lambda: ([], []))
        for i in (*new, *unsettled):
            mid = decisions[i].message_id
            settle[bucket_of(mid)][0].append(self.keys.decision(mid))
        for i in new:
            d = decisions[i]
            settle[bucket_of(d.conversation_id)][1].append(
                (self.keys.conversation(d.conversation_id), d.skill_group, d.received_at_ms))

        async def settle_one(dkeys: list[str], convs: list[tuple[str, str, int]]) -> None:
            args: list[Any] = [self.sticky_window_ms, len(dkeys)]
            for _key, group, received in convs:
                args += [group, received]
            await self._run(self._settle, dkeys + [c[0] for c in convs], args)

        await asyncio.gather(*(settle_one(*v) for v in settle.values()))
        # every id of the batch: a crash may have come after some buckets had settled
        await self._run(self._unmark, [self.keys.enqueued()], [d.message_id for d in decisions])
        return stored

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


def _text(value: Any) -> str | None:
    """A Redis reply as text (None for nil)."""
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def depths_of(stats: Mapping[str, QueueStats]) -> dict[str, int]:
    """Queue depth per group, for overflow decisions."""
    return {g: s.depth for g, s in stats.items()}
