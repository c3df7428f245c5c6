"""The escalation ladder: what happens to a breached conversation's queued messages.

Each rung can raise the priority (re-score the queued members ``raise_bands`` bands
up, keeping their age order), move them to another skill group (ZREM from one
queue, ZADD to the other, in one script so a message is never in two queues nor
lost), and name who is notified in the ``sla.escalation`` alert. Messages already
claimed by an agent are no longer in a queue and are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from ..router.keys import Keys
from .config import EscalationStep

__all__ = ["EscalationResult", "Escalator"]

BAND_SPAN: Final = 10_000_000_000_000  # 1e13: score span of one priority band

_ESCALATE = """
-- KEYS[1] from queue, KEYS[2] to queue, KEYS[3] groups set
-- ARGV[1] bands to raise, ARGV[2] band span, ARGV[3] to group ('' = stay), ARGV[4..] ids
local raise = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local moved = 0
for i = 4, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    score = tonumber(score)
    local band = math.floor(score / span)
    local age = score - band * span
    local newband = math.max(0, band - raise)
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], newband * span + age, ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 and ARGV[3] ~= '' then redis.call('SADD', KEYS[3], ARGV[3]) end
return moved
"""


@dataclass(frozen=True, slots=True)
class EscalationResult:
    """What one rung did: how many queued messages it touched and where they are now."""

    touched: int
    group: str


class Escalator:
    """Applies escalation rungs to the work queues."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._script = redis.register_script(_ESCALATE)

    async def apply(
        self, step: EscalationStep, group: str, message_ids: Sequence[str]
    ) -> EscalationResult:
        """Re-score and/or move the still-queued ``message_ids`` of ``group``."""
        if not message_ids or (step.raise_bands == 0 and not step.move_to):
            return EscalationResult(0, group)
        target = step.move_to or group
        n = await self._script(
            keys=[self.keys.queue(group), self.keys.queue(target), self.keys.groups()],
            args=[step.raise_bands, BAND_SPAN, step.move_to or "", *message_ids],
        )
        return EscalationResult(int(n), target if int(n) else group)
