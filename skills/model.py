"""The learned part of the tagger: a linear model over character n-grams and keyword hits.

For each contract category (``logistics``, ``payment``, ...) the model holds a bias,
one weight per character n-gram of the normalised text, one weight per category whose
keywords fired, and a decision threshold chosen on the development split. The
n-gram weights are compiled into the tagger's Aho-Corasick automaton beside the
keywords, so scoring stays one pass over the text; every tag the model confirms or
adds names its evidence (the n-grams with their weights) and its probability.

The model file (``config/tag_model.json``) is written by ``omniroute train``: JSON with
one n-gram per line, so a retrain shows up as a readable diff. A file that is not
such a model, is truncated, or names categories the taxonomy does not have is refused
with a :class:`ConfigError` (and a running router keeps its previous configuration).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .exceptions import ConfigError

__all__ = ["MODEL_FILE", "MODEL_FORMAT", "CategoryModel", "TagModel", "load_tag_model"]

MODEL_FILE: Final = "tag_model.json"
MODEL_FORMAT: Final = "omniroute-tag-model/1"
_MAX_NGRAM_CHARS: Final = 8


@dataclass(frozen=True, slots=True)
class CategoryModel:
    """One category's linear model.

    Attributes:
        bias: The intercept (log-odds with no evidence).
        threshold: Decision threshold on the probability, chosen on the dev split.
        keyword_weights: Weight of "keywords of category K fired", per K.
        keyword_margin: How far (in log-odds) below the threshold the score must fall
            for the model to drop this category's keyword tags. 0 lets the model veto a
            keyword as soon as it would not add the category itself; a larger margin
            trusts the keywords more on text unlike the training data (``omniroute
            train`` chooses it on a source the model was not fitted on).
    """

    bias: float
    threshold: float
    keyword_weights: Mapping[str, float]
    keyword_margin: float = 0.0

    @property
    def threshold_logit(self) -> float:
        """The threshold as a log-odds score (what the hot path compares against)."""
        p = min(max(self.threshold, 1e-9), 1 - 1e-9)
        return math.log(p / (1 - p))


@dataclass(frozen=True, slots=True)
class TagModel:
    """A trained model: per-category parameters and the n-gram weights.

    Attributes:
        categories: Category id -> its parameters, in a fixed order.
        ngrams: Normalised n-gram -> {category id: weight}; only non-zero weights.
        keyword_final: Categories whose keyword evidence is never out-voted.
        digest: sha256 prefix of the file, shown as part of the config version.
        meta: How the model was trained (data files and their hashes, seed, figures).
    """

    categories: Mapping[str, CategoryModel]
    ngrams: Mapping[str, Mapping[str, float]]
    keyword_final: frozenset[str]
    digest: str
    meta: Mapping[str, Any]

    def __repr__(self) -> str:
        return (
            f"TagModel({len(self.categories)} categories, {len(self.ngrams)} n-grams, "
            f"sha256:{self.digest})"
        )

    def check_against(self, categories: Sequence[str], where: str) -> None:
        """Refuse a model trained for other categories than the taxonomy has."""
        unknown = sorted(set(self.categories) - set(categories))
        if unknown:
            raise ConfigError(
                f"{where}: the model scores categories {unknown} that the taxonomy does not "
                f"define (taxonomy: {sorted(categories)}); retrain with `omniroute train` "
                "or remove the model file"
            )

    def dumps(self) -> str:
        """The file text: stable order, one n-gram per line."""
        head = {
            "format": MODEL_FORMAT,
            "meta": self.meta,
            "keyword_final": sorted(self.keyword_final),
            "categories": {
                cid: {
                    "bias": round(c.bias, 6),
                    "threshold": round(c.threshold, 6),
                    "keyword_weights": {
                        k: round(w, 6) for k, w in sorted(c.keyword_weights.items())
                    },
                    "keyword_margin": round(c.keyword_margin, 6),
                }
                for cid, c in self.categories.items()
            },
        }
        lines = [json.dumps(head, ensure_ascii=False, sort_keys=True)[:-1] + ', "ngrams": {']
        items = sorted(self.ngrams.items())
        for i, (gram, weights) in enumerate(items):
            body = json.dumps(
                {k: round(w, 6) for k, w in sorted(weights.items())}, ensure_ascii=False
            )
            comma = "," if i < len(items) - 1 else ""
            lines.append(f"{json.dumps(gram, ensure_ascii=False)}: {body}{comma}")
        lines.append("}}")
        return "\n".join(lines) + "\n"


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        f"{path}: {problem}; rebuild it with `omniroute train` "
        "or remove it to route by keywords alone"
    )


def _number(value: object, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_tag_model(path: Path) -> TagModel:
    """Read and validate a model file.

    Raises:
        ConfigError: unreadable, not JSON (a truncated file is not), not this format,
            or with a bad value; the message names the file, the key and the fix.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not a complete JSON document ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise _fail(path, f"'format' must be {MODEL_FORMAT!r}, got {got!r}")
    cats_raw = data.get("categories")
    if not isinstance(cats_raw, dict) or not cats_raw:
        raise _fail(path, "'categories' must be a non-empty mapping")
    categories: dict[str, CategoryModel] = {}
    for cid, c in cats_raw.items():
        if not isinstance(c, dict):
            raise _fail(path, f"categories.{cid} must be a mapping")
        threshold = _number(c.get("threshold"), path, f"categories.{cid}.threshold")
        if not 0 < threshold < 1:
            raise _fail(path, f"categories.{cid}.threshold must be in (0, 1), got {threshold}")
        margin = _number(c.get("keyword_margin", 0.0), path, f"categories.{cid}.keyword_margin")
        if margin < 0:
            raise _fail(path, f"categories.{cid}.keyword_margin must be >= 0, got {margin}")
        kw = c.get("keyword_weights", {})
        if not isinstance(kw, dict):
            raise _fail(path, f"categories.{cid}.keyword_weights must be a mapping")
        categories[cid] = CategoryModel(
            bias=_number(c.get("bias"), path, f"categories.{cid}.bias"),
            threshold=threshold,
            keyword_weights={
                k: _number(w, path, f"categories.{cid}.keyword_weights.{k}") for k, w in kw.items()
            },
            keyword_margin=margin,
        )
    grams_raw = data.get("ngrams")
    if not isinstance(grams_raw, dict):
        raise _fail(path, "'ngrams' must be a mapping of n-gram -> {category: weight}")
    ngrams: dict[str, dict[str, float]] = {}
    for gram, weights in grams_raw.items():
        if not gram or len(gram) > _MAX_NGRAM_CHARS or not isinstance(weights, dict):
            raise _fail(path, f"ngrams entry {gram!r} is not an n-gram with a weight mapping")
        for cid in weights:
            if cid not in categories:
                raise _fail(path, f"ngrams.{gram} weighs unknown category {cid!r}")
        ngrams[gram] = {cid: _number(w, path, f"ngrams.{gram}.{cid}") for cid, w in weights.items()}
    final = data.get("keyword_final", [])
    if not isinstance(final, list) or not all(isinstance(x, str) for x in final):
        raise _fail(path, "'keyword_final' must be a list of category ids")
    meta = data.get("meta", {})
    return TagModel(
        categories=categories,
        ngrams=ngrams,
        keyword_final=frozenset(final),
        digest=hashlib.sha256(raw).hexdigest()[:12],
        meta=meta if isinstance(meta, dict) else {},
    )
