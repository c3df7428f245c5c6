"""Ordered, first-match routing rules (config/routing.yaml, key ``rules``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from .vocabulary import Band, Channel, EntryKind, MessageFacts

__all__ = ["Facts", "Rule", "RuleSet", "When"]

_EMPTY: frozenset[str] = frozenset()


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


class _Compiled:
    """A rule's condition as sets, so a test is a few ``isdisjoint`` calls."""

    __slots__ = ("amount", "bands", "channels", "emotions", "entries", "hints", "rule",
                 "tags_any", "tags_none", "tiers")

    def __init__(self, rule: Rule) -> None:
        w = rule.when
        self.rule = rule
        self.tags_any = frozenset(w.tags_any)
        self.tags_none = frozenset(w.tags_none)
        self.emotions = frozenset(w.emotions_any)
        self.tiers = frozenset(w.tiers)
        self.channels = frozenset(w.channels)
        self.entries = frozenset(w.entries)
        self.bands = frozenset(w.bands)
        self.hints = frozenset(w.hints_any)
        self.amount = w.min_amount

    def holds(self, f: Facts) -> bool:
        if self.tags_any and self.tags_any.isdisjoint(f.tags):
            return False
        if self.tags_none and not self.tags_none.isdisjoint(f.tags):
            return False
        if self.emotions and self.emotions.isdisjoint(f.emotions):
            return False
        if self.tiers and f.tier not in self.tiers:
            return False
        if self.channels and f.channel not in self.channels:
            return False
        if self.entries and f.entry not in self.entries:
            return False
        if self.bands and f.band not in self.bands:
            return False
        if self.hints and self.hints.isdisjoint(f.hints):
            return False
        return not (self.amount is not None and (f.amount is None or f.amount < self.amount))


class RuleSet:
    """Rules in order; the first whose condition holds wins."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._compiled = tuple(_Compiled(r) for r in self.rules)

    def match(self, facts: Facts) -> Rule | None:
        """The first matching rule, or None."""
        for compiled in self._compiled:
            if compiled.holds(facts):
                return compiled.rule
        return None

    @staticmethod
    def facts(
        msg: MessageFacts, tags: Sequence[str], emotions: Sequence[str], tier: str, band: Band
    ) -> Facts:
        """Facts of one message (hot path: no generators, shared empty sets)."""
        if tags:
            expanded = set(tags)
            for t in tags:
                expanded.add(t.partition(".")[0])
            tag_set = frozenset(expanded)
        else:
            tag_set = _EMPTY
        return Facts(
            tags=tag_set,
            emotions=frozenset(emotions) if emotions else _EMPTY,
            tier=tier,
            channel=msg.channel,
            entry=msg.entry,
            band=band,
            hints=frozenset(msg.hints) if msg.hints else _EMPTY,
            amount=msg.order_amount,
        )
