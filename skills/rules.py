"""Ordered, first-match routing rules (config/routing.yaml, key ``rules``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from router.models import Band, Channel, EntryKind, Envelope

__all__ = ["Facts", "Rule", "RuleSet", "When"]


class When(BaseModel):
    """Condition of a rule; every given field must hold (an empty ``when`` always holds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags_any: tuple[str, ...] = Field((), description="a tag equal to or under one of these")
    tags_none: tuple[str, ...] = Field((), description="no tag equal to or under these")
    emotions_any: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    channels: tuple[Channel, ...] = ()
    entries: tuple[EntryKind, ...] = ()
    bands: tuple[Band, ...] = ()
    hints_any: tuple[str, ...] = ()
    min_amount: float | None = Field(None, ge=0)


class Rule(BaseModel):
    """``when`` holds -> route to ``target``; ``fallbacks`` are tried in order on overflow
    and after ``relax_after_s`` of waiting (skill relaxation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    description: str = ""
    when: When = Field(default_factory=When)
    target: str
    fallbacks: tuple[str, ...] = ()
    relax_after_s: float | None = Field(None, gt=0)


@dataclass(frozen=True, slots=True)
class Facts:
    """What rules can test, computed once per message."""

    tags: frozenset[str]  # full ids and their top-level ids
    emotions: frozenset[str]
    tier: str
    channel: Channel
    entry: EntryKind | None
    band: Band
    hints: frozenset[str]
    amount: float | None

    @staticmethod
    def expand(tag_ids: Iterable[str]) -> frozenset[str]:
        """``logistics.delay`` -> {``logistics.delay``, ``logistics``}."""
        out: set[str] = set()
        for t in tag_ids:
            out.add(t)
            out.add(t.split(".", 1)[0])
        return frozenset(out)


def _holds(w: When, f: Facts) -> bool:
    if w.tags_any and not any(t in f.tags for t in w.tags_any):
        return False
    if w.tags_none and any(t in f.tags for t in w.tags_none):
        return False
    if w.emotions_any and not any(e in f.emotions for e in w.emotions_any):
        return False
    if w.tiers and f.tier not in w.tiers:
        return False
    if w.channels and f.channel not in w.channels:
        return False
    if w.entries and f.entry not in w.entries:
        return False
    if w.bands and f.band not in w.bands:
        return False
    if w.hints_any and not any(h in f.hints for h in w.hints_any):
        return False
    return not (w.min_amount is not None and (f.amount is None or f.amount < w.min_amount))


class RuleSet:
    """Rules in order; the first whose condition holds wins."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)

    def match(self, facts: Facts) -> Rule | None:
        """The first matching rule, or None."""
        for rule in self.rules:
            if _holds(rule.when, facts):
                return rule
        return None

    @staticmethod
    def facts(
        env: Envelope, tags: Iterable[str], emotions: Iterable[str], tier: str, band: Band
    ) -> Facts:
        """Facts of one message."""
        return Facts(
            tags=Facts.expand(tags),
            emotions=frozenset(emotions),
            tier=tier,
            channel=env.channel,
            entry=env.entry.kind if env.entry else None,
            band=band,
            hints=frozenset(env.hints),
            amount=env.order.amount if env.order else None,
        )
