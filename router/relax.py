"""Skill relaxation: a message that waits longer than its rule's ``relax_after_s`` moves on.

A message routed by a rule with ``relax_after_s: T`` and ``fallbacks: [B, C]``
that still waits in its group's queue after T seconds moves to B; after 2T to C.
Any worker may run the scan: each move is one atomic script that checks the
message is still waiting in the expected group, so a message is moved once and
a message an agent already claimed is never put back.

The SLA worker learns of a move from a system ``transfer`` event on
omni.agent-events. The move and its event never part ways: the same script that
moves the message records the event in an outbox (a Redis hash), and
:meth:`Relaxer.flush` publishes what the outbox holds and deletes each event only
once the broker has acknowledged it. An event whose publication fails (broker
down) stays for the next tick; a duplicate after a retry is harmless, because a
transfer to the group the SLA state is already in changes nothing.

On Redis Cluster the queues and the outbox share the ``{q}`` slot, the message's
decision record sits in its routing bucket (``{r:X}``, see ``router.keys``), so the
move runs in three idempotent steps: *move* (one ``{q}`` script: the queue move, its
outbox event and a mark of the unsettled move, all or nothing, so the move and its
event still never part ways), *settle* (the decision's ``group`` and ``relaxed``, in
its bucket, only if it still names the old group), *unmark* (drop the mark if it is
still this move's). Every scan first settles the marks a crashed worker left, so a
decision never stays behind its queue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

import orjson
from redis.asyncio import Redis

from ..skills.rules import Rule
from .events import AgentEvent
from .keys import Keys
from .models import Band
from .queues import BAND_SPAN
from .redis_client import is_cluster_client

__all__ = ["Move", "Relaxer"]

log = logging.getLogger(__name__)
SCAN_LIMIT: Final = 500  # candidates per group and band per scan
FLUSH_BATCH: Final = 500  # outbox events per acknowledged send
RELAX_AGENT: Final = "system:relax"  # agent_id of the transfer events

_MOVE_LUA: Final = """
-- KEYS[1] = from queue, KEYS[2] = to queue, KEYS[3] = decision hash, KEYS[4] = outbox
-- ARGV[1] = message id, ARGV[2] = from group, ARGV[3] = to group, ARGV[4] = note,
-- ARGV[5] = outbox field ('' = no event: no conversation), ARGV[6] = the event JSON
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if redis.call('HGET', KEYS[3], 'group') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('HSET', KEYS[3], 'group', ARGV[3], 'relaxed', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], ARGV[5], ARGV[6]) end
return 1
"""

_MOVE_Q_LUA: Final = """
-- Redis Cluster step 1, the {q} slot. KEYS[1] = from queue, KEYS[2] = to queue,
-- KEYS[3] = outbox, KEYS[4] = groups set, KEYS[5] = unsettled moves.
-- ARGV[1] = message id, ARGV[2] = to group, ARGV[3] = outbox field ('' = no event),
-- ARGV[4] = the event JSON, ARGV[5] = the move's mark (JSON: from, to, note)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) end
redis.call('HSET', KEYS[5], ARGV[1], ARGV[5])
return 1
"""

_SETTLE_LUA: Final = """
-- Redis Cluster step 2, the message's bucket. KEYS[1] = decision hash.
-- ARGV[1] = from group, ARGV[2] = to group, ARGV[3] = note
if redis.call('HGET', KEYS[1], 'group') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'group', ARGV[2], 'relaxed', ARGV[3])
end
return 1
"""

_UNMARK_LUA: Final = """
-- Redis Cluster step 3, the {q} slot. KEYS[1] = unsettled moves; ARGV[1] = message id,
-- ARGV[2] = the mark step 1 wrote (a later move's mark stays)
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Move:
    """One relaxation that happened."""

    message_id: str
    conversation_id: str
    rule_id: str
    from_group: str
    to_group: str
    waited_s: float


Publish = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[None]]


class Relaxer:
    """Scans queues for messages past their rule's relaxation timeout and moves them;
    each move's ``transfer`` event goes to the outbox in the same script."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.cluster = is_cluster_client(redis)
        self._move = redis.register_script(_MOVE_LUA)
        self._move_q = redis.register_script(_MOVE_Q_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)
        self._unmark = redis.register_script(_UNMARK_LUA)

    async def run_once(self, rules: tuple[Rule, ...], now_ms: int) -> list[Move]:
        """One scan over every relaxing rule; returns the moves made (their events are
        in the outbox: publish them with :meth:`flush`)."""
        moves: list[Move] = []
        if self.cluster:
            await self.settle_pending()
        for rule in rules:
            if rule.relax_after_s is None or not rule.fallbacks:
                continue
            chain = (rule.target, *rule.fallbacks)
            step_ms = int(rule.relax_after_s * 1000)
            for hop in range(len(chain) - 1):
                moves += await self._relax_group(rule, chain[hop], chain[hop + 1],
                                                 now_ms - (hop + 1) * step_ms, now_ms)
        return moves

    async def _relax_group(
        self, rule: Rule, group: str, to_group: str, received_before_ms: int, now_ms: int
    ) -> list[Move]:
        if received_before_ms <= 0:
            return []
        queue = self.keys.queue(group)
        candidates: list[tuple[bytes | str, float]] = []
        for band in Band:
            lo = band.rank * BAND_SPAN
            rows = cast(  # redis-py's return type is a union of every reply shape
                list[tuple[bytes, float]],
                await self.redis.zrangebyscore(
                    queue, lo, lo + received_before_ms, start=0, num=SCAN_LIMIT, withscores=True
                ),
            )
            candidates += rows
        moves: list[Move] = []
        for member, score in candidates:
            message_id = member.decode() if isinstance(member, bytes) else member
            dkey = self.keys.decision(message_id)
            raw, stored_group = await self.redis.hmget(dkey, ["decision", "group"])
            decided = orjson.loads(raw) if raw is not None else {}
            if decided.get("rule_id") != rule.id:
                continue  # routed by another rule (or expired): not this rule's to relax
            if self.cluster and _text(stored_group) != group:
                continue  # (standalone: the move's script checks this atomically)
            waited_s = (now_ms - score % BAND_SPAN) / 1000
            note = f"relaxed after {waited_s:.0f} s: {group} -> {to_group} (rule {rule.id})"
            conversation_id = str(decided.get("conversation_id", ""))
            field, event = "", b""
            if conversation_id:
                field = f"{now_ms:013d}:{message_id}:{to_group}"
                event = AgentEvent(
                    type="transfer", conversation_id=conversation_id, agent_id=RELAX_AGENT,
                    at_ms=now_ms, group=group, to_group=to_group, message_id=message_id,
                    reason=f"waited {waited_s:.0f} s past rule {rule.id}'s relax_after_s",
                ).to_json()
            if self.cluster:
                moved = await self._move_cluster(message_id, group, to_group, note, field,
                                                 event)
            else:
                moved = await self._move(
                    keys=[queue, self.keys.queue(to_group), dkey, self.keys.relax_outbox()],
                    args=[message_id, group, to_group, note, field, event],
                )
                if moved == 1:
                    await self.redis.sadd(self.keys.groups(), to_group)
            if moved == 1:
                moves.append(Move(message_id, conversation_id, rule.id,
                                  group, to_group, waited_s))
                log.info("%s %s", message_id, note)
        return moves

    async def _move_cluster(self, message_id: str, group: str, to_group: str, note: str,
                            field: str, event: bytes) -> int:
        """The three steps of a move on Redis Cluster (module docstring); 1 if moved."""
        mark = orjson.dumps({"from": group, "to": to_group, "note": note})
        moved = int(await self._move_q(
            keys=[self.keys.queue(group), self.keys.queue(to_group), self.keys.relax_outbox(),
                  self.keys.groups(), self.keys.relax_moves()],
            args=[message_id, to_group, field, event, mark],
        ))
        if moved == 1:
            await self._settle_one(message_id, mark)
        return moved

    async def _settle_one(self, message_id: str, mark: bytes) -> None:
        row = orjson.loads(mark)
        await self._settle(keys=[self.keys.decision(message_id)],
                           args=[row["from"], row["to"], row["note"]])
        await self._unmark(keys=[self.keys.relax_moves()], args=[message_id, mark])

    async def settle_pending(self) -> int:
        """Redis Cluster: finish the moves whose decision a crashed scan left behind (the
        queue move and its event are done; the decision still names the old group).
        Returns how many marks there were."""
        marks = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.relax_moves()))
        for member, mark in sorted(marks.items()):
            await self._settle_one(_text(member) or "", mark)
        return len(marks)

    async def pending(self) -> int:
        """Transfer events in the outbox, not yet acknowledged by the broker."""
        return int(await self.redis.hlen(self.keys.relax_outbox()))

    async def flush(self, publish: Publish) -> int:
        """Publish the outbox's events, oldest first, deleting each batch once acknowledged.

        Args:
            publish: Sends (key, value) records to omni.agent-events and returns only
                after every acknowledgement (raises otherwise).

        Returns:
            The number of events published. If ``publish`` raises, the events not yet
            acknowledged stay in the outbox for the next call, and the error propagates.
        """
        outbox = self.keys.relax_outbox()
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(outbox))
        fields = sorted(raw)  # "<at ms>:...": the order the moves were made
        done = 0
        for i in range(0, len(fields), FLUSH_BATCH):
            chunk = fields[i : i + FLUSH_BATCH]
            records = []
            for f in chunk:
                try:
                    event = AgentEvent.from_json(raw[f])
                except ValueError as exc:  # InvalidRecord: written by hand, never by us
                    log.error("relax outbox: dropping unreadable event %r (%s)", f, exc)
                    continue
                records.append((event.conversation_id.encode(), raw[f]))
            await publish(records)
            await self.redis.hdel(outbox, *chunk)
            done += len(chunk)
        return done


def _text(value: object) -> str | None:
    """A Redis reply as text (None for nil)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
