"""The shipped taxonomy and the errors a bad taxonomy file produces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from omniroute.router.exceptions import ConfigError
from omniroute.skills.taxonomy import Leaf, Taxonomy, default_taxonomy_path, load_taxonomy

REQUIRED_TOP = {
    "logistics",
    "food_safety",
    "quality",
    "order",
    "payment",
    "after_sales",
    "service",
    "account",
    "safety",
    "legal",
    "product",
    "promotion",
    "livestream",
}
REQUIRED_LEAVES = {
    "logistics.delay",
    "logistics.lost",
    "payment.refund_not_received",
    "payment.failed",
    "order.missing_item",
    "order.cancel",
    "after_sales.return_exchange",
    "service.attitude",
    "service.rider_attitude",
    "food_safety.spoiled",
    "food_safety.foreign_object",
    "safety.personal",
    "legal.regulator",
}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(default_taxonomy_path())


def test_default_path_is_the_repo_config() -> None:
    assert default_taxonomy_path() == Path(__file__).resolve().parent.parent / "config" / (
        "taxonomy.yaml"
    )


def test_shipped_taxonomy_shape(taxonomy: Taxonomy) -> None:
    assert set(taxonomy.categories) >= REQUIRED_TOP
    assert set(taxonomy.tag_ids()) >= REQUIRED_LEAVES
    assert len(taxonomy.tag_ids()) >= 40
    assert 500 <= taxonomy.keyword_count() <= 5000
    assert taxonomy.tag_ids() == sorted(taxonomy.tag_ids())
    assert {"angry", "urgent"} <= set(taxonomy.emotions)
    assert all(e.weight > 0 for e in taxonomy.emotions.values())


def test_shipped_priorities_follow_the_handbook(taxonomy: Taxonomy) -> None:
    for tag_id in ("safety.personal", "food_safety.spoiled", "food_safety.foreign_object"):
        leaf = taxonomy.leaf(tag_id)
        assert (leaf.urgency, leaf.importance) == (3, 3), tag_id
    for tag_id in ("legal.regulator", "legal.lawsuit"):
        assert taxonomy.leaf(tag_id).importance == 3
    # Threats and legal escalation count even when phrased negatively.
    for cat in ("safety", "legal"):
        assert not any(leaf.negatable for leaf in taxonomy.categories[cat].children.values())
    assert all(
        leaf.urgency <= 1 and leaf.importance == 0
        for leaf in taxonomy.categories["product"].children.values()
    )


def test_leaf_lookup(taxonomy: Taxonomy) -> None:
    leaf = taxonomy.leaf("logistics.delay")
    assert isinstance(leaf, Leaf)
    assert "送餐慢" in leaf.keywords
    for bad in ("logistics.nope", "nope.delay", "logistics", ""):
        with pytest.raises(KeyError, match="unknown tag id"):
            taxonomy.leaf(bad)


def test_taxonomy_is_frozen(taxonomy: Taxonomy) -> None:
    with pytest.raises(ValueError, match="frozen"):
        taxonomy.version = 2  # type: ignore[misc]  # asserting that assignment fails


_GOOD = """\
version: 1
emotions:
  angry:
    weight: 15
    keywords: [气死]
categories:
  logistics:
    name: 物流
    children:
      delay:
        name: 配送时效
        urgency: 2
        importance: 1
        keywords: [送餐慢, 太慢了]
"""


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "line_needle", "key_path", "shown"),
    [
        (
            "urgency: 2",
            "urgency: 5",
            "urgency: 5",
            "categories.logistics.children.delay.urgency",
            "5",
        ),
        ("importance: 1", "importance: high", "importance: high", ".importance", "'high'"),
        ("  logistics:", "  Logistics:", "Logistics:", "categories.Logistics", "'Logistics'"),
        ("      delay:", "      delay-late:", "delay-late:", "children.delay-late", "'delay-late'"),
        ("keywords: [送餐慢, 太慢了]", "keyword: [送餐慢]", "keyword:", ".delay.keyword", "Extra"),
        (
            "keywords: [送餐慢, 太慢了]",
            "keywords: []",
            "keywords: []",
            ".delay.keywords",
            "at least 1",
        ),
        (
            "keywords: [送餐慢, 太慢了]",
            "keywords: [VIP, ｖｉｐ]",
            "keywords: [VIP",
            ".delay.keywords",
            "duplicates [0] 'VIP'",
        ),
        ("keywords: [送餐慢, 太慢了]", "keywords: ['!!!']", "'!!!'", ".delay.keywords", "empty"),
        ("keywords: [送餐慢, 太慢了]", "keywords: [12315]", "12315", ".delay.keywords.0", "12315"),
        ("weight: 15", "weight: -1", "weight: -1", "emotions.angry.weight", "-1"),
        (
            "version: 1",
            "version: 1\nnegation: {window_chars: 99}",
            "negation",
            "window_chars",
            "99",
        ),
    ],
)
def test_errors_name_file_line_key_value_and_fix(
    tmp_path: Path, old: str, new: str, line_needle: str, key_path: str, shown: str
) -> None:
    assert old in _GOOD
    text = _GOOD.replace(old, new, 1)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_taxonomy(path)
    message = str(caught.value)
    assert f"{path}:{_line_of(text, line_needle)}:" in message
    assert key_path in message
    assert shown in message
    assert "fix:" in message


def test_good_snippet_loads(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(_GOOD, encoding="utf-8")
    taxonomy = load_taxonomy(path)
    assert taxonomy.tag_ids() == ["logistics.delay"]
    assert taxonomy.negation.window_chars == 5  # the documented default


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(_GOOD.replace("name: 配送时效", "name: a: b"), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:11: invalid YAML")):
        load_taxonomy(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_taxonomy(tmp_path / "absent.yaml")


def test_empty_file_needs_categories(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="categories: Field required"):
        load_taxonomy(path)


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text("categories: {}", encoding="utf-8")
    with pytest.raises(ValueError, match="categories"):
        load_taxonomy(path)
