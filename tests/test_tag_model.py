"""The learned part of the tagger: file validation, reload, and the decision rules.

Small hand-made models make the expected outcome computable by hand; the shipped
model is exercised by tests/test_accuracy.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from omniroute.router.reload import PipelineHolder
from omniroute.skills.config import load_config
from omniroute.skills.exceptions import ConfigError
from omniroute.skills.model import MODEL_FILE, CategoryModel, TagModel, load_tag_model
from omniroute.skills.tagger import Tagger
from omniroute.skills.taxonomy import Taxonomy, default_taxonomy_path, load_taxonomy

SHIPPED = Path(__file__).resolve().parent.parent / "config"


def _model(
    bias: dict[str, float],
    ngrams: dict[str, dict[str, float]] | None = None,
    keyword_weights: dict[str, dict[str, float]] | None = None,
    threshold: float = 0.5,
) -> TagModel:
    cats = {
        c: CategoryModel(b, threshold, (keyword_weights or {}).get(c, {})) for c, b in bias.items()
    }
    return TagModel(cats, ngrams or {}, frozenset({"safety", "legal"}) & set(cats), "x", {})


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(default_taxonomy_path())


def test_ngrams_alone_raise_a_category_and_name_their_evidence(taxonomy: Taxonomy) -> None:
    # no keyword in the text; score = bias -2 + 1.5 (风雨) + 1.5 (雨) = 1.0 -> p = 0.731
    model = _model({"logistics": -2.0}, {"风雨": {"logistics": 1.5}, "雨": {"logistics": 1.5}})
    assert Tagger(taxonomy).tag("风雨交加").tags == ()
    result = Tagger(taxonomy, model).tag("风雨交加")
    (hit,) = result.tags
    assert hit.id == "logistics.general"
    assert hit.keywords == ()
    assert hit.score == round(1 / (1 + math.exp(-1.0)), 3)
    assert dict(hit.evidence) == {"风雨": 1.5, "雨": 1.5}


def test_the_model_outvotes_a_keyword_but_never_safety_or_legal(taxonomy: Taxonomy) -> None:
    model = _model({"quality": -20.0, "safety": -20.0, "legal": -20.0})
    tagger = Tagger(taxonomy, model)
    assert Tagger(taxonomy).tag("太难吃了").tag_ids == ("quality.taste",)
    assert tagger.tag("太难吃了").tag_ids == ()  # keyword out-voted by a score far below the cut
    assert {t.partition(".")[0] for t in tagger.tag("充电器冒烟起火了").tag_ids} == {"safety"}
    assert {t.partition(".")[0] for t in tagger.tag("我要去12315").tag_ids} == {"legal"}


def test_the_keyword_margin_keeps_a_keyword_tag_close_to_the_cut(taxonomy: Taxonomy) -> None:
    # score = bias -1.5 (p 0.18 < 0.5): with no margin the model drops the keyword tag;
    # a margin of 2 keeps it (the score is within 2 of the cut 0) and reports the model's
    # own probability; the margin never adds a category whose keywords did not fire, and
    # it is per category.
    def model(quality: float, logistics: float) -> TagModel:
        cats = {"quality": CategoryModel(-1.5, 0.5, {}, quality),
                "logistics": CategoryModel(-1.5, 0.5, {}, logistics)}
        return TagModel(cats, {}, frozenset(), "x", {})

    assert Tagger(taxonomy, model(0.0, 9.0)).tag("太难吃了").tags == ()
    assert Tagger(taxonomy, model(1.0, 9.0)).tag("太难吃了").tags == ()
    lenient = Tagger(taxonomy, model(2.0, 0.0))
    (hit,) = lenient.tag("太难吃了").tags
    assert hit.id == "quality.taste"
    assert hit.score == round(1 / (1 + math.exp(1.5)), 3)
    assert lenient.tag("今天天气不错").tags == ()
    assert Tagger(taxonomy).tag("外卖送餐慢").tag_ids == ("logistics.delay",)
    assert lenient.tag("外卖送餐慢").tags == ()  # logistics has no margin here


def test_keyword_evidence_counts_through_its_weight(taxonomy: Taxonomy) -> None:
    model = _model({"quality": -1.0}, keyword_weights={"quality": {"quality": 3.0}})
    result = Tagger(taxonomy, model).tag("太难吃了")
    (hit,) = result.tags
    assert hit.id == "quality.taste"
    assert hit.keywords == ("太难吃",) or "难吃" in "".join(hit.keywords)
    assert hit.score == round(1 / (1 + math.exp(-2.0)), 3)


def test_negation_still_applies_to_keywords(taxonomy: Taxonomy) -> None:
    # The keyword evidence (weight 5) would fire quality; negated, it is absent, and the
    # bias alone stays below the cut.
    model = _model({"food_safety": -1.0}, keyword_weights={"food_safety": {"food_safety": 5.0}})
    tagger = Tagger(taxonomy, model)
    assert tagger.tag("饭菜变质了").tag_ids == ("food_safety.spoiled",)
    assert tagger.tag("饭菜没有变质").tag_ids == ()


def test_topic_categories_pass_through_unscored(taxonomy: Taxonomy) -> None:
    model = _model({"quality": -20.0})
    assert "product.stock" in Tagger(taxonomy, model).tag("这个还有货吗").tag_ids


def test_a_model_for_other_categories_is_refused(taxonomy: Taxonomy) -> None:
    with pytest.raises(ConfigError, match="weather"):
        Tagger(taxonomy, _model({"weather": 0.0}))


def _two() -> TagModel:
    return _model(
        {"logistics": -1.25, "quality": 0.5}, {"送达": {"logistics": 1.5}, "咸": {"quality": 2.0}}
    )


def test_dumps_round_trips_and_is_one_ngram_per_line(tmp_path: Path) -> None:
    model = _two()
    path = tmp_path / MODEL_FILE
    path.write_text(model.dumps(), encoding="utf-8")
    again = load_tag_model(path)
    assert again.categories == model.categories
    assert again.ngrams == model.ngrams
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1:3] == ['"咸": {"quality": 2.0},', '"送达": {"logistics": 1.5}']


@pytest.mark.parametrize(
    ("mangle", "needle"),
    [
        (lambda t: t[: len(t) // 2], "not a complete JSON document"),
        (lambda t: t.replace("omniroute-tag-model/1", "other/9"), "'format' must be"),
        (lambda t: t.replace('"threshold": 0.5', '"threshold": 1.5', 1), "must be in (0, 1)"),
        (lambda t: t.replace('"bias": -1.25', '"bias": "x"', 1), "bias must be a finite number"),
        (lambda t: t.replace('{"quality": 2.0}', '{"weather": 2.0}'), "unknown category 'weather'"),
        (lambda t: t.replace('"keyword_margin": 0.0', '"keyword_margin": -1', 1),
         "keyword_margin must be >= 0"),
    ],
)
def test_bad_model_files_are_refused_with_the_file_named(
    tmp_path: Path, mangle: Callable[[str], str], needle: str
) -> None:
    model = _two()
    path = tmp_path / MODEL_FILE
    path.write_text(mangle(model.dumps()), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_tag_model(path)
    assert str(path) in str(caught.value)
    assert needle in str(caught.value)
    assert "omniroute train" in str(caught.value)


def test_config_check_and_reload_cover_the_model(tmp_path: Path) -> None:
    directory = tmp_path / "config"
    shutil.copytree(SHIPPED, directory)
    holder = PipelineHolder(directory)
    assert holder().config.model is not None
    good_version = holder.version
    path = directory / MODEL_FILE
    original = path.read_text(encoding="utf-8")
    # a truncated model: refused, the old pipeline keeps routing
    path.write_text(original[: len(original) // 3], encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tag_model\.json"):
        load_config(directory)
    assert holder.reload() is False
    assert holder.version == good_version
    assert holder().tagger.tag("送了两个小时还没到").tags
    # a model naming a category the taxonomy lacks: refused the same way
    data = json.loads(original)
    data["categories"]["weather"] = data["categories"]["quality"]
    path.write_text(json.dumps(data), encoding="utf-8")
    assert holder.reload() is False
    assert holder.version == good_version
    # removing the model is a valid configuration (keywords alone) and a new version
    path.unlink()
    assert holder.reload() is True
    assert holder().config.model is None
    assert holder.version != good_version


def _reference_scores(model: TagModel, keyword_cats: set[str], norm: str) -> dict[str, float]:
    """Scores computed from the model file's numbers in floats, occurrence by occurrence
    (overlapping), independently of how the tagger packs and sums them."""
    scores = {}
    for cat, params in model.categories.items():
        total = params.bias + sum(params.keyword_weights.get(k, 0.0) for k in keyword_cats)
        for gram, weights in model.ngrams.items():
            w = weights.get(cat)
            if w:
                total += w * len(re.findall(f"(?={re.escape(gram)})", norm))
        scores[cat] = total
    return scores


def _labelled_texts(limit: int) -> list[str]:
    data = Path(__file__).resolve().parent / "data" / "labelled" / "weibo_service.jsonl"
    with data.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for _, line in zip(range(limit), fh, strict=False)]


def test_shipped_model_scores_equal_a_float_reference(taxonomy: Taxonomy) -> None:
    """The tagger's packed integer sums give the scores, tags and evidence that the
    model file's weights give when summed one occurrence at a time."""
    from omniroute.skills.normalize import default_normalizer

    model = load_tag_model(SHIPPED / MODEL_FILE)
    tagger, keywords_only = Tagger(taxonomy, model), Tagger(taxonomy)
    normalize = default_normalizer()
    texts = [*_labelled_texts(60), "退款" * 5000, "差" * 8000 + "快递", "好评"]
    checked = 0
    for text in texts:
        norm = normalize(text)
        keyword_cats = {t.id.partition(".")[0] for t in keywords_only.tag(text).tags}
        ref = _reference_scores(model, keyword_cats, norm)
        cuts = {c: p.threshold_logit for c, p in model.categories.items()}
        expected = {
            c
            for c, s in ref.items()
            if s >= cuts[c]
            or (c in keyword_cats and (c in model.keyword_final
                                       or s + model.categories[c].keyword_margin >= cuts[c]))
        }
        got = {t.id.partition(".")[0]: t for t in tagger.tag(text).tags}
        assert {c for c in got if c in model.categories} == expected, text[:40]
        for cat in expected:
            hit = got[cat]
            assert hit.score == pytest.approx(1 / (1 + math.exp(-ref[cat])), abs=1.1e-3)
            positive = sorted(
                ((w[cat], g) for g, w in model.ngrams.items() if w.get(cat, 0) > 0 and g in norm),
                reverse=True,
            )[:4]
            assert hit.evidence == tuple((g, round(w, 3)) for w, g in positive)
            checked += 1
    assert checked > 20  # the sample does fire categories
