"""The two-level issue taxonomy (category.leaf), emotions and negation rules.

Loaded from YAML (``config/taxonomy.yaml`` ships the default) into frozen pydantic
models. Every error names ``file:line``, the key path, the bad value and the fix
(see :func:`skills.yamlconfig.load_model`).

Shape::

    version: 1
    negation: {window_chars: 5, cues: [...], exempt: [...], boundaries: [...]}
    emotions:
      angry: {weight: 15, keywords: [...]}
    categories:
      logistics:
        name: 物流
        children:
          delay: {name: 配送时效, urgency: 2, importance: 1, keywords: [...]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .normalize import normalize
from .yamlconfig import load_model

__all__ = [
    "Category",
    "Emotion",
    "Leaf",
    "NegationRules",
    "Taxonomy",
    "default_taxonomy_path",
    "load_taxonomy",
]

# Ids travel in decisions, metrics labels and routing rules: keep them boring.
Ident = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
Level = Annotated[int, Field(ge=0, le=3)]

_FIX_HINT = (
    "ids are lower_snake_case; every leaf needs name, keywords (non-empty strings, "
    "distinct after normalisation), urgency and importance (0..3); emotion weights are "
    "0..100 priority points. See docs/taxonomy.md."
)


def _check_keywords(keywords: list[str]) -> list[str]:
    """Keywords must survive normalisation and be distinct after it."""
    seen: dict[str, int] = {}
    for i, kw in enumerate(keywords):
        norm = normalize(kw)
        if not norm:
            raise ValueError(
                f"keyword [{i}] {kw!r} is empty after normalisation (punctuation and "
                "spaces are separators); write the words themselves"
            )
        if norm in seen:
            first = seen[norm]
            raise ValueError(
                f"keyword [{i}] {kw!r} duplicates [{first}] {keywords[first]!r} (both "
                f"normalise to {norm!r}); keep one of them"
            )
        seen[norm] = i
    return keywords


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Leaf(_Frozen):
    """A second-level issue type, e.g. ``logistics.delay``.

    Attributes:
        name: Display name for agents and dashboards (e.g. 配送时效).
        keywords: Phrases that tag a message with this leaf (any script/width/case).
        urgency: How fast it needs an answer, 0 (can wait) .. 3 (now).
        importance: What is at stake, 0 (information) .. 3 (safety, legal, money).
        negatable: Whether a negation cue before a keyword cancels it. False for
            leaves where even a negated mention is a signal ("别逼我报警").
        description: What belongs here, for whoever edits the keywords.
    """

    name: Annotated[str, StringConstraints(min_length=1)]
    keywords: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
    urgency: Level
    importance: Level
    negatable: bool = True
    description: str = ""

    _keywords_distinct = field_validator("keywords")(_check_keywords)


class Category(_Frozen):
    """A top-level category (e.g. ``logistics``) and its leaves.

    Attributes:
        issue: True for the categories of the labelling contract (docs/LABELLING.md),
            which the learned model scores and ``omniroute eval`` measures; False for
            topics that are not an issue by themselves (pre-sale questions, live-room
            talk), which route by keywords alone.
        model_leaf: The leaf a tag gets when the model raises this category without
            a keyword of it (its evidence is then n-grams only).
    """

    name: Annotated[str, StringConstraints(min_length=1)]
    children: Annotated[dict[Ident, Leaf], Field(min_length=1)]
    description: str = ""
    issue: bool = True
    model_leaf: Ident = "general"

    def model_leaf_or_first(self) -> str:
        """``model_leaf`` when this category has it, else its first leaf."""
        return self.model_leaf if self.model_leaf in self.children else next(iter(self.children))


class Emotion(_Frozen):
    """An emotion signal (not a category): keywords and the priority points it adds."""

    keywords: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
    weight: Annotated[float, Field(ge=0, le=100)]
    description: str = ""

    _keywords_distinct = field_validator("keywords")(_check_keywords)


class NegationRules(_Frozen):
    """When a keyword counts as negated (see docs/taxonomy.md, "Negation").

    A keyword is negated when one of ``cues`` occurs in the ``window_chars`` characters
    before it, after cutting the window at the last clause boundary and blanking the
    ``exempt`` phrases (words that contain a cue character but do not negate, such as
    不错, 没想到, 有没有, 是不是). Punctuation and whitespace (normalised to one space)
    are always a boundary; ``boundaries`` adds words such as 但是, 不过.
    """

    window_chars: Annotated[int, Field(ge=0, le=20)] = 5
    cues: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=lambda: ["不", "没", "无", "未", "别", "非"]
    )
    exempt: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    boundaries: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=lambda: ["但", "却", "不过"]
    )


class Taxonomy(_Frozen):
    """The whole taxonomy: categories with leaves, emotions, negation rules.

    Attributes:
        stop_phrases: Phrases that contain a keyword but mean something else
            (不好意思 contains 不好, 垃圾桶 contains 垃圾); a strictly shorter keyword
            inside one of them is ignored.
    """

    version: Annotated[int, Field(ge=1)] = 1
    negation: NegationRules = Field(default_factory=NegationRules)
    stop_phrases: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list
    )
    emotions: dict[Ident, Emotion] = Field(default_factory=dict)
    categories: Annotated[dict[Ident, Category], Field(min_length=1)]

    _stop_phrases_distinct = field_validator("stop_phrases")(_check_keywords)

    def leaf(self, tag_id: str) -> Leaf:
        """The leaf for ``"category.leaf"``.

        Raises:
            KeyError: ``tag_id`` is not ``category.leaf`` of this taxonomy.
        """
        cat, _, child = tag_id.partition(".")
        try:
            return self.categories[cat].children[child]
        except KeyError:
            raise KeyError(f"unknown tag id {tag_id!r}; expected one of tag_ids()") from None

    def issue_categories(self) -> list[str]:
        """The categories of the labelling contract, in file order."""
        return [cid for cid, cat in self.categories.items() if cat.issue]

    def tag_ids(self) -> list[str]:
        """Every ``category.leaf`` id, sorted."""
        return sorted(
            f"{cat_id}.{leaf_id}"
            for cat_id, cat in self.categories.items()
            for leaf_id in cat.children
        )

    def keyword_count(self) -> int:
        """Number of keywords over all leaves and emotions."""
        return sum(
            len(leaf.keywords) for cat in self.categories.values() for leaf in cat.children.values()
        ) + sum(len(e.keywords) for e in self.emotions.values())


def default_taxonomy_path() -> Path:
    """The shipped ``taxonomy.yaml``: ``config/`` beside this package (``omniroute/config``
    in the wheel, the repository's ``config/`` in a checkout)."""
    return Path(__file__).resolve().parent.parent / "config" / "taxonomy.yaml"


def load_taxonomy(path: Path) -> Taxonomy:
    """Load and validate a taxonomy YAML file.

    Raises:
        router.exceptions.ConfigError: unreadable file, invalid YAML or an invalid
            taxonomy; the message names file:line, key path, value and the fix.
    """
    taxonomy, _ = load_model(path, Taxonomy, _FIX_HINT)
    return taxonomy
