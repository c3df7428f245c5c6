"""The hot-path decision: tag -> prioritise -> route. Pure: Redis facts come in as arguments.

The same code runs in the router worker (with facts fetched from Redis per batch)
and in ``omniroute classify`` (offline, no broker and no Redis).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..skills.config import RoutingConfig
from ..skills.priority import PriorityModel
from ..skills.rules import RuleSet
from ..skills.tagger import Tagger, TagResult
from .exceptions import NoRuleMatched
from .models import Decision, EntryKind, Envelope

__all__ = ["NO_REDIS_FACTS", "Pipeline", "RedisFacts"]


@dataclass(frozen=True, slots=True)
class RedisFacts:
    """Per-message facts the worker reads from Redis before deciding.

    Not the message's own facts (``skills.vocabulary.MessageFacts``, from ``Envelope.facts()``):
    these are what Redis remembers about the customer and conversation.
    """

    redis_tier: str | None = None
    prior_contacts: int = 0  # earlier contacts of this customer within the repeat window
    sticky_group: str | None = None  # group that served this conversation recently
    sticky_agent: str | None = None


NO_REDIS_FACTS = RedisFacts()


class Pipeline:
    """Decides one message at a time with one configuration version."""

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self.tagger = Tagger(config.taxonomy, config.model)
        self.priority = PriorityModel(config.routing.priority, config.taxonomy)
        self.rules = RuleSet(config.routing.rules)
        self._groups = config.groups.groups
        self._sticky = config.routing.sticky
        self._emergency = frozenset(config.routing.priority.emergency_tags)

    def _overflow(
        self, target: str, fallbacks: tuple[str, ...], depths: Mapping[str, int],
        explain: list[str],
    ) -> tuple[str, str | None]:
        """Walk the rule's fallbacks, then each group's overflow chain, past full groups."""
        chain = [target, *fallbacks]
        seen: set[str] = set()
        i = 0
        while i < len(chain):
            gid = chain[i]
            i += 1
            if gid in seen:
                continue
            seen.add(gid)
            group = self._groups[gid]
            depth = depths.get(gid, 0)
            if depth < group.max_queue and group.capacity > 0:
                return gid, (target if gid != target else None)
            why = "no capacity" if group.capacity == 0 else f"queue {depth} >= {group.max_queue}"
            explain.append(f"group {gid} full ({why})")
            if group.overflow is not None:
                chain.append(group.overflow)
        explain.append(f"every candidate full; keeping {target}")
        return target, None

    def decide(
        self,
        env: Envelope,
        now_ms: int,
        facts: RedisFacts = NO_REDIS_FACTS,
        depths: Mapping[str, int] | None = None,
        tagged: TagResult | None = None,
    ) -> Decision:
        """The decision for one envelope, with every reason spelled out.

        ``tagged``: the tagger's result for ``env.text`` when the caller already has it
        (the worker tags a batch while its Redis facts are on the way).
        """
        if tagged is None:
            tagged = self.tagger.tag(env.text)
        msg = env.facts()
        tier = self.priority.tier_of(msg, facts.redis_tier)
        priority = self.priority.score(
            msg, tagged.tags, tagged.emotions, tier, facts.prior_contacts
        )
        tag_ids = [t.id for t in tagged.tags]
        rule_facts = RuleSet.facts(
            msg, tag_ids, [e.id for e in tagged.emotions], tier, priority.band
        )
        rule = self.rules.match(rule_facts)
        if rule is None:  # load_config guarantees a catch-all; kept for hand-built configs
            raise NoRuleMatched("no rule matched and the configuration has no catch-all rule")
        explain = [f"rule {rule.id} -> {rule.target}"]
        target = rule.target
        agent: str | None = None
        emergency = bool(tag_ids) and not self._emergency.isdisjoint(rule_facts.tags)
        if (
            self._sticky.enabled
            and facts.sticky_group is not None
            and facts.sticky_group in self._groups
            and not emergency
            and facts.sticky_group != target
        ):
            explain.append(f"sticky: conversation was served by {facts.sticky_group}")
            target = facts.sticky_group
        if self._sticky.enabled and facts.sticky_agent is not None and target == facts.sticky_group:
            agent = facts.sticky_agent
            explain.append(f"sticky: preferred agent {agent}")
        overflow_from: str | None = None
        group = self._groups[target]
        if depths is not None and (depths.get(target, 0) >= group.max_queue
                                   or group.capacity == 0):
            target, overflow_from = self._overflow(target, rule.fallbacks, depths, explain)
            if overflow_from is not None:
                explain.append(f"overflow {overflow_from} -> {target}")
                agent = None
        return Decision(
            message_id=env.id,
            conversation_id=env.conversation_id,
            channel=env.channel,
            customer_id=env.customer.id,
            tags=tagged.tags,
            priority=priority,
            skill_group=target,
            queue=target,
            rule_id=rule.id,
            config_version=self.config.version,
            received_at_ms=env.received_at_ms,
            decided_at_ms=now_ms,
            overflow_from=overflow_from,
            agent_id=agent,
            explain=tuple(explain),
            room=(env.entry.id if env.entry is not None and env.entry.kind is EntryKind.LIVE_ROOM
                  else None),
        )
