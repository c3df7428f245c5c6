"""``omniroute eval``: tagging accuracy on a labelled file, per category of the contract.

A labelled file is JSON lines, one message each::

    {"id": "d0012", "text": "...", "labels": ["logistics", "order"], "split": "test", ...}

``labels`` is the set of top-level categories of docs/LABELLING.md (or ``["none"]``);
``split`` is ``train``, ``dev`` or ``test`` (frozen when the file was made). The
prediction for a message is the set of issue categories of the tags the tagger gives
it (keywords plus, when configured, the learned model), or ``none`` when it has none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .router.exceptions import ConfigError
from .skills.tagger import Tagger, TagResult

__all__ = ["NONE", "Example", "Report", "evaluate", "predict", "read_labelled"]

NONE = "none"
SPLITS = ("train", "dev", "test")
#: A category's F1 on fewer examples than this is shown but left out of the headline
#: macro-F1: one or two examples make it 0 or 1 by chance.
MIN_SUPPORT = 10


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled message."""

    id: str
    text: str
    labels: frozenset[str]
    split: str
    source: str = ""


def read_labelled(path: Path, split: str | None = None) -> list[Example]:
    """Examples of ``path`` (all of them, or one split).

    Raises:
        ConfigError: unreadable file or a bad line; the message names file:line.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split must be one of {SPLITS}, got {split!r}")
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    out: list[Example] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
            labels = frozenset(d["labels"])
            ex = Example(str(d["id"]), str(d["text"]), labels, str(d.get("split", "")),
                         str(d.get("source", "")))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: not a labelled example ({exc!r}); expected "
                              '{"id", "text", "labels": [...], "split"}') from None
        if not labels or (NONE in labels and len(labels) > 1):
            raise ConfigError(f"{path}:{n}: labels {sorted(labels)}: give one or more "
                              "categories, or 'none' alone")
        if split is None or ex.split == split:
            out.append(ex)
    if not out:
        raise ConfigError(f"{path}: no examples" + (f" in split {split!r}" if split else ""))
    return out


def predict(result: TagResult, issue: frozenset[str]) -> frozenset[str]:
    """The contract categories of a tagging result, or {none}."""
    cats = frozenset(t.id.partition(".")[0] for t in result.tags) & issue
    return cats or frozenset({NONE})


@dataclass(frozen=True, slots=True)
class Scores:
    """Precision, recall, F1 and support of one category."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of one evaluation."""

    file: str
    split: str | None
    examples: int
    config_version: str
    per_category: dict[str, Scores]
    macro_f1: float  # over categories with at least ``min_support`` examples
    macro_f1_all: float  # over every category with any example
    min_support: int
    micro_f1: float
    exact_match: float
    confusions: list[tuple[str, str, int]]
    worst: list[dict[str, Any]]

    def to_json(self) -> bytes:
        """The report as one line of JSON (``omniroute eval --json`` prints one per file,
        JSON lines, for CI)."""
        return orjson.dumps(self)


def _explain(result: TagResult) -> list[str]:
    out = []
    for t in result.tags:
        parts = []
        if t.keywords:
            parts.append("keywords " + "、".join(t.keywords))
        if t.score is not None:
            parts.append(f"p={t.score:g}")
        if t.evidence:
            parts.append("n-grams " + " ".join(f"{g}{w:+g}" for g, w in t.evidence))
        out.append(f"{t.id}: " + ("; ".join(parts) or "tagged"))
    return out


def evaluate(
    tagger: Tagger,
    examples: Sequence[Example],
    *,
    file: str = "",
    split: str | None = None,
    config_version: str = "",
    worst: int = 10,
    min_support: int = MIN_SUPPORT,
) -> Report:
    """Tag every example and score the predicted category sets against the labels."""
    issue = frozenset(tagger.taxonomy.issue_categories())
    categories = [*tagger.taxonomy.issue_categories(), NONE]
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    confusions: Counter[tuple[str, str]] = Counter()
    exact = 0
    misses: list[tuple[int, Example, frozenset[str], TagResult]] = []
    for ex in examples:
        result = tagger.tag(ex.text)
        pred = predict(result, issue)
        gold = ex.labels
        for c in pred & gold:
            tp[c] += 1
        for c in pred - gold:
            fp[c] += 1
        for c in gold - pred:
            fn[c] += 1
        missed, extra = gold - pred, pred - gold
        for g in missed:
            for wrong in extra:
                confusions[(g, wrong)] += 1
        if pred == gold:
            exact += 1
        else:
            misses.append((len(missed) + len(extra), ex, pred, result))
    per: dict[str, Scores] = {}
    for c in categories:
        p, r, f = _prf(tp[c], fp[c], fn[c])
        per[c] = Scores(round(p, 4), round(r, 4), round(f, 4), tp[c] + fn[c], tp[c] + fp[c])
    present = [s.f1 for s in per.values() if s.support > 0]
    supported = [s.f1 for s in per.values() if s.support >= min_support]
    _, _, micro = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    misses.sort(key=lambda m: (-m[0], m[1].id))
    return Report(
        file=file,
        split=split,
        examples=len(examples),
        config_version=config_version,
        per_category=per,
        macro_f1=round(sum(supported) / len(supported), 4) if supported else 0.0,
        macro_f1_all=round(sum(present) / len(present), 4) if present else 0.0,
        min_support=min_support,
        micro_f1=round(micro, 4),
        exact_match=round(exact / len(examples), 4) if examples else 0.0,
        confusions=[(g, p, n) for (g, p), n in confusions.most_common(10)],
        worst=[
            {"id": ex.id, "text": ex.text, "labels": sorted(ex.labels), "predicted": sorted(pred),
             "explain": _explain(result)}
            for _, ex, pred, result in misses[:worst]
        ],
    )


def render(report: Report) -> Iterable[str]:
    """The report as text lines for a terminal."""
    split = report.split or "all"
    yield f"{report.file} split={split}: {report.examples} messages, config {report.config_version}"
    yield f"{'category':<12} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"
    for c, s in report.per_category.items():
        yield f"{c:<12} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {s.support:>8}"
    yield (f"macro-F1 {report.macro_f1:.3f} (categories with >= {report.min_support} "
           f"examples; {report.macro_f1_all:.3f} over all with any)  micro-F1 "
           f"{report.micro_f1:.3f}  exact match {report.exact_match:.3f}")
    if report.confusions:
        yield "most frequent confusions (labelled -> predicted instead):"
        for g, p, n in report.confusions:
            yield f"  {g} -> {p}: {n}"
    if report.worst:
        yield "worst examples:"
        for w in report.worst:
            yield (f"  {w['id']} labels={','.join(w['labels'])} "
                   f"predicted={','.join(w['predicted'])}: {w['text'][:80]}")
            for e in w["explain"]:
                yield f"      {e}"
