"""Throughput benchmark and coverage report of the keyword tagger.

Both back the CLI (``omniroute bench-tagger``, ``omniroute coverage``) and the figures
published in docs/taxonomy.md; nothing here runs at import.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .skills.model import MODEL_FILE, load_tag_model
from .skills.normalize import default_normalizer
from .skills.tagger import Tagger
from .skills.taxonomy import default_taxonomy_path, load_taxonomy

__all__ = ["PRAISE_RULE", "coverage_report", "is_clear_praise", "run_tagger_bench"]


def _rate(fn: Callable[[str], object], texts: Sequence[str], seconds: float) -> float:
    """Messages per second of ``fn`` over ``texts``: the best of five rounds.

    Each round cycles through ``texts`` for about ``seconds / 5``. The best round is
    reported, as ``timeit`` advises, because other processes on a shared machine
    only ever make a round slower.
    """
    for text in texts[:200]:  # warm caches (normaliser, regex) before the clock starts
        fn(text)
    best = 0.0
    for _ in range(5):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            for text in texts:
                fn(text)
            done += len(texts)
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


def run_tagger_bench(
    texts: Sequence[str],
    seconds: float = 2.0,
    taxonomy_path: Path | None = None,
    model_path: Path | None = None,
) -> dict[str, float]:
    """Messages/s of :meth:`Tagger.tag` against two naive baselines, on one core.

    All three normalise each message the same way first; the baselines then look for
    the same normalised keywords, with one regex alternation (longest first) and with
    a per-keyword ``in`` loop. The baselines do no negation handling, so they do less
    work than the tagger.

    Args:
        texts: Sample messages (cycled); real messages give realistic hit rates.
        seconds: Time budget per method (split into five rounds; the best counts).
        taxonomy_path: Taxonomy to build; the shipped default when ``None``.
        model_path: The learned model to measure beside the keywords; by default the
            ``tag_model.json`` beside the taxonomy, when there is one.

    Returns:
        ``keywords``, ``messages``, ``aho_msgs_per_s``, ``regex_msgs_per_s``,
        ``naive_in_msgs_per_s``, ``normalize_msgs_per_s``, ``speedup_vs_regex``,
        ``speedup_vs_naive_in``; with a model also ``model_msgs_per_s``,
        ``model_ngrams`` and ``model_vs_keywords`` (same run, ratio of rates).

    Raises:
        ValueError: ``texts`` is empty.
    """
    if not texts:
        raise ValueError("run_tagger_bench needs at least one text; pass sample messages")
    taxonomy_path = taxonomy_path or default_taxonomy_path()
    taxonomy = load_taxonomy(taxonomy_path)
    tagger = Tagger(taxonomy)
    if model_path is None and (taxonomy_path.parent / MODEL_FILE).is_file():
        model_path = taxonomy_path.parent / MODEL_FILE
    model = load_tag_model(model_path) if model_path is not None else None
    normalize = default_normalizer()
    keywords = sorted(tagger.keywords(), key=len, reverse=True)
    alternation = re.compile("|".join(re.escape(k) for k in keywords))

    def regex_baseline(text: str) -> object:
        return alternation.findall(normalize(text))

    def naive_in_baseline(text: str) -> object:
        norm = normalize(text)
        return [k for k in keywords if k in norm]

    aho = _rate(tagger.tag, texts, seconds)
    regex = _rate(regex_baseline, texts, seconds)
    naive = _rate(naive_in_baseline, texts, seconds)
    norm_only = _rate(normalize, texts, seconds)
    extra: dict[str, float] = {}
    if model is not None:
        with_model = _rate(Tagger(taxonomy, model).tag, texts, seconds)
        extra = {"model_ngrams": float(len(model.ngrams)), "model_msgs_per_s": with_model,
                 "model_vs_keywords": with_model / aho}
    return {
        "keywords": float(len(keywords)),
        "messages": float(len(texts)),
        "aho_msgs_per_s": aho,
        "regex_msgs_per_s": regex,
        "naive_in_msgs_per_s": naive,
        "normalize_msgs_per_s": norm_only,
        "speedup_vs_regex": aho / regex,
        "speedup_vs_naive_in": aho / naive,
        **extra,
    }


PRAISE_RULE = (
    "contains a praise cue (好评 很好 不错 挺好 满意 好吃 很快 准时 赞 喜欢 新鲜 实惠 划算 "
    "超值 棒 好喝 及时 热情 周到) and, after removing 不错, none of the complaint or "
    "contrast cues (但 就是 不过 可惜 只是 除了 虽然 结果 差 慢 少 贵 凉 咸 淡 硬 难 坏 烂 退 "
    "不 没 无 失望 一般 问题 希望 建议 小时 分钟 晚 虫 臭 变质 假 垃圾 呵呵 郁闷 洒 撒 腻 干 老 "
    "吗 ? ？)"
)
_PRAISE = re.compile(
    "好评|很好|不错|挺好|满意|好吃|很快|准时|赞|喜欢|新鲜|实惠|划算|超值|棒|好喝|及时|热情|周到"
)
_NOT_PRAISE = re.compile(
    "但|就是|不过|可惜|只是|除了|虽然|结果|差|慢|少|贵|凉|咸|淡|硬|难|坏|烂|退|不|没|无|失望|一般"
    "|问题|希望|建议|小时|分钟|晚|虫|臭|变质|假|垃圾|呵呵|郁闷|洒|撒|腻|干|老|吗|[?？]"
)


def is_clear_praise(text: str) -> bool:
    """Whether ``text`` is clearly positive by :data:`PRAISE_RULE`.

    Deliberately strict (it drops mixed reviews such as "好吃但是太慢") and independent of
    the taxonomy's keywords, so it can measure the tagger's false positives.
    """
    if _PRAISE.search(text) is None:
        return False
    return _NOT_PRAISE.search(text.replace("不错", "")) is None


def coverage_report(
    csv_path: Path, taxonomy_path: Path | None = None, split: str | None = None
) -> dict[str, float]:
    """How well the taxonomy covers complaints and stays quiet on praise.

    Reads a UTF-8 CSV with a ``text`` column. With a ``label`` column (``complaint``,
    ``positive``, ``other``; e.g. ``tests/data/complaints_sample.csv``) it reports the
    labelled figures; for every CSV it reports the share of all messages tagged and
    the false-positive share on messages that :func:`is_clear_praise` selects.

    Args:
        csv_path: The messages.
        taxonomy_path: Taxonomy to evaluate; the shipped default when ``None``.
        split: Only rows whose ``split`` column equals this (``tuning`` rows were
            read while the keywords were written, ``holdout`` rows were not).

    Returns:
        ``messages``, ``tagged_share``, ``praise_messages``, ``praise_false_positive``
        and, when labelled, ``complaints``, ``complaint_coverage``, ``positives``,
        ``positive_false_positive``. Shares are 0..1.

    Raises:
        ValueError: The CSV has no ``text`` column, or ``split`` is given and the CSV
            has no such split.
    """
    tagger = Tagger(load_taxonomy(taxonomy_path or default_taxonomy_path()))
    with csv_path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "text" not in rows[0]:
        raise ValueError(f"{csv_path}: no 'text' column; expected a header with 'text'")
    if split is not None:
        rows = [row for row in rows if row.get("split") == split]
        if not rows:
            raise ValueError(f"{csv_path}: no rows with split={split!r}; see its 'split' column")
    tagged = [bool(tagger.tag(row["text"]).tags) for row in rows]

    def share(selected: list[bool]) -> float:
        return sum(selected) / len(selected) if selected else 0.0

    praise = [t for row, t in zip(rows, tagged, strict=True) if is_clear_praise(row["text"])]
    report = {
        "messages": float(len(rows)),
        "tagged_share": share(tagged),
        "praise_messages": float(len(praise)),
        "praise_false_positive": share(praise),
    }
    if rows and "label" in rows[0]:
        complaints = [t for r, t in zip(rows, tagged, strict=True) if r["label"] == "complaint"]
        positives = [t for r, t in zip(rows, tagged, strict=True) if r["label"] == "positive"]
        report |= {
            "complaints": float(len(complaints)),
            "complaint_coverage": share(complaints),
            "positives": float(len(positives)),
            "positive_false_positive": share(positives),
        }
    return report
