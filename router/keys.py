"""Redis key layout. Every key starts with ``Settings.redis_prefix`` (default ``omni``).

Keys carry hash tags (``{...}``) chosen so that every script of the router touches
one hash slot on Redis Cluster:

* ``{q}``: every group queue, the groups set and the enqueue marks share one slot,
  so one script can enqueue a whole batch and a move between two queues is atomic;
* ``{r:X}`` with X one of 16 routing buckets (the first hex digit of the SHA-1 of
  the message, conversation or customer id; Lua computes the same with
  ``redis.sha1hex``): message records, conversation state and contact history. A
  batch is split per bucket, one script call per bucket, run concurrently;
* ``{sla}``, ``{surge}``: the SLA timers and the surge detector, one slot each;
* the agent desk (registrations, liveness, held conversations, assignments) lives in
  ``{q}`` with the queues, so a claim (check the agent's slots, pop the most urgent
  head, record the owner) and a conversation action (release, transfer back onto a
  queue) are each one script in one slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = ["BUCKETS", "Keys", "bucket_of"]

BUCKETS: Final = 16  # routing buckets (hash tags {r:0} .. {r:f}); part of the key layout


def bucket_of(ident: str) -> str:
    """The routing bucket of an id: the first hex digit of its SHA-1 (Lua:
    ``string.sub(redis.sha1hex(id), 1, 1)``)."""
    return hashlib.sha1(ident.encode(), usedforsecurity=False).hexdigest()[0]


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every Redis key the project uses, under one prefix."""

    prefix: str = "omni"

    def queue(self, group: str) -> str:
        """Sorted set: the work queue of a skill group; member = message id,
        score = band * 1e13 + received_at ms (lowest first = most urgent, then oldest)."""
        return f"{self.prefix}:{{q}}:queue:{group}"

    def enqueued(self) -> str:
        """Sorted set (Redis Cluster only): message id -> ms, marks of enqueues whose message
        record is not yet settled; a replay finds the mark and does not enqueue again."""
        return f"{self.prefix}:{{q}}:enq"

    def bucket_tag(self, bucket: str) -> str:
        """The key prefix of one routing bucket (``omni:{r:X}``)."""
        return f"{self.prefix}:{{r:{bucket}}}"

    def decision(self, message_id: str) -> str:
        """Hash: the one decision taken for a message (fields ``group``, ``decision``).
        Its existence is the router's dedupe record: written once, with the enqueue."""
        return f"{self.prefix}:{{r:{bucket_of(message_id)}}}:msg:{message_id}"

    def customer_tiers(self) -> str:
        """Hash: customer id -> declared tier (``vip``, ``gold``, ``normal`` ...)."""
        return f"{self.prefix}:customers:tier"

    def contacts(self, customer_id: str) -> str:
        """Sorted set: a customer's recent contact timestamps (ms) for repeat detection."""
        return f"{self.prefix}:{{r:{bucket_of(customer_id)}}}:contacts:{customer_id}"

    def groups(self) -> str:
        """Set: skill groups that have ever had a queue (for the queue gauges)."""
        return f"{self.prefix}:{{q}}:groups"

    def conversation(self, conversation_id: str) -> str:
        """Hash: conversation state (last group, last agent, last decided ms)."""
        return f"{self.prefix}:{{r:{bucket_of(conversation_id)}}}:conv:{conversation_id}"

    def adapter_dedupe(self, channel: str, channel_msg_id: str) -> str:
        """String with TTL: an adapter has already produced this channel message."""
        return f"{self.prefix}:seen:{channel}:{{{channel_msg_id}}}"

    def ingest_signature(self, signature: str) -> str:
        """String with TTL: a signed ``POST /v1/messages`` request already seen (its
        ``X-Omni-Signature`` hex), kept while its timestamp is inside the window."""
        return f"{self.prefix}:sig:{{{signature}}}"

    def relax_outbox(self) -> str:
        """Hash: relaxations' system ``transfer`` events not yet on omni.agent-events
        (field ``<at ms>:<message id>:<to group>``, value the event JSON); written by the
        move's script, deleted once the broker acknowledged the event."""
        return f"{self.prefix}:{{q}}:relax-outbox"

    def relax_moves(self) -> str:
        """Hash (Redis Cluster only): message id -> a relaxation moved between queues whose
        decision record (another slot) is not yet updated (JSON: from, to, note); settled
        by the next scan of any worker."""
        return f"{self.prefix}:{{q}}:relax-moves"

    # --- agents (agent API, sla/agents.py): {q}, one slot with the queues -------
    def agents(self) -> str:
        """Sorted set: agent id -> last heartbeat (epoch ms); live agents are recent ones."""
        return f"{self.prefix}:{{q}}:agents"

    def agent(self, agent_id: str) -> str:
        """Hash: an agent's registration (``groups`` JSON list, ``slots``, ``seen_ms``)."""
        return f"{self.prefix}:{{q}}:agent:{agent_id}"

    def agent_active(self, agent_id: str) -> str:
        """Set: conversation ids an agent currently holds (one slot each)."""
        return f"{self.prefix}:{{q}}:agent:{agent_id}:active"

    def assignment_prefix(self) -> str:
        """What :meth:`assignment` puts before the conversation id (the claim script
        builds the assignment key of a conversation it learns while it runs)."""
        return f"{self.prefix}:{{q}}:assign:"

    def assignment(self, conversation_id: str) -> str:
        """Hash: who holds a conversation (``agent``, ``group``, ``message_id``, ``state``,
        ``at_ms``); kept for a day after resolve so retried actions stay idempotent."""
        return f"{self.assignment_prefix()}{conversation_id}"

    # --- SLA (sla/timers.py): {sla} ----------------------------------------------

    def sla_deadlines(self) -> str:
        """Sorted set: SLA deadline member -> due epoch ms (claimed atomically by Lua)."""
        return f"{self.prefix}:{{sla}}:deadlines"

    def sla_inflight(self) -> str:
        """Sorted set: claimed deadline member -> lease expiry ms; acked once its alert is
        produced, re-queued by any worker when the lease expires (a crash mid-fire)."""
        return f"{self.prefix}:{{sla}}:inflight"

    def sla_states(self) -> str:
        """Hash: conversation id -> SLA state JSON (timers, policy, version)."""
        return f"{self.prefix}:{{sla}}:conv"

    def sla_resolved(self) -> str:
        """Sorted set: resolved conversation id -> resolved epoch ms (tombstones to purge)."""
        return f"{self.prefix}:{{sla}}:resolved"

    def surge_state(self) -> str:
        """Hash: surge scope -> detector state JSON (baseline, streaks, active)."""
        return f"{self.prefix}:{{surge}}:state"

    def surge_window(self, window_index: int) -> str:
        """Hash: surge scope -> arrivals in one window (index = epoch ms // window ms)."""
        return f"{self.prefix}:{{surge}}:w:{window_index}"

    def surge_closed(self, window_index: int) -> str:
        """String with TTL: the worker that evaluated a closed surge window (a lock)."""
        return f"{self.prefix}:{{surge}}:closed:{window_index}"

    # --- surge forecast (sla/forecast_store.py): {surge}, one slot with the windows --
    def surge_bucket(self, bucket_index: int) -> str:
        """Hash: forecast scope -> arrivals, completions or heat in one short bucket
        (index = epoch ms // bucket ms; scopes: sla/forecast.py)."""
        return f"{self.prefix}:{{surge}}:b:{bucket_index}"

    def surge_seen(self, bucket_index: int) -> str:
        """Set: ids of the records counted in one short bucket (message id, agent event
        id, signal record offset), so a replayed batch is counted once."""
        return f"{self.prefix}:{{surge}}:seen:{bucket_index}"

    def forecast_state(self) -> str:
        """String: the forecast's state JSON (baselines, learned handling times, warned
        groups, active incidents, advised peaks, last evaluated bucket)."""
        return f"{self.prefix}:{{surge}}:fstate"

    def forecast_lease(self) -> str:
        """String with TTL: the worker evaluating the forecast now (a lease token)."""
        return f"{self.prefix}:{{surge}}:flease"

    def forecast_groups(self) -> str:
        """Hash: skill group -> its latest forecast JSON (every worker exports it)."""
        return f"{self.prefix}:{{surge}}:fgroups"

    def surge_suppressed(self) -> str:
        """Set: tags whose window-detector ``incident`` was suppressed because the
        forecast's was on (their ``incident.clear`` is suppressed too)."""
        return f"{self.prefix}:{{surge}}:suppressed"
