"""Configuration: validation errors name file:line, key path, value and fix; hot reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from omniroute.router.exceptions import ConfigError
from omniroute.router.metrics import RouterMetrics
from omniroute.router.models import Band, Channel, EntryKind
from omniroute.router.pipeline import Pipeline, RedisFacts
from omniroute.router.reload import PipelineHolder
from omniroute.router.settings import default_config_dir
from omniroute.skills.config import load_config
from tests.helpers import envelope

MINI = Path(__file__).parent / "data" / "mini"


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    target = tmp_path / "cfg"
    shutil.copytree(MINI, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def _touch_later(path: Path) -> None:
    """Move the modification time forward, so the change is seen on coarse-mtime filesystems."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_shipped_configuration_is_valid() -> None:
    cfg = load_config(default_config_dir())
    assert {"general", "emergency", "vip", "livestream", "food_safety", "legal_pr"} <= set(
        cfg.groups.groups
    )
    assert cfg.routing.rules[-1].id == "default"


@pytest.mark.parametrize(
    ("file", "old", "new", "needles"),
    [
        ("routing.yaml", "target: food_safety}", "target: food_safty}",
         ["routing.yaml:13", "rules.2.target", "unknown group 'food_safty'",
          "define it in skill_groups.yaml"]),
        ("routing.yaml", "tags_any: [legal]", "tags_any: [lawyer]",
         ["routing.yaml:12", "rules.1.when.tags_any.0", "unknown tag 'lawyer'"]),
        ("routing.yaml", "  - {id: default, target: general}",
         "  - {id: default, when: {tiers: [vip]}, target: general}",
         ["the last rule ('default') has conditions", "catch-all"]),
        ("routing.yaml", "points_per_step: 5", "points_per_step: lots",
         ["routing.yaml:3", "priority.points_per_step", "valid number", "'lots'"]),
        ("routing.yaml", "bands: {P0: 80, P1: 60, P2: 40, P3: 20}",
         "bands: {P0: 80, P1: 90, P2: 40, P3: 20}",
         ["priority.bands", "must fall from P0 to P3"]),
        ("skill_groups.yaml", "max_queue: 100, overflow: senior", "max_queue: -1, overflow: senior",
         ["skill_groups.yaml:2", "groups.general.max_queue", "greater than or equal to 1"]),
        ("skill_groups.yaml", "overflow: general}", "overflow: nowhere}",
         ["groups.logistics.overflow", "unknown group 'nowhere'"]),
        ("routing.yaml", "rules:", "rules:\n  - {id: safety, target: general}",
         ["duplicate rule id 'safety'"]),
        ("routing.yaml", "version: mini-1", "version: [mini", ["invalid YAML"]),
    ],
)
def test_errors_name_file_line_key_value_and_fix(
    cfg_dir: Path, file: str, old: str, new: str, needles: list[str]
) -> None:
    _edit(cfg_dir / file, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(cfg_dir)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing \['taxonomy.yaml', 'skill_groups.yaml'"):
        load_config(tmp_path)


def test_reload_applies_a_valid_change_and_keeps_the_old_config_on_a_bad_one(
    cfg_dir: Path,
) -> None:
    registry = CollectorRegistry()
    holder = PipelineHolder(cfg_dir, RouterMetrics(registry))
    first = holder.version
    assert holder().decide(envelope(1, "外卖还没到"), 1).skill_group == "logistics"

    assert holder.reload_if_changed() is False  # nothing changed yet
    routing = cfg_dir / "routing.yaml"
    _edit(routing, "target: logistics, fallbacks", "target: general, fallbacks")
    _touch_later(routing)
    assert holder.reload_if_changed() is True  # the file watcher alone picks up the change
    assert holder.version != first
    assert holder.reload_if_changed() is False  # and only once
    decided = holder().decide(envelope(2, "外卖还没到"), 1)
    assert (decided.skill_group, decided.config_version) == ("general", holder.version)

    good = holder.version
    _edit(cfg_dir / "routing.yaml", "target: general, fallbacks", "target: nowhere, fallbacks")
    assert holder.reload() is False
    assert holder.version == good
    assert registry.get_sample_value("omni_config_reloads_total", {"result": "rejected"}) == 1
    assert registry.get_sample_value("omni_config_info", {"version": good}) == 1


_TAGS = ["logistics", "logistics.delay", "food_safety", "payment", "service", "safety", "legal",
         "product.info"]
_GROUPS = ["general", "logistics", "food_safety", "payment", "vip", "emergency", "closed"]


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, object]]:
    rules: list[dict[str, object]] = []
    for i in range(draw(st.integers(0, 8))):
        when: dict[str, object] = {}
        if draw(st.booleans()):
            when["tags_any"] = draw(st.lists(st.sampled_from(_TAGS), min_size=1, max_size=3))
        if draw(st.booleans()):
            when["tiers"] = draw(st.lists(st.sampled_from(["vip", "gold"]), min_size=1))
        if draw(st.booleans()):
            when["channels"] = draw(st.lists(st.sampled_from([c.value for c in Channel]),
                                             min_size=1))
        if draw(st.booleans()):
            when["bands"] = draw(st.lists(st.sampled_from([b.value for b in Band]), min_size=1))
        if draw(st.booleans()):
            when["entries"] = draw(st.lists(st.sampled_from([e.value for e in EntryKind]),
                                            min_size=1))
        if draw(st.booleans()):
            when["min_amount"] = draw(st.floats(0, 1000))
        rules.append({"id": f"r{i}", "when": when, "target": draw(st.sampled_from(_GROUPS)),
                      "fallbacks": draw(st.lists(st.sampled_from(_GROUPS), max_size=3))})
    rules.append({"id": "default", "target": draw(st.sampled_from(_GROUPS))})
    return rules


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=rule_sets(), text=st.text(max_size=50), depth=st.integers(0, 200))
def test_no_valid_rule_set_crashes_the_router(
    cfg_dir: Path, rules: list[dict[str, object]], text: str, depth: int
) -> None:
    routing = yaml.safe_load((cfg_dir / "routing.yaml").read_text(encoding="utf-8"))
    routing["rules"] = rules
    (cfg_dir / "routing.yaml").write_text(yaml.safe_dump(routing, allow_unicode=True),
                                          encoding="utf-8")
    pipeline = Pipeline(load_config(cfg_dir))
    groups = pipeline.config.groups.groups
    d = pipeline.decide(envelope(1, text or "x", amount=depth), 1, RedisFacts(),
                        dict.fromkeys(groups, depth))
    assert d.skill_group in groups
    assert d.rule_id in {r["id"] for r in rules}
