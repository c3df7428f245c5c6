"""Explainable priority: a score from documented parts, then a band P0-P4.

score = max over tags of (urgency x importance x points_per_step)
      + tier points + high-value order points + compliance points
      + repeat-contact points + emotion points + synchronous-channel points + hint points
A personal-safety tag forces P0. Every part that contributes leaves a reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .vocabulary import Band, MessageFacts, Priority, TagHit

if TYPE_CHECKING:
    from .taxonomy import Taxonomy

__all__ = ["PriorityModel", "PrioritySettings"]


class HighValue(BaseModel):
    """Orders at or above ``amount`` yuan add ``points``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    amount: float = Field(100.0, ge=0)
    points: float = Field(10.0, ge=0)


class Repeat(BaseModel):
    """The ``contacts``-th contact (or later) of a customer within ``window_s`` adds ``points``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    contacts: int = Field(3, ge=2)
    window_s: float = Field(86_400.0, gt=0)
    points: float = Field(15.0, ge=0)


class PrioritySettings(BaseModel):
    """Key ``priority`` of config/routing.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    points_per_step: float = Field(5.0, ge=0, description="per unit of urgency x importance")
    bands: dict[Band, float] = Field(
        default_factory=lambda: {Band.P0: 80.0, Band.P1: 60.0, Band.P2: 40.0, Band.P3: 20.0},
        description="minimum score of each band; below the lowest is P4",
    )
    tiers: dict[str, float] = Field(
        default_factory=lambda: {"svip": 30.0, "vip": 20.0, "gold": 10.0, "normal": 0.0}
    )
    default_tier: str = "normal"
    high_value: HighValue = Field(default_factory=HighValue)
    compliance_tags: tuple[str, ...] = ("legal",)
    compliance_points: float = Field(25.0, ge=0)
    emergency_tags: tuple[str, ...] = ("safety",)
    repeat: Repeat = Field(default_factory=Repeat)
    synchronous_points: float = Field(10.0, ge=0, description="phone and live stream")
    hint_points: dict[str, float] = Field(default_factory=lambda: {"callback": 10.0})

    @field_validator("bands")
    @classmethod
    def _bands_descend(cls, bands: dict[Band, float]) -> dict[Band, float]:
        shown = "{" + ", ".join(f"{b.value}: {v:g}" for b, v in sorted(
            bands.items(), key=lambda kv: kv[0].rank)) + "}"
        if Band.P4 in bands:
            raise ValueError(f"P4 has no threshold: it is every score below the lowest band "
                             f"(got {shown})")
        ordered = [bands[b] for b in sorted(bands, key=lambda b: b.rank)]
        if any(a <= b for a, b in itertools.pairwise(ordered)):
            raise ValueError(
                f"band thresholds must fall from P0 to P3, got {shown}; "
                "e.g. {P0: 80, P1: 60, P2: 40, P3: 20}"
            )
        return bands


class _TagInfo(NamedTuple):
    points: float
    reason: str
    compliance: bool
    emergency: bool


def _under(tag_id: str, roots: Sequence[str]) -> bool:
    return any(tag_id == r or tag_id.startswith(r + ".") for r in roots)


class PriorityModel:
    """Scores one message; pure (all Redis facts are passed in)."""

    def __init__(self, cfg: PrioritySettings, taxonomy: Taxonomy) -> None:
        self.cfg = cfg
        self._emotion_weights: Mapping[str, float] = {
            eid: e.weight for eid, e in taxonomy.emotions.items()
        }
        self._bands = sorted(cfg.bands.items(), key=lambda kv: kv[0].rank)
        # Everything that depends only on the configuration is computed once here,
        # reason strings included: the hot path only looks things up.
        self._tags: dict[str, _TagInfo] = {}
        for tag_id in taxonomy.tag_ids():
            leaf = taxonomy.leaf(tag_id)
            pts = leaf.urgency * leaf.importance * cfg.points_per_step
            self._tags[tag_id] = _TagInfo(
                pts,
                f"{tag_id} ({leaf.name}): urgency {leaf.urgency} x importance "
                f"{leaf.importance} -> +{pts:g}",
                _under(tag_id, cfg.compliance_tags),
                _under(tag_id, cfg.emergency_tags),
            )
        self._tier_reasons = {t: f"customer tier {t} -> +{p:g}" for t, p in cfg.tiers.items() if p}
        self._sync_reason = f"synchronous channel {{}} -> +{cfg.synchronous_points:g}"
        self._repeat_nth = cfg.repeat.contacts

    def tier_of(self, msg: MessageFacts, redis_tier: str | None) -> str:
        """Redis tier wins over the tier the channel declared; else the default."""
        tier = redis_tier or msg.declared_tier or self.cfg.default_tier
        return tier.lower()

    def score(
        self,
        msg: MessageFacts,
        tags: Sequence[TagHit],
        emotions: Sequence[TagHit],
        tier: str,
        prior_contacts: int = 0,
    ) -> Priority:
        """Priority with its reasons. ``prior_contacts``: earlier contacts in the window."""
        cfg = self.cfg
        reasons: list[str] = []
        score = 0.0
        best: _TagInfo | None = None
        legal: list[str] = []
        emergency: list[str] = []
        for hit in tags:
            info = self._tags.get(hit.id)
            if info is None:
                continue
            if best is None or info.points > best.points:
                best = info
            if info.compliance:
                legal.append(hit.id)
            if info.emergency:
                emergency.append(hit.id)
        if best is not None:
            score += best.points
            reasons.append(best.reason)
        tier_reason = self._tier_reasons.get(tier)
        if tier_reason is not None:
            score += cfg.tiers[tier]
            reasons.append(tier_reason)
        amount = msg.order_amount
        if amount is not None and amount >= cfg.high_value.amount and cfg.high_value.points:
            score += cfg.high_value.points
            reasons.append(
                f"order amount {amount:g} >= {cfg.high_value.amount:g} yuan -> "
                f"+{cfg.high_value.points:g}"
            )
        if legal and cfg.compliance_points:
            score += cfg.compliance_points
            reasons.append(f"compliance risk ({', '.join(legal)}) -> +{cfg.compliance_points:g}")
        nth = prior_contacts + 1
        if nth >= self._repeat_nth and cfg.repeat.points:
            score += cfg.repeat.points
            reasons.append(
                f"repeat contact: contact #{nth} within {cfg.repeat.window_s:g} s -> "
                f"+{cfg.repeat.points:g}"
            )
        for emo in emotions:
            w = self._emotion_weights.get(emo.id, 0.0)
            if w:
                score += w
                reasons.append(f"emotion {emo.id} ({'、'.join(emo.keywords[:3])}) -> +{w:g}")
        if cfg.synchronous_points and msg.synchronous:
            score += cfg.synchronous_points
            reasons.append(self._sync_reason.format(msg.channel.value))
        for hint in msg.hints:
            pts = cfg.hint_points.get(hint, 0.0)
            if pts:
                score += pts
                reasons.append(f"channel hint {hint} -> +{pts:g}")
        if emergency:
            reasons.append(f"personal-safety emergency ({', '.join(emergency)}) -> P0")
            return Priority(score=round(score, 2), band=Band.P0, reasons=tuple(reasons))
        band = Band.P4
        for b, threshold in self._bands:
            if score >= threshold:
                band = b
                reasons.append(f"score {score:g} >= {threshold:g} -> {b.value}")
                break
        else:
            reasons.append(f"score {score:g} below every band threshold -> P4")
        return Priority(score=round(score, 2), band=band, reasons=tuple(reasons))
