"""Skill relaxation: a message that waits longer than its rule's ``relax_after_s`` moves on.

A message routed by a rule with ``relax_after_s: T`` and ``fallbacks: [B, C]``
that still waits in its group's queue after T seconds moves to B; after 2T to C.
Any worker may run the scan: each move is one atomic script that checks the
message is still waiting in the expected group, so a message is moved once and
a message an agent already claimed is never put back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, cast

import orjson
from redis.asyncio import Redis

from ..skills.rules import Rule
from .keys import Keys
from .models import Band
from .queues import BAND_SPAN

__all__ = ["Move", "Relaxer"]

log = logging.getLogger(__name__)
SCAN_LIMIT: Final = 500  # candidates per group and band per scan

_MOVE_LUA: Final = """
-- KEYS[1] = from queue, KEYS[2] = to queue, KEYS[3] = decision hash
-- ARGV[1] = message id, ARGV[2] = from group, ARGV[3] = to group, ARGV[4] = note
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if redis.call('HGET', KEYS[3], 'group') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('HSET', KEYS[3], 'group', ARGV[3], 'relaxed', ARGV[4])
return 1
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


class Relaxer:
    """Scans queues for messages past their rule's relaxation timeout and moves them."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._move = redis.register_script(_MOVE_LUA)

    async def run_once(self, rules: tuple[Rule, ...], now_ms: int) -> list[Move]:
        """One scan over every relaxing rule; returns the moves made."""
        moves: list[Move] = []
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
            raw = await self.redis.hget(dkey, "decision")
            decided = orjson.loads(raw) if raw is not None else {}
            if decided.get("rule_id") != rule.id:
                continue  # routed by another rule (or expired): not this rule's to relax
            waited_s = (now_ms - score % BAND_SPAN) / 1000
            note = f"relaxed after {waited_s:.0f} s: {group} -> {to_group} (rule {rule.id})"
            moved = await self._move(
                keys=[queue, self.keys.queue(to_group), dkey],
                args=[message_id, group, to_group, note],
            )
            if moved == 1:
                await self.redis.sadd(self.keys.groups(), to_group)
                moves.append(Move(message_id, str(decided.get("conversation_id", "")), rule.id,
                                  group, to_group, waited_s))
                log.info("%s %s", message_id, note)
        return moves
