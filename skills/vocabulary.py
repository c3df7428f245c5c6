"""The closed vocabularies of a decision and the typed facts of one message.

These are skills' own types: the decision logic reads nothing else. The message
contracts in ``router.models`` re-export them, so an envelope's ``channel`` is a
:class:`Channel` and a decision's ``priority`` a :class:`Priority` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "SYNCHRONOUS_CHANNELS",
    "Band",
    "Channel",
    "EntryKind",
    "MessageFacts",
    "Priority",
    "TagHit",
]


class Channel(StrEnum):
    """Where a message came from."""

    WECHAT = "wechat"
    WECOM = "wecom"
    EMAIL = "email"
    PHONE = "phone"
    LIVESTREAM = "livestream"
    APP = "app"


SYNCHRONOUS_CHANNELS: Final = frozenset({Channel.PHONE, Channel.LIVESTREAM})


class EntryKind(StrEnum):
    """Where the customer entered the conversation from."""

    LIVE_ROOM = "live_room"
    ORDER = "order"
    PRODUCT = "product"
    IVR = "ivr"
    OTHER = "other"


class Band(StrEnum):
    """Priority band, P0 (most urgent) to P4."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @property
    def rank(self) -> int:
        """0 for P0 ... 4 for P4."""
        return int(self.value[1])


@dataclass(frozen=True, slots=True)
class TagHit:
    """A taxonomy tag and the evidence that produced it.

    Attributes:
        id: ``category.leaf``, e.g. ``logistics.delay``.
        keywords: The taxonomy keywords found in the text (as written in the config).
        score: The learned model's probability for the category, when a model scored it.
        evidence: The model's strongest n-grams for it, with their weights.
    """

    id: str
    keywords: tuple[str, ...]
    score: float | None = None
    evidence: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Priority:
    """Score (higher = more urgent), its band and the reasons a person can read."""

    score: float
    band: Band
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the priority model and the rules read of one message (no text, no PII)."""

    channel: Channel
    entry: EntryKind | None = None
    hints: tuple[str, ...] = ()
    order_amount: float | None = None  # in yuan
    declared_tier: str | None = None  # tier the channel declared (the stored tier wins)

    @property
    def synchronous(self) -> bool:
        """A customer holding the line (phone) or watching live: answer first."""
        return self.channel in SYNCHRONOUS_CHANNELS
