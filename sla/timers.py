"""SLA state and deadlines in Redis, with atomic (Lua) writes and an exactly-once claim.

Layout (all under the ``{sla}`` hash tag, so each script touches one slot):

* ``Keys.sla_states()``: hash, conversation id -> :class:`~sla.state.ConvState` JSON;
* ``Keys.sla_deadlines()``: sorted set, deadline member -> due epoch ms;
* ``Keys.sla_resolved()``: sorted set of resolved conversations (purged after a day).

Writes are compare-and-set on the state's ``ver``: the save script checks the
version, swaps the deadline members (removing those no longer wanted, adding only
new ones, so a stage that already fired is never re-added) and stores the state.
The claim script pops due members (ZRANGEBYSCORE <= now LIMIT + ZREM) and returns
each with the state it belongs to: whichever worker's ZREM removed a member fires
it, so every deadline fires exactly once however many workers tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

from redis.asyncio import Redis

from ..router.events import AgentEvent
from ..router.keys import Keys
from ..router.models import Decision
from ..router.retry import Backoff, retrying
from ._redis import as_text
from .exceptions import StateConflict
from .state import ConvState, Fired, SlaEngine, member, parse_member

__all__ = ["TimerStore"]

CAS_ATTEMPTS: Final = 16
CAS_BACKOFF_INITIAL_S: Final = 0.002  # the jittered wait after a conflict: [0, 2 ms] ...
CAS_BACKOFF_MAX_S: Final = 0.064  # ... doubling to [0, 64 ms]
BATCH_CONVERSATIONS: Final = 500  # conversations per read + script call

_SAVE = """
-- KEYS[1] deadlines zset, KEYS[2] states hash, KEYS[3] tombstones zset
-- ARGV[1] = number of entries; per entry: conv, expected ver, state json,
-- purge-after ms or '', m, then m pairs (member, due ms)
local i = 2
local failed = {}
for _ = 1, tonumber(ARGV[1]) do
  local conv, expected, json, purge = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local first = i + 5
  local last = first + 2 * tonumber(ARGV[i + 4]) - 1
  i = last + 1
  local old = redis.call('HGET', KEYS[2], conv)
  local oldver = 0
  local oldmembers = {}
  if old then
    local s = cjson.decode(old)
    oldver = s['ver']
    oldmembers = s['members']
  end
  if tostring(oldver) ~= expected then
    failed[#failed + 1] = conv
  else
    local want = {}
    for j = first, last, 2 do want[ARGV[j]] = true end
    local had = {}
    for _, m in ipairs(oldmembers) do
      had[m] = true
      if not want[m] then redis.call('ZREM', KEYS[1], m) end
    end
    for j = first, last, 2 do
      if not had[ARGV[j]] then redis.call('ZADD', KEYS[1], ARGV[j + 1], ARGV[j]) end
    end
    redis.call('HSET', KEYS[2], conv, json)
    if purge ~= '' then
      redis.call('ZADD', KEYS[3], purge, conv)
    else
      redis.call('ZREM', KEYS[3], conv)
    end
  end
end
return failed
"""

_CLAIM = """
-- KEYS: deadlines, states, inflight; ARGV: now ms, limit, lease expiry ms
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #due, 2 do
  local m = due[i]
  if redis.call('ZREM', KEYS[1], m) == 1 then
    redis.call('ZADD', KEYS[3], ARGV[3], m)
    local conv = string.match(m, '^[^\\31]*\\31[^\\31]*\\31[^\\31]*\\31(.*)$')
    local st = false
    if conv then st = redis.call('HGET', KEYS[2], conv) end
    out[#out + 1] = m
    out[#out + 1] = due[i + 1]
    out[#out + 1] = st or ''
  end
end
return out
"""

_REQUEUE = """
-- KEYS: inflight, deadlines; ARGV: now ms. Leases that expired: fire them again.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], 'NX', ARGV[1], m)
end
return #gone
"""

_PURGE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, conv in ipairs(gone) do
  redis.call('ZREM', KEYS[1], conv)
  redis.call('HDEL', KEYS[2], conv)
end
return #gone
"""


Change = Callable[[ConvState | None], ConvState | None]


def _chain(changes: Sequence[Change]) -> Change:
    """One change that applies ``changes`` in order (None if none changed anything)."""

    def run(state: ConvState | None) -> ConvState | None:
        changed = False
        for change in changes:
            new = change(state)
            if new is not None:
                state, changed = new, True
        return state if changed else None

    return run


class TimerStore:
    """Reads and writes conversation SLA state; claims due deadlines."""

    def __init__(self, redis: Redis, keys: Keys, engine: SlaEngine) -> None:
        self.redis = redis
        self.keys = keys
        self.engine = engine
        self._save = redis.register_script(_SAVE)
        self._claim = redis.register_script(_CLAIM)
        self._requeue = redis.register_script(_REQUEUE)
        self._purge = redis.register_script(_PURGE)

    async def load(self, conversation_id: str) -> ConvState | None:
        """The stored state of a conversation, or None."""
        raw = await self.redis.hget(self.keys.sla_states(), conversation_id)
        return ConvState.from_json(raw) if raw else None

    async def apply(self, conversation_id: str, change: Change) -> ConvState | None:
        """Load, ``change``, save with compare-and-set; retried on concurrent writes.

        ``change`` may mutate the state it is given and returns the new state, or
        None for "nothing to do". Returns the stored state (None if unchanged).
        """
        async def attempt() -> ConvState | None:
            state = await self.load(conversation_id)
            expected = state.ver if state is not None else 0
            new = change(state)
            if new is None:
                return None
            if await self._store([(conversation_id, expected, new)]):
                raise StateConflict(
                    f"SLA state of conversation {conversation_id!r} changed {CAS_ATTEMPTS} times "
                    "while updating it; the input will be retried from Kafka"
                )
            return new

        # writers of one conversation are rare (the partition owner plus an escalation),
        # so contention is short: a jittered backoff of a few milliseconds
        return await retrying(
            attempt, (StateConflict,), f"SLA state update of {conversation_id!r}",
            backoff=Backoff(CAS_BACKOFF_INITIAL_S, CAS_BACKOFF_MAX_S, jitter=True),
            attempts=CAS_ATTEMPTS, log_level=logging.DEBUG,
        )

    async def apply_batch(self, changes: Sequence[tuple[str, Change]]) -> int:
        """Apply many changes in one read and one script call; returns states written.

        Changes of one conversation are applied in the given order. A conversation
        whose state moved meanwhile (compare-and-set failed) is retried alone.
        """
        per_conv: dict[str, list[Change]] = {}
        for conv, change in changes:
            per_conv.setdefault(conv, []).append(change)
        convs = list(per_conv)
        written = 0
        for lo in range(0, len(convs), BATCH_CONVERSATIONS):
            chunk = convs[lo:lo + BATCH_CONVERSATIONS]
            raws = await self.redis.hmget(self.keys.sla_states(), chunk)
            entries: list[tuple[str, int, ConvState]] = []
            for conv, raw in zip(chunk, raws, strict=True):
                state = ConvState.from_json(raw) if raw else None
                expected = state.ver if state is not None else 0
                new = _chain(per_conv[conv])(state)
                if new is not None:
                    entries.append((conv, expected, new))
            failed = await self._store(entries)
            written += len(entries) - len(failed)
            for conv in failed:
                if await self.apply(conv, _chain(per_conv[conv])) is not None:
                    written += 1
        return written

    async def _store(self, entries: Sequence[tuple[str, int, ConvState]]) -> list[str]:
        """Compare-and-set ``entries``; return the conversations whose version moved."""
        if not entries:
            return []
        args: list[str | int] = [len(entries)]
        for conv, expected, new in entries:
            schedule = self.engine.schedule(new)
            new.ver = expected + 1
            new.members = [m for m, _ in schedule]
            purge = self.engine.purge_after_ms(new)
            args += [conv, str(expected), new.to_json().decode(),
                     "" if purge is None else purge, len(schedule)]
            for m, due in schedule:
                args += [m, due]
        keys = [self.keys.sla_deadlines(), self.keys.sla_states(), self.keys.sla_resolved()]
        failed = await self._save(keys=keys, args=args)
        return [as_text(c) for c in failed]

    async def on_decision(self, decision: Decision) -> ConvState | None:
        """Apply a routing decision (idempotent)."""
        return await self.apply(
            decision.conversation_id, lambda s: self.engine.on_decision(s, decision)
        )

    async def on_agent_event(self, event: AgentEvent) -> ConvState | None:
        """Apply an agent event (idempotent)."""
        return await self.apply(
            event.conversation_id, lambda s: self.engine.on_agent_event(s, event)
        )

    async def claim_due(
        self, now_ms: int, limit: int = 500, lease_ms: int = 60_000
    ) -> list[tuple[Fired, ConvState | None]]:
        """Atomically take every deadline due at ``now_ms`` (at most ``limit``).

        A member returned here was removed by this call and by no other: the caller
        owns firing it, under a lease of ``lease_ms``. Call :meth:`ack` once its alert
        is produced; if the caller dies first, :meth:`requeue_expired` gives it back.
        """
        raw = await self._claim(
            keys=[self.keys.sla_deadlines(), self.keys.sla_states(), self.keys.sla_inflight()],
            args=[now_ms, limit, now_ms + lease_ms],
        )
        out: list[tuple[Fired, ConvState | None]] = []
        parsed: dict[str, ConvState | None] = {}
        for i in range(0, len(raw), 3):
            kind, stage, gen, conv = parse_member(as_text(raw[i]))
            if conv not in parsed:
                parsed[conv] = ConvState.from_json(raw[i + 2]) if raw[i + 2] else None
            out.append((Fired(kind, stage, gen, conv, int(float(raw[i + 1]))), parsed[conv]))
        return out

    async def ack(self, fired: Sequence[Fired]) -> None:
        """The alerts of these claimed deadlines are produced: end their leases."""
        if fired:
            await self.redis.zrem(
                self.keys.sla_inflight(),
                *(member(f.kind, f.stage, f.gen, f.conversation_id) for f in fired),
            )

    async def requeue_expired(self, now_ms: int) -> int:
        """Put deadlines whose lease expired (their claimer died) back to fire again."""
        return int(await self._requeue(
            keys=[self.keys.sla_inflight(), self.keys.sla_deadlines()], args=[now_ms]
        ))

    async def next_due_ms(self) -> int | None:
        """Due time of the earliest deadline, if any."""
        first = await self.redis.zrange(self.keys.sla_deadlines(), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def purge_resolved(self, before_ms: int) -> int:
        """Delete tombstones of conversations resolved before ``before_ms``."""
        n = await self._purge(
            keys=[self.keys.sla_resolved(), self.keys.sla_states()], args=[before_ms]
        )
        return int(n)

    async def open_states(self, limit: int = 100_000) -> list[ConvState]:
        """Every stored state (for gauges); scans at most ``limit`` conversations."""
        out: list[ConvState] = []
        async for _, raw in self.redis.hscan_iter(self.keys.sla_states(), count=1000):
            out.append(ConvState.from_json(raw))
            if len(out) >= limit:
                break
        return out
