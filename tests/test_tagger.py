"""The keyword tagger and text normalisation.

Two layers: the mechanics (negation window, clause boundaries, exemptions, stop
phrases, maximal matches, latin word boundaries) on a small taxonomy built here, so
they do not depend on the shipped keywords; then realistic messages against the
shipped config/taxonomy.yaml.
"""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from omniroute.cli import app as cli_app
from omniroute.corpus import bundled_texts
from omniroute.router.models import TagHit
from omniroute.skills.normalize import _SEPARATORS, default_normalizer, normalize
from omniroute.skills.tagger import Tagger, TagResult
from omniroute.skills.taxonomy import Taxonomy, default_taxonomy_path, load_taxonomy
from omniroute.tagger_bench import coverage_report, is_clear_praise, run_tagger_bench

SAMPLE = Path(__file__).parent / "data" / "complaints_sample.csv"


@pytest.fixture(scope="module")
def shipped() -> Tagger:
    return Tagger(load_taxonomy(default_taxonomy_path()))


def _small_taxonomy() -> Taxonomy:
    leaf = {"urgency": 1, "importance": 1}
    return Taxonomy.model_validate(
        {
            "negation": {
                "window_chars": 4,
                "cues": ["不", "没", "别"],
                "exempt": ["有没有", "不错", "没想到"],
                "boundaries": ["但是"],
            },
            "stop_phrases": ["不好意思"],
            "emotions": {"angry": {"weight": 15, "keywords": ["太差", "气死"]}},
            "categories": {
                "food": {
                    "name": "食品",
                    "children": {
                        "spoiled": {"name": "变质", "keywords": ["变质", "不新鲜"], **leaf},
                        "hair": {"name": "异物", "keywords": ["头发"], **leaf},
                    },
                },
                "svc": {
                    "name": "服务",
                    "children": {
                        "bad": {"name": "差", "keywords": ["服务太差", "不好"], **leaf},
                        "rider": {"name": "骑手", "keywords": ["骑手态度差"], **leaf},
                        "attitude": {"name": "态度", "keywords": ["态度差"], **leaf},
                        "app": {"name": "应用", "keywords": ["APP", "315"], **leaf},
                    },
                },
                "safety": {
                    "name": "安全",
                    "children": {
                        "police": {
                            "name": "报警",
                            "keywords": ["报警"],
                            "negatable": False,
                            **leaf,
                        }
                    },
                },
            },
        }
    )


@pytest.fixture(scope="module")
def small() -> Tagger:
    return Tagger(_small_taxonomy())


@pytest.mark.parametrize(
    ("text", "tags", "emotions"),
    [
        # plain hits, keywords reported as written in the config
        ("这菜变质了", {"food.spoiled": ("变质",)}, {}),
        ("汤里有头发", {"food.hair": ("头发",)}, {}),
        # a cue within the window negates ...
        ("没有变质", {}, {}),
        ("并没变质", {}, {}),
        # ... but not from further back than window_chars (4)
        ("没有发现任何的变质", {"food.spoiled": ("变质",)}, {}),
        # ... nor across punctuation or a boundary word
        ("没有，变质了", {"food.spoiled": ("变质",)}, {}),
        ("没但是变质", {"food.spoiled": ("变质",)}, {}),
        # a complaint that contains its own negation is a keyword of its own
        ("一点都不新鲜", {"food.spoiled": ("不新鲜",)}, {}),
        # double negation cancels the complaint
        ("不是不新鲜", {}, {}),
        # exempt phrases contain a cue character but do not negate; questions tag
        ("有没有变质", {"food.spoiled": ("变质",)}, {}),
        ("没想到变质", {"food.spoiled": ("变质",)}, {}),
        ("味道不错变质了", {"food.spoiled": ("变质",)}, {}),
        # negatable: false ignores negation
        ("别逼我报警", {"safety.police": ("报警",)}, {}),
        # emotions are negated the same way
        ("不气死", {}, {}),
        ("气死了", {}, {"angry": ("气死",)}),
        # maximal match: the longer keyword hides the shorter one of the same kind
        ("骑手态度差", {"svc.rider": ("骑手态度差",)}, {}),
        ("客服态度差", {"svc.attitude": ("态度差",)}, {}),
        # ... but an emotion inside an issue keyword still counts, and vice versa
        ("服务太差", {"svc.bad": ("服务太差",)}, {"angry": ("太差",)}),
        # stop phrase hides the keyword inside it
        ("不好意思", {}, {}),
        ("真不好", {"svc.bad": ("不好",)}, {}),
        # latin/digit keywords respect word boundaries, after width/case folding
        ("ＡＰＰ打不开", {"svc.app": ("APP",)}, {}),
        ("apple 很好", {}, {}),
        ("whatsapp", {}, {}),
        ("打315热线", {"svc.app": ("315",)}, {}),
        ("价格3150元", {}, {}),
        # traditional script is folded to simplified
        ("頭髮", {"food.hair": ("头发",)}, {}),
        # keywords deduplicated, ids sorted
        (
            "变质变质，头发",
            {"food.hair": ("头发",), "food.spoiled": ("变质",)},
            {},
        ),
        ("", {}, {}),
        ("！！！   ", {}, {}),
    ],
)
def test_mechanics(
    small: Tagger, text: str, tags: dict[str, tuple[str, ...]], emotions: dict[str, tuple[str, ...]]
) -> None:
    result = small.tag(text)
    assert result.tags == tuple(TagHit(k, v) for k, v in sorted(tags.items()))
    assert result.emotions == tuple(TagHit(k, v) for k, v in sorted(emotions.items()))


@pytest.mark.parametrize(
    ("text", "must", "must_not"),
    [
        # delivery
        ("外卖等了一个小时还没送到", {"logistics.delay"}, set()),
        ("送的也太慢了吧", {"logistics.delay"}, set()),
        ("送餐很快，味道不错", set(), {"logistics.delay"}),
        ("骑手把汤洒了一袋子", {"logistics.damaged"}, set()),
        # food safety and its negation policy
        ("食物变质了，吃完拉肚子", {"food_safety.spoiled", "food_safety.illness"}, set()),
        ("饭里吃出一根头发", {"food_safety.foreign_object"}, set()),
        ("菜里有只虫子", {"food_safety.foreign_object"}, set()),
        ("没有变质，放心", set(), {"food_safety.spoiled"}),
        ("一点都不新鲜", {"quality.freshness"}, set()),
        ("这个有没有变质？", {"food_safety.spoiled"}, set()),
        ("没有变质，但是很难吃", {"quality.taste"}, {"food_safety.spoiled"}),
        # traditional script and full width
        ("我的訂單還沒到，要退貨", {"logistics.delay", "after_sales.return_exchange"}, set()),
        ("飯裡有頭髮", {"food_safety.foreign_object"}, set()),
        ("ＶＩＰ会员积分清零了", {"account.membership"}, set()),
        # an app fault is a product fault: LABELLING.md puts device faults under quality
        ("ＡＰＰ闪退，打不开", {"quality.app_issue"}, set()),
        # money
        ("退款三天了还没到账", {"payment.refund_not_received"}, set()),
        ("没收到退款", {"payment.refund_not_received"}, {"logistics.lost"}),
        ("支付失败但是钱扣了", {"payment.failed"}, set()),
        ("莫名其妙扣费，自动续费没授权", {"payment.unauthorized_charge"}, set()),
        # orders
        ("少送了一份米饭", {"order.missing_item"}, set()),
        ("怎么取消订单", {"order.cancel"}, set()),
        # service
        (
            "骑手态度差，送的太慢",
            {"service.rider_attitude", "logistics.delay"},
            {"service.attitude"},
        ),
        ("骑手态度很好，谢谢", set(), {"service.rider_attitude", "service.attitude"}),
        ("客服态度恶劣，爱答不理", {"service.attitude"}, set()),
        ("打了三次电话都没人接", {"service.unresponsive"}, set()),
        # safety and legal ignore negation
        ("骑手威胁我，我已经报警了", {"safety.personal"}, set()),
        ("别逼我报警", {"safety.personal"}, set()),
        ("我要打12315，还要找媒体曝光", {"legal.regulator"}, set()),
        ("已经找了律师准备起诉", {"legal.lawsuit"}, set()),
        ("价格3150元", set(), {"legal.regulator"}),
        # non-food desks
        ("手机充不进电，还死机", {"quality.malfunction"}, set()),
        ("刚买就降价了，能价保吗", {"payment.price_protection"}, set()),
        ("主播说买一送一，结果没送", {"livestream.host_promise"}, set()),
        ("航班延误了四个小时", {"travel.flight"}, {"logistics.delay"}),
        ("家里宽带又断网了", {"quality.network"}, set()),
        # praise stays quiet
        ("非常好吃，送餐也快，好评", set(), {"logistics.delay", "quality.taste"}),
        ("不好意思，麻烦帮我看一下", set(), {"quality.dissatisfied"}),
    ],
)
def test_shipped_messages(shipped: Tagger, text: str, must: set[str], must_not: set[str]) -> None:
    ids = set(shipped.tag(text).tag_ids)
    assert must <= ids, f"{text!r}: missing {must - ids}, got {sorted(ids)}"
    assert not ids & must_not, f"{text!r}: unexpected {ids & must_not}"


@pytest.mark.parametrize(
    ("text", "emotions"),
    [
        ("垃圾店，气死我了", {"angry"}),
        ("太坑人了，骗子", {"angry"}),
        ("很急，麻烦马上处理", {"urgent"}),
        ("不急，慢慢来", set()),
        ("再也不买了", {"churn_risk"}),
        ("东西不错，谢谢", set()),
    ],
)
def test_shipped_emotions(shipped: Tagger, text: str, emotions: set[str]) -> None:
    assert set(shipped.tag(text).emotion_ids) == emotions


def test_tag_ids_are_taxonomy_leaves(shipped: Tagger) -> None:
    known = set(shipped.taxonomy.tag_ids())
    with SAMPLE.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            result = shipped.tag(row["text"])
            assert set(result.tag_ids) <= known
            assert set(result.emotion_ids) <= set(shipped.taxonomy.emotions)


def test_result_repr_reads_well(small: Tagger) -> None:
    assert repr(small.tag("服务太差")) == "TagResult(tags=svc.bad[服务太差] emotions=angry[太差])"
    assert small.tag("") == TagResult((), ())


# Text drawn from CJK, full-width forms, latin, digits, punctuation and cue/keyword
# characters, so that hits, negations and boundaries actually occur.
_ALPHABET = (
    st.sampled_from(
        list("变质不新鲜没有头发服务太差骑手态度报警气死好意思别但是有没想到错")
        + list("訂單頭髮飯裡ＡＰＰａｐｐ３１５")
        + list("apAP315 ，。！？\n\t")
    )
    | st.characters()
)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_tag_never_crashes_and_is_deterministic(small: Tagger, text: str) -> None:
    first = small.tag(text)
    assert small.tag(text) == first
    for hits in (first.tags, first.emotions):
        ids = [h.id for h in hits]
        assert ids == sorted(set(ids))
        for hit in hits:
            assert hit.keywords
            assert len(set(hit.keywords)) == len(hit.keywords)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_shipped_tag_never_crashes(shipped: Tagger, text: str) -> None:
    result = shipped.tag(text)
    assert shipped.tag(text) == result
    assert set(result.tag_ids) <= set(shipped.taxonomy.tag_ids())


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("訂單退貨", "订单退货"),
        ("ＶＩＰ　ＡＰＰ", "vip app"),
        ("Hello,   World!!", "hello world"),
        ("退款！！！没到账……", "退款 没到账"),
        ("  前后空白  ", "前后空白"),
        ("什么怎么", "什么怎么"),  # 么 alone is simplified already
        ("①号", "1号"),
        ("", ""),
        ("。。。", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def _always_t2s(text: str) -> str:
    """normalize() without the fast path: OpenCC runs on every non-ASCII text."""
    norm = default_normalizer()
    text = _SEPARATORS.sub(" ", text.lower())
    if not unicodedata.is_normalized("NFKC", text):
        text = _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text).lower())
    return norm.convert_t2s(text).strip(" ")


# Characters around t2s: phrase-only changes (乾燥), one-to-many (发/發/髮), 么 that only
# changes inside 么麼, and two astral characters from OpenCC's table (U+205E3 becomes
# 㓆), so that every branch of the fast-path check is exercised.
_T2S = st.sampled_from([*"乾燥头发發髮麼么麽後后臺台裡里於于著着", "\U0002005e", "\U000205e3"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_T2S | _ALPHABET))
def test_t2s_fast_path_is_sound(text: str) -> None:
    assert normalize(text) == _always_t2s(text)


# ---------------------------------------------------------------- bench and coverage


def test_bench_reports_all_figures() -> None:
    texts = ["外卖等了一个小时还没送到", "送餐很快，味道不错", "没收到退款，客服也不理"]
    figures = run_tagger_bench(texts, seconds=0.05)
    assert set(figures) == {
        "keywords",
        "messages",
        "aho_msgs_per_s",
        "regex_msgs_per_s",
        "naive_in_msgs_per_s",
        "normalize_msgs_per_s",
        "speedup_vs_regex",
        "speedup_vs_naive_in",
        "model_ngrams",
        "model_msgs_per_s",
        "model_vs_keywords",
    }
    assert figures["keywords"] > 1000
    assert figures["messages"] == 3
    assert all(v > 0 for v in figures.values())
    # Figures, not speed: how fast is measured by `omniroute bench-tagger`, never asserted.
    assert figures["speedup_vs_regex"] == pytest.approx(
        figures["aho_msgs_per_s"] / figures["regex_msgs_per_s"])
    assert figures["speedup_vs_naive_in"] == pytest.approx(
        figures["aho_msgs_per_s"] / figures["naive_in_msgs_per_s"])
    assert figures["model_vs_keywords"] == pytest.approx(
        figures["model_msgs_per_s"] / figures["aho_msgs_per_s"])


def test_bench_tagger_command_prints_its_figures() -> None:
    result = CliRunner().invoke(cli_app, ["bench-tagger", "--seconds", "0.2"])
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    assert set(figures) == {
        "keywords", "messages", "aho_msgs_per_s", "regex_msgs_per_s", "naive_in_msgs_per_s",
        "normalize_msgs_per_s", "speedup_vs_regex", "speedup_vs_naive_in", "model_ngrams",
        "model_msgs_per_s", "model_vs_keywords",
    }
    assert figures["messages"] == len(bundled_texts())
    assert all(isinstance(v, float) and v > 0 for v in figures.values())


def test_bench_codec_command_prints_its_figures() -> None:
    """Figures, not speed: ``omniroute bench-codec`` runs and prints every figure."""
    result = CliRunner().invoke(cli_app, ["bench-codec", "-n", "100"])
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    assert set(figures) == {
        "messages", "decode_us", "decode_msgspec_struct_us", "encode_decision_us",
        "encode_decision_msgspec_us", "encode_decision_orjson_us", "decode_decide_encode_us",
        "decode_decide_encode_keywords_only_us",
    }
    assert figures["messages"] == 100
    assert all(isinstance(v, float) and v > 0 for v in figures.values())


def test_bench_needs_texts() -> None:
    with pytest.raises(ValueError, match="at least one text"):
        run_tagger_bench([])


@pytest.mark.parametrize(
    ("split", "messages", "min_coverage"),
    # Regression guards a little under the published figures (docs/taxonomy.md).
    [("tuning", 200, 0.85), ("tuning2", 141, 0.90), ("holdout", 150, 0.78), (None, 491, 0.85)],
)
def test_coverage_on_labelled_sample(split: str | None, messages: int, min_coverage: float) -> None:
    report = coverage_report(SAMPLE, split=split)
    assert report["messages"] == messages
    assert report["complaints"] > 0.8 * messages
    assert report["complaint_coverage"] >= min_coverage
    assert report["positive_false_positive"] <= 0.10


def test_coverage_unknown_split() -> None:
    with pytest.raises(ValueError, match="no rows with split='nope'"):
        coverage_report(SAMPLE, split="nope")


def test_coverage_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("text\n送餐太慢了\n很好吃，好评\n今天天气\n", encoding="utf-8")
    report = coverage_report(path)
    assert report["messages"] == 3
    assert report["tagged_share"] == pytest.approx(1 / 3)
    assert report["praise_messages"] == 1
    assert report["praise_false_positive"] == 0
    assert "complaint_coverage" not in report


def test_coverage_needs_text_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("body\nx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'text' column"):
        coverage_report(path)


@pytest.mark.parametrize(
    ("text", "praise"),
    [
        ("很好吃，好评", True),
        ("味道不错，送餐很快", True),
        ("好吃但是太慢", False),
        ("不好吃", False),
        ("等了两个小时，味道不错", False),
        ("今天天气", False),
    ],
)
def test_praise_rule(text: str, praise: bool) -> None:
    assert is_clear_praise(text) is praise
