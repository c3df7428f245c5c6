"""``omniroute train``: fit the tagger's learned model on the labelled train split.

Per issue category, an L1-regularised logistic regression over (a) character n-gram
counts of the normalised text and (b) which categories' keywords fired. L1 keeps the
model sparse: only n-grams with a weight go into the automaton. The regularisation
strength and each category's decision threshold are chosen on the dev split, and so is
each category's keyword margin (:func:`choose_keyword_margins`: how far below its
threshold the model must score before it may drop that category's keyword tags,
chosen for text from a source the model was not fitted on as well as for its own);
the test split is never read here. Same files and seed, same model file, byte for byte.

scikit-learn is a training dependency only (``pip install 'omniroute[train]'``); the
router reads the model file with the standard library.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from .evaluate import MIN_SUPPORT, NONE, Example, evaluate, read_labelled
from .router.exceptions import ConfigError
from .skills.model import MODEL_FORMAT, CategoryModel, TagModel
from .skills.normalize import default_normalizer
from .skills.tagger import Tagger
from .skills.taxonomy import Taxonomy

__all__ = ["MARGIN_GRID", "TrainOptions", "choose_keyword_margins", "held_out_models", "train"]

#: Keyword evidence of these categories is final: the model may add to it, never veto it.
KEYWORD_FINAL = ("safety", "legal")
#: Keyword margins (log-odds) tried per category by :func:`choose_keyword_margins`.
MARGIN_GRID: Final = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """Knobs of a training run (the defaults are what the shipped model used)."""

    seed: int = 20261130
    ngram_min: int = 1
    ngram_max: int = 3
    min_df: int = 2
    c_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    margin_grid: tuple[float, ...] = MARGIN_GRID


def _keyword_categories(tagger: Tagger, texts: Sequence[str]) -> list[set[str]]:
    return [{t.id.partition(".")[0] for t in tagger.tag(text).tags} for text in texts]


def _best_threshold(probs: Sequence[float], gold: Sequence[bool]) -> tuple[float, float]:
    """The threshold with the best F1 on these dev probabilities (ties: the higher)."""
    best_f, best_t = -1.0, 0.5
    for t in [x / 100 for x in range(5, 96)]:
        tp = sum(p >= t and g for p, g in zip(probs, gold, strict=True))
        fp = sum(p >= t and not g for p, g in zip(probs, gold, strict=True))
        fn = sum(p < t and g for p, g in zip(probs, gold, strict=True))
        f = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f >= best_f:
            best_f, best_t = f, t
    return best_t, best_f


def train(
    files: Sequence[Path], taxonomy: Taxonomy, options: TrainOptions | None = None
) -> tuple[TagModel, dict[str, Any]]:
    """Fit a model on the train splits of ``files``; return it and its dev figures.

    Raises:
        ConfigError: a file is unreadable or has no train / dev examples.
        ImportError: scikit-learn is not installed (the ``train`` extra).
    """
    import numpy as np
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    options = options or TrainOptions()
    normalize = default_normalizer()
    keyword_tagger = Tagger(taxonomy)
    issue = taxonomy.issue_categories()
    all_cats = list(taxonomy.categories)
    train_ex: list[Example] = []
    dev_ex: list[Example] = []
    digests = {}
    for path in files:
        train_ex += read_labelled(path, "train")
        dev_ex += read_labelled(path, "dev")
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    def features(examples: Sequence[Example], fit: bool) -> Any:
        texts = [normalize(e.text) for e in examples]
        grams = vectorizer.fit_transform(texts) if fit else vectorizer.transform(texts)
        kw = _keyword_categories(keyword_tagger, [e.text for e in examples])
        rows = [[1.0 if c in cats else 0.0 for c in all_cats] for cats in kw]
        return hstack([grams, csr_matrix(np.array(rows))]).tocsr()

    vectorizer = CountVectorizer(
        analyzer="char", ngram_range=(options.ngram_min, options.ngram_max),
        min_df=options.min_df, lowercase=False, dtype=np.float64,
    )
    x_train = features(train_ex, fit=True)
    x_dev = features(dev_ex, fit=False)
    vocab = vectorizer.get_feature_names_out()
    n_grams = len(vocab)
    categories: dict[str, CategoryModel] = {}
    ngrams: dict[str, dict[str, float]] = {}
    dev_f1: dict[str, float] = {}
    for cat in issue:
        y_train = np.array([cat in e.labels for e in train_ex])
        y_dev = [cat in e.labels for e in dev_ex]
        if y_train.sum() == 0:
            continue  # nothing to learn from: keywords alone decide this category
        best: tuple[float, float, float, Any] | None = None
        for c in options.c_grid:
            # l1_ratio=1: lasso, so only useful n-grams get a weight (and a place in the
            # automaton)
            clf = LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear",
                                     random_state=options.seed, max_iter=2000)
            clf.fit(x_train, y_train)
            probs = clf.predict_proba(x_dev)[:, 1]
            threshold, f1 = _best_threshold(list(probs), y_dev)
            if best is None or f1 > best[0]:
                best = (f1, c, threshold, clf)
        assert best is not None
        f1, _c, threshold, clf = best
        dev_f1[cat] = round(f1, 4)
        coef = clf.coef_[0]
        for j in np.flatnonzero(np.abs(coef[:n_grams]) > 1e-4):
            ngrams.setdefault(str(vocab[j]), {})[cat] = float(round(coef[j], 6))
        categories[cat] = CategoryModel(
            bias=float(round(clf.intercept_[0], 6)),
            threshold=threshold,
            keyword_weights={k: float(round(w, 6)) for k, w in zip(
                all_cats, coef[n_grams:], strict=True) if abs(w) > 1e-4},
        )
    if not categories:
        raise ConfigError("no category has a positive example in the train split")
    meta = {
        "trainer": "omniroute train",
        "data": digests,
        "seed": options.seed,
        "ngram_range": [options.ngram_min, options.ngram_max],
        "min_df": options.min_df,
        "train_examples": len(train_ex),
        "dev_examples": len(dev_ex),
        "dev_f1_at_threshold": dev_f1,
        "none_label": NONE,
    }
    model = TagModel(categories, ngrams, frozenset(KEYWORD_FINAL) & set(categories), "", meta)
    margins, selection = choose_keyword_margins(files, taxonomy, model, options)
    meta["keyword_margin_selection"] = selection
    model = _with_margins(model, lambda c: margins.get(c, 0.0))
    model = replace(model, digest=hashlib.sha256(model.dumps().encode()).hexdigest()[:12])
    figures = {"dev_f1": dev_f1, "ngrams": len(ngrams), "keyword_margins": margins,
               "mean_abs_weight": round(
                   math.fsum(abs(w) for ws in ngrams.values() for w in ws.values())
                   / max(1, sum(len(ws) for ws in ngrams.values())), 4)}
    return model, figures


def _with_margins(model: TagModel, margin_of: Callable[[str], float]) -> TagModel:
    """``model`` with each category's keyword margin set to ``margin_of(category)``."""
    cats = {c: replace(p, keyword_margin=margin_of(c)) for c, p in model.categories.items()}
    return replace(model, categories=cats)


def choose_keyword_margins(
    files: Sequence[Path], taxonomy: Taxonomy, model: TagModel, options: TrainOptions
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per category, the keyword margin that does best on a source the model was not
    fitted on as well as on those it was.

    The router meets service desks nobody labelled here. A stand-in for one: for each
    file, a model fitted on that file alone, scored on the dev split of every other
    file ("held-out source"). Next to it, ``model`` (fitted on all files) on each
    file's dev split ("in-domain"). A category's margin changes only that category's
    predictions, so each category gets the margin with the best mean of its in-domain
    and held-out-source F1 (each averaged over the files where the category has at
    least MIN_SUPPORT dev examples; ties: the smaller margin). A category without such
    support on both sides keeps margin 0. The test splits are not read.

    Returns:
        The chosen margins, and the per-category table of dev F1 per margin.
    """
    if len(files) < 2:
        return {}, {"why": "one source: no held-out source to choose on"}
    dev = {path: read_labelled(path, "dev") for path in files}
    single = held_out_models(files, taxonomy, None, options)
    pairs = [(s, t) for s in files for t in files if t != s]
    table: dict[str, dict[str, list[float]]] = {c: {} for c in model.categories}
    for margin in options.margin_grid:
        def with_it(m: TagModel, margin: float = margin) -> Tagger:
            return Tagger(taxonomy, _with_margins(m, lambda _c: margin))

        inside = [evaluate(with_it(model), dev[p], worst=0) for p in files]
        held_out = [evaluate(with_it(single[s]), dev[t], worst=0) for s, t in pairs]
        for cat in model.categories:
            a = [r.per_category[cat].f1 for r in inside
                 if r.per_category[cat].support >= MIN_SUPPORT]
            b = [r.per_category[cat].f1 for r in held_out
                 if r.per_category[cat].support >= MIN_SUPPORT]
            if a and b:
                table[cat][str(margin)] = [round(statistics.fmean(a), 4),
                                           round(statistics.fmean(b), 4)]
    chosen: dict[str, float] = {}
    for cat, rows in table.items():
        if rows:
            best = max(rows, key=lambda m: (round(sum(rows[m]) / 2, 4), -float(m)))
            chosen[cat] = float(best)
    return chosen, {
        "rule": "per category, best mean of in-domain and held-out-source dev F1",
        "dev_f1_in_domain_and_held_out_by_margin": {c: r for c, r in table.items() if r},
        "chosen": chosen,
    }


def held_out_models(
    files: Sequence[Path], taxonomy: Taxonomy, like: TagModel | None,
    options: TrainOptions | None = None,
) -> dict[Path, TagModel]:
    """Per file, a model fitted on that file's train split alone, with the keyword
    margins of ``like`` (the shipped model): the recipe as it would meet a source it was
    not fitted on, for scoring on the other files."""
    out: dict[Path, TagModel] = {}
    margins = {c: p.keyword_margin for c, p in like.categories.items()} if like else {}
    for path in files:
        model = _with_margins(train([path], taxonomy, options)[0],
                              lambda c: margins.get(c, 0.0))
        digest = hashlib.sha256(model.dumps().encode()).hexdigest()[:12]
        out[path] = replace(model, digest=digest)
    return out


def check_format(text: str) -> None:
    """Guard against writing something the loader would refuse."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ConfigError("refusing to write a model file that is not one")
