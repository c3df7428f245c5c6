"""``omniroute train`` and ``omniroute eval``: reproducible model, the report's shape,
and the options that reproduce each published figure (keywords only, another model,
a held-out source)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniroute.cli import app
from omniroute.evaluate import evaluate, read_labelled
from omniroute.skills.config import load_config
from omniroute.skills.model import MODEL_FILE, load_tag_model
from omniroute.skills.tagger import Tagger
from omniroute.train import TrainOptions, choose_keyword_margins, held_out_models

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
LABELLED = ROOT / "tests" / "data" / "labelled"
FILES = [LABELLED / "food_shopping.jsonl", LABELLED / "weibo_service.jsonl"]
runner = CliRunner()

pytest.importorskip("sklearn", reason="training needs the train extra (scikit-learn)")


def _reports(output: str) -> list[dict[str, object]]:
    """``--json`` output: one JSON document per line."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_train_rebuilds_the_shipped_model_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / MODEL_FILE
    result = runner.invoke(app, ["train", *map(str, FILES), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (CONFIG / MODEL_FILE).read_bytes(), (
        "config/tag_model.json is not what `omniroute train` builds from the labelled "
        "files: retrain and commit it"
    )
    assert "weibo_service.jsonl split=dev" in result.stdout  # it prints the dev eval


def test_shipped_margins_are_the_ones_the_selection_chose() -> None:
    model = load_tag_model(CONFIG / MODEL_FILE)
    chosen = model.meta["keyword_margin_selection"]["chosen"]
    assert {c: p.keyword_margin for c, p in model.categories.items() if c in chosen} == chosen
    assert any(m > 0 for m in chosen.values())  # the selection did move some category


def test_one_source_has_no_held_out_source_to_choose_on() -> None:
    cfg = load_config(CONFIG)
    assert cfg.model is not None
    margins, why = choose_keyword_margins(FILES[:1], cfg.taxonomy, cfg.model, TrainOptions())
    assert margins == {}
    assert "one source" in why["why"]


def test_eval_json_report_has_every_figure() -> None:
    result = runner.invoke(app, ["eval", str(FILES[0]), "--split", "dev", "--json",
                                 "--worst", "3"])
    assert result.exit_code == 0, result.output
    (report,) = _reports(result.stdout)
    per = report["per_category"]
    assert isinstance(per, dict)
    assert set(per["logistics"]) >= {"precision", "recall", "f1", "support"}
    assert "none" in per
    for key in ("macro_f1", "macro_f1_all", "micro_f1", "exact_match", "confusions"):
        assert key in report
    worst = report["worst"]
    assert isinstance(worst, list)
    assert len(worst) == 3
    assert {"id", "text", "labels", "predicted", "explain"} <= set(worst[0])


def test_keywords_only_and_model_options_score_what_they_say(tmp_path: Path) -> None:
    cfg = load_config(CONFIG)
    dev = read_labelled(FILES[1], "dev")
    result = runner.invoke(app, ["eval", str(FILES[1]), "--split", "dev", "--json",
                                 "--keywords-only"])
    assert result.exit_code == 0, result.output
    (kw,) = _reports(result.stdout)
    assert kw["macro_f1"] == evaluate(Tagger(cfg.taxonomy), dev).macro_f1
    assert "keywords only" in str(kw["config_version"])

    # --model: a model whose biases keep every category silent scores like no model
    # at all on messages without keywords; its digest is named
    data = json.loads((CONFIG / MODEL_FILE).read_text(encoding="utf-8"))
    for params in data["categories"].values():
        params["bias"] = -50.0
    other = tmp_path / "silent.json"
    other.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    silent = load_tag_model(other)
    result = runner.invoke(app, ["eval", str(FILES[1]), "--split", "dev", "--json",
                                 "--model", str(other)])
    assert result.exit_code == 0, result.output
    (got,) = _reports(result.stdout)
    assert got["macro_f1"] == evaluate(Tagger(cfg.taxonomy, silent), dev).macro_f1
    assert silent.digest in str(got["config_version"])

    both = runner.invoke(app, ["eval", str(FILES[1]), "--keywords-only", "--model", str(other)])
    assert both.exit_code == 2
    assert "exclude each other" in both.output


def test_held_out_scores_a_model_fitted_on_the_other_file_alone() -> None:
    one = runner.invoke(app, ["eval", str(FILES[0]), "--held-out"])
    assert one.exit_code == 2
    assert "two or more files" in one.output

    result = runner.invoke(app, ["eval", *map(str, FILES), "--split", "dev", "--held-out",
                                 "--json"])
    assert result.exit_code == 0, result.output
    reports = {str(r["file"]): r for r in _reports(result.stdout)}
    assert set(reports) == {
        f"{FILES[1]} (model fitted on {FILES[0].name} alone)",
        f"{FILES[0]} (model fitted on {FILES[1].name} alone)",
    }
    cfg = load_config(CONFIG)
    fitted = held_out_models(FILES, cfg.taxonomy, cfg.model)
    assert cfg.model is not None
    for source, target in ((FILES[0], FILES[1]), (FILES[1], FILES[0])):
        model = fitted[source]
        # fitted on the source alone, with the shipped margins
        assert model.meta["train_examples"] == len(read_labelled(source, "train"))
        assert {c: p.keyword_margin for c, p in model.categories.items()} == {
            c: cfg.model.categories[c].keyword_margin for c in model.categories}
        expected = evaluate(Tagger(cfg.taxonomy, model), read_labelled(target, "dev"))
        report = reports[f"{target} (model fitted on {source.name} alone)"]
        assert report["macro_f1"] == expected.macro_f1
