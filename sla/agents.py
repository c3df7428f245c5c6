"""Agents, their capacity and conversation ownership in Redis (used by the agent API).

* registration: ``Keys.agent(id)`` hash (``groups`` JSON, ``slots``), liveness in the
  ``Keys.agents()`` sorted set scored by the last heartbeat;
* capacity: ``Keys.agent_active(id)`` is the set of conversations the agent holds;
  one conversation is one slot, however many of its messages were claimed;
* ownership: ``Keys.assignment(conv)`` hash (``agent``, ``group``, ``message_id``,
  ``score``, ``state``, ``at_ms``).

The claim's atomic part is one Lua script in one hash slot: every agent key and
every assignment share the queues' ``{q}`` slot (``router.keys``), so the script
checks the agent is live and below its slots, picks the most urgent head across
its groups' queues, pops it (``ZPOPMIN``) and records the assignment, all at once. A
message popped by one script is in no queue for any other, so no message is ever
assigned twice, and an agent never holds more conversations than its slots. A
queued follow-up message of a conversation another agent holds is attached to that
agent (first-contact ownership) and the script looks further.

The conversation of a queued message is in its decision record, in another slot
(``{r:X}``), so it is read before the script: the claim peeks at the first
``PEEK`` messages of each queue, reads their decisions and passes the script each
one's conversation. A head the script was not told about (the queues changed in
between) makes it stop without popping (``stale``) and the claim peeks again.
After the script, the owning agent is written into the router's conversation hash
(``{r:X}``, sticky routing) as a second step; a crash between the two loses only
that hint: the assignment already decides who gets the conversation's follow-ups.
The same code runs on a standalone server and on Redis Cluster.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import orjson
from redis.asyncio import Redis

from ..router.keys import Keys
from ._redis import as_text

__all__ = ["AgentDesk", "AgentInfo", "ClaimResult", "ConvAction", "QueueView", "Staffing"]

log = logging.getLogger(__name__)

HOLDING_STATES: Final = ("claimed", "accepted", "waiting")
ASSIGNMENT_TTL_S: Final = 86_400  # a released assignment is kept this long (idempotent retries)
BAND_SPAN: Final = 10_000_000_000_000

PEEK: Final = 8  # queue heads whose conversation a claim reads before its script
CLAIM_ROUNDS: Final = 20  # peeks before a claim whose queues keep changing gives up

_CLAIM = """
-- One slot ({q}). KEYS[1] agent hash, KEYS[2] agent active set, KEYS[3] agents zset,
-- KEYS[4..] queues. ARGV[1] agent, ARGV[2] now ms, ARGV[3] live ttl ms,
-- ARGV[4] assignment key prefix, ARGV[5] number of queues nq, ARGV[6..5+nq] the group
-- of each queue, then pairs (message id, conversation id) of the peeked heads.
local agent, now, aprefix, nq = ARGV[1], tonumber(ARGV[2]), ARGV[4], tonumber(ARGV[5])
local slots = redis.call('HGET', KEYS[1], 'slots')
local seen = redis.call('ZSCORE', KEYS[3], agent)
if not slots or not seen or tonumber(seen) < now - tonumber(ARGV[3]) then
  return {'unknown'}
end
local convs = {}
for j = 6 + nq, #ARGV - 1, 2 do convs[ARGV[j]] = ARGV[j + 1] end
for _ = 1, 20 do
  local active = redis.call('SCARD', KEYS[2])
  if active >= tonumber(slots) then return {'full', tostring(active)} end
  local best, bestscore, bestid = nil, nil, nil
  for i = 4, #KEYS do
    local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    if head[1] and (not bestscore or tonumber(head[2]) < bestscore) then
      best, bestscore, bestid = i, tonumber(head[2]), head[1]
    end
  end
  if not best then return {'empty'} end
  local conv = convs[bestid]
  if not conv then return {'stale'} end
  local popped = redis.call('ZPOPMIN', KEYS[best])
  local mid, score = popped[1], popped[2]
  local group = ARGV[best + 2]
  local akey = aprefix .. conv
  local owner = redis.call('HMGET', akey, 'agent', 'state')
  local held = owner[2] == 'claimed' or owner[2] == 'accepted' or owner[2] == 'waiting'
  if held and owner[1] ~= agent then
    -- the conversation belongs to another agent: the follow-up goes to them
    redis.call('HSET', akey, 'message_id', mid, 'at_ms', now)
  else
    redis.call('SADD', KEYS[2], conv)
    redis.call('HSET', akey, 'agent', agent, 'group', group, 'message_id', mid,
               'score', score, 'state', held and owner[2] or 'claimed', 'at_ms', now)
    redis.call('PERSIST', akey)
    return {'ok', mid, conv, group, score}
  end
end
return {'stale'}
"""

_ACT = """
-- KEYS[1] assignment, KEYS[2] agent active set, KEYS[3] target queue, KEYS[4] groups set
-- ARGV[1] agent, ARGV[2] conv, ARGV[3] action, ARGV[4] now ms, ARGV[5] ttl s,
-- ARGV[6] target group (transfer)
local a = redis.call('HMGET', KEYS[1], 'agent', 'state', 'message_id', 'score', 'group')
if not a[1] then return {'none'} end
if a[1] ~= ARGV[1] then return {'other', a[1]} end
local action, state = ARGV[3], a[2]
local holding = state == 'claimed' or state == 'accepted' or state == 'waiting'
if action == 'resolve' and state == 'resolved' then return {'again', a[5] or ''} end
if action == 'transfer' and state == 'transferred' then return {'again', a[5] or ''} end
if not holding then return {'released', state} end
if action == 'accept' then
  redis.call('HSET', KEYS[1], 'state', 'accepted', 'at_ms', ARGV[4])
elseif action == 'reply' then
  if state == 'claimed' then redis.call('HSET', KEYS[1], 'state', 'accepted') end
  redis.call('HSET', KEYS[1], 'at_ms', ARGV[4])
elseif action == 'wait_customer' then
  redis.call('HSET', KEYS[1], 'state', 'waiting', 'at_ms', ARGV[4])
elseif action == 'resolve' or action == 'transfer' then
  redis.call('SREM', KEYS[2], ARGV[2])
  local newstate = 'resolved'
  if action == 'transfer' then
    newstate = 'transferred'
    redis.call('ZADD', KEYS[3], a[4] or ARGV[4], a[3])
    redis.call('SADD', KEYS[4], ARGV[6])
  end
  redis.call('HSET', KEYS[1], 'state', newstate, 'at_ms', ARGV[4], 'group', ARGV[6])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return {'ok', a[5] or '', a[3] or ''}
"""

_REGISTER = """
-- One slot ({q}). KEYS[1] agent hash, KEYS[2] agents zset, KEYS[3] agent active set.
-- ARGV[1] agent, ARGV[2] groups JSON, ARGV[3] slots, ARGV[4] now ms.
redis.call('HSET', KEYS[1], 'groups', ARGV[2], 'slots', ARGV[3], 'seen_ms', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return redis.call('SMEMBERS', KEYS[3])
"""

ConvAction = Literal["accept", "reply", "wait_customer", "resolve", "transfer"]
ClaimStatus = Literal["ok", "unknown", "full", "empty"]
ActStatus = Literal["ok", "again", "none", "other", "released"]


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """A registered agent."""

    agent_id: str
    groups: tuple[str, ...]
    slots: int
    seen_ms: int
    active: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Set by the reader: see ``AgentDesk.get``."""
        return self.seen_ms > 0


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Outcome of a claim: ``ok`` with the message, or why not."""

    status: ClaimStatus
    message_id: str | None = None
    conversation_id: str | None = None
    group: str | None = None
    score: float | None = None
    decision: bytes | None = None
    active: int | None = None


@dataclass(frozen=True, slots=True)
class ActResult:
    """Outcome of a conversation action."""

    status: ActStatus
    group: str = ""
    message_id: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class QueueView:
    """Depth, oldest age and the first items of one group's queue."""

    group: str
    depth: int
    oldest_age_s: float
    top: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Staffing:
    """Live agents and their concurrent slots, per skill group."""

    agents: dict[str, int]
    slots: dict[str, int]


class AgentDesk:
    """Agent registration, claims and conversation actions on Redis."""

    def __init__(self, redis: Redis, keys: Keys, *, live_ttl_s: float = 90.0) -> None:
        self.redis = redis
        self.keys = keys
        self.live_ttl_ms = int(live_ttl_s * 1000)
        self._claim = redis.register_script(_CLAIM)
        self._act = redis.register_script(_ACT)
        self._register = redis.register_script(_REGISTER)

    async def register(
        self, agent_id: str, groups: Sequence[str], slots: int, now_ms: int
    ) -> AgentInfo:
        """Create or update an agent and mark it live (also a heartbeat)."""
        # one script in {q} (redis-py's cluster MULTI pipeline breaks on SMEMBERS' reply)
        active = await self._register(
            keys=[self.keys.agent(agent_id), self.keys.agents(), self.keys.agent_active(agent_id)],
            args=[agent_id, orjson.dumps(list(groups)), slots, now_ms],
        )
        return AgentInfo(agent_id, tuple(groups), slots, now_ms,
                         tuple(sorted(as_text(m) for m in active)))

    async def heartbeat(self, agent_id: str, now_ms: int) -> bool:
        """Refresh liveness; False when the agent never registered."""
        if not await self.redis.exists(self.keys.agent(agent_id)):
            return False
        await self.redis.zadd(self.keys.agents(), {agent_id: now_ms})
        await self.redis.hset(self.keys.agent(agent_id), "seen_ms", now_ms)
        return True

    async def logout(self, agent_id: str) -> None:
        """Stop receiving claims (held conversations stay assigned)."""
        await self.redis.zrem(self.keys.agents(), agent_id)

    async def get(self, agent_id: str, now_ms: int) -> AgentInfo | None:
        """The agent, or None if unknown; ``seen_ms`` is 0 when not live."""
        raw = await self.redis.hgetall(self.keys.agent(agent_id))
        if not raw:
            return None
        seen = await self.redis.zscore(self.keys.agents(), agent_id)
        live = seen is not None and seen >= now_ms - self.live_ttl_ms
        active = await self.redis.smembers(self.keys.agent_active(agent_id))
        return AgentInfo(
            agent_id, tuple(orjson.loads(raw[b"groups"])), int(raw[b"slots"]),
            int(seen) if live and seen is not None else 0,
            tuple(sorted(as_text(m) for m in active)),
        )

    async def claim(self, agent_id: str, groups: Sequence[str], now_ms: int) -> ClaimResult:
        """Atomically pop the most urgent message of ``groups`` for the agent (module
        docstring: peek, read the heads' conversations, one script in ``{q}``)."""
        if not groups:
            return ClaimResult("empty")
        keys = [self.keys.agent(agent_id), self.keys.agent_active(agent_id), self.keys.agents()]
        keys += [self.keys.queue(g) for g in groups]
        for _ in range(CLAIM_ROUNDS):
            decisions = await self._peek(groups)
            pairs: list[str] = []
            for mid, (conv, _raw) in decisions.items():
                pairs += [mid, conv]
            raw = await self._claim(
                keys=keys,
                args=[agent_id, now_ms, self.live_ttl_ms, self.keys.assignment_prefix(),
                      len(groups), *groups, *pairs],
            )
            status = as_text(raw[0])
            if status == "stale":
                continue
            if status == "ok":
                mid, conv = as_text(raw[1]), as_text(raw[2])
                # second step, the conversation's slot: the owner as a sticky-routing hint
                await self.redis.hset(self.keys.conversation(conv), "agent", agent_id)
                return ClaimResult(
                    "ok", message_id=mid, conversation_id=conv, group=as_text(raw[3]),
                    score=float(raw[4]), decision=decisions[mid][1] or None,
                )
            if status == "full":
                return ClaimResult("full", active=int(raw[1]))
            return ClaimResult("unknown" if status == "unknown" else "empty")
        log.warning("claim for %s gave up after %d rounds of changing queues", agent_id,
                    CLAIM_ROUNDS)
        return ClaimResult("empty")

    async def _peek(self, groups: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """The first ``PEEK`` ids of each queue -> (conversation id, decision JSON); a
        message whose decision expired is its own conversation (and has no decision)."""
        pipe = self.redis.pipeline(transaction=False)
        for g in groups:
            pipe.zrange(self.keys.queue(g), 0, PEEK - 1)
        heads = sorted({as_text(m) for rows in await pipe.execute() for m in rows})
        if not heads:
            return {}
        pipe = self.redis.pipeline(transaction=False)  # a cluster pipeline splits per node
        for mid in heads:
            pipe.hget(self.keys.decision(mid), "decision")
        out: dict[str, tuple[str, bytes]] = {}
        for mid, raw in zip(heads, await pipe.execute(), strict=True):
            conv = mid
            if raw is not None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    decoded = orjson.loads(raw)
                    if isinstance(decoded, dict) and decoded.get("conversation_id"):
                        conv = str(decoded["conversation_id"])
            out[mid] = (conv, bytes(raw) if raw is not None else b"")
        return out

    async def act(
        self, agent_id: str, conversation_id: str, action: ConvAction, now_ms: int,
        to_group: str = "",
    ) -> ActResult:
        """Apply one action to a conversation the agent holds."""
        target = to_group or "-"
        raw = await self._act(
            keys=[self.keys.assignment(conversation_id), self.keys.agent_active(agent_id),
                  self.keys.queue(target), self.keys.groups()],
            args=[agent_id, conversation_id, action, now_ms, ASSIGNMENT_TTL_S, to_group],
        )
        status = raw[0].decode()
        if status == "ok":
            return ActResult("ok", group=raw[1].decode(), message_id=raw[2].decode())
        if status == "again":
            return ActResult("again", group=raw[1].decode())
        if status == "other":
            return ActResult("other", detail=raw[1].decode())
        if status == "released":
            return ActResult("released", detail=raw[1].decode())
        return ActResult("none")

    async def queue_view(self, group: str, now_ms: int, top: int = 10) -> QueueView:
        """Depth, oldest waiting age and the ``top`` most urgent items of a group."""
        q = self.keys.queue(group)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(q)
        pipe.zrange(q, 0, max(0, top - 1), withscores=True)
        for band in range(5):
            lo = band * BAND_SPAN
            pipe.zrangebyscore(q, lo, lo + BAND_SPAN - 1, start=0, num=1, withscores=True)
        depth, head, *bands = await pipe.execute()
        oldest = min((s % BAND_SPAN for rows in bands for _, s in rows), default=None)
        items: list[dict[str, object]] = []
        for m, score in head if top > 0 else []:
            received = int(score % BAND_SPAN)
            items.append({
                "message_id": m.decode(), "band": f"P{int(score // BAND_SPAN)}",
                "received_at_ms": received, "age_s": max(0.0, (now_ms - received) / 1000),
            })
        age = max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0
        return QueueView(group, int(depth), age, items)

    async def known_groups(self) -> list[str]:
        """Groups that have ever had a queue (router) plus groups of registered agents."""
        groups = {as_text(g) for g in await self.redis.smembers(self.keys.groups())}
        for info in (await self.live_agents(0)).values():
            groups.update(info.groups)
        return sorted(groups)

    async def live_agents(self, now_ms: int) -> dict[str, AgentInfo]:
        """Agents whose last heartbeat is within the live TTL of ``now_ms``."""
        rows = cast(list[tuple[bytes, float]], await self.redis.zrangebyscore(
            self.keys.agents(), now_ms - self.live_ttl_ms if now_ms else "-inf", "+inf",
            withscores=True,
        ))
        if not rows:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for agent, _ in rows:
            pipe.hmget(self.keys.agent(as_text(agent)), ["groups", "slots"])
        out: dict[str, AgentInfo] = {}
        replies: list[list[bytes | None]] = await pipe.execute()
        for (agent, seen), (groups, slots) in zip(rows, replies, strict=True):
            if groups is None or slots is None:
                continue
            out[as_text(agent)] = AgentInfo(
                as_text(agent), tuple(orjson.loads(groups)), int(slots), int(seen)
            )
        return out

    async def staffing(self, now_ms: int) -> Staffing:
        """Live agents and slots per group (an agent in two groups counts in both)."""
        agents: dict[str, int] = {}
        slots: dict[str, int] = {}
        for info in (await self.live_agents(now_ms)).values():
            for g in info.groups:
                agents[g] = agents.get(g, 0) + 1
                slots[g] = slots.get(g, 0) + info.slots
        return Staffing(agents, slots)
