"""The routing configuration directory: taxonomy.yaml, skill_groups.yaml, routing.yaml.

``load_config(dir)`` validates every file into typed models and cross-checks them
(rule targets, overflow targets and rule tags must exist). Errors name the file,
the line, the key path, the bad value and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .exceptions import ConfigError
from .groups import SkillGroups
from .model import MODEL_FILE, TagModel, load_tag_model
from .priority import PrioritySettings
from .rules import Rule
from .taxonomy import Taxonomy, load_taxonomy
from .yamlconfig import LocatedYaml, load_model

__all__ = [
    "CONFIG_FILES",
    "WATCHED_FILES",
    "RoutingConfig",
    "RoutingFile",
    "Sticky",
    "load_config",
]

CONFIG_FILES = ("taxonomy.yaml", "skill_groups.yaml", "routing.yaml")
#: Every file whose change reloads the routing configuration (the model is optional).
WATCHED_FILES = (*CONFIG_FILES, MODEL_FILE)


class Sticky(BaseModel):
    """Returning conversations go back to the group (and agent) that served them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    window_s: float = Field(86_400.0, gt=0)


class RoutingFile(BaseModel):
    """The file config/routing.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str | None = Field(None, description="label; default: a hash of the three files")
    priority: PrioritySettings = Field(default_factory=PrioritySettings)
    sticky: Sticky = Field(default_factory=Sticky)
    rules: tuple[Rule, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Everything the router needs to decide, validated and cross-checked."""

    directory: Path
    version: str
    taxonomy: Taxonomy
    groups: SkillGroups
    routing: RoutingFile
    model: TagModel | None = None

    def __repr__(self) -> str:
        return (
            f"RoutingConfig({self.directory} version={self.version} "
            f"groups={len(self.groups.groups)} rules={len(self.routing.rules)})"
        )


def _cross_check(
    groups: SkillGroups, routing: RoutingFile, taxonomy: Taxonomy, gdoc: LocatedYaml,
    rdoc: LocatedYaml,
) -> None:
    known = set(groups.groups)
    problems: list[str] = []
    for gid, g in groups.groups.items():
        for field_name in ("overflow", "senior"):
            target = getattr(g, field_name)
            if target is not None and target not in known:
                problems.append(
                    f"{gdoc.where(('groups', gid, field_name))}: groups.{gid}.{field_name}: "
                    f"unknown group {target!r}; use one of {sorted(known)}"
                )
    tag_roots = set(taxonomy.categories)
    tag_ids = set(taxonomy.tag_ids())
    seen_ids: set[str] = set()
    for i, rule in enumerate(routing.rules):
        if rule.id in seen_ids:
            problems.append(
                f"{rdoc.where(('rules', i, 'id'))}: rules.{i}.id: duplicate rule id {rule.id!r}; "
                "rule ids must be unique"
            )
        seen_ids.add(rule.id)
        for j, target in enumerate((rule.target, *rule.fallbacks)):
            loc: tuple[str | int, ...] = (
                ("rules", i, "target") if j == 0 else ("rules", i, "fallbacks", j - 1)
            )
            if target not in known:
                problems.append(
                    f"{rdoc.where(loc)}: {'.'.join(map(str, loc))}: unknown group {target!r}; "
                    f"define it in skill_groups.yaml or use one of {sorted(known)}"
                )
        for key in ("tags_any", "tags_none"):
            for k, tag in enumerate(getattr(rule.when, key)):
                if tag not in tag_roots and tag not in tag_ids:
                    loc = ("rules", i, "when", key, k)
                    problems.append(
                        f"{rdoc.where(loc)}: {'.'.join(map(str, loc))}: unknown tag {tag!r}; "
                        "use a top-level id or a leaf id of taxonomy.yaml"
                    )
        for k, emo in enumerate(rule.when.emotions_any):
            if emo not in taxonomy.emotions:
                loc = ("rules", i, "when", "emotions_any", k)
                problems.append(
                    f"{rdoc.where(loc)}: {'.'.join(map(str, loc))}: unknown emotion {emo!r}; "
                    f"use one of {sorted(taxonomy.emotions)}"
                )
    last = routing.rules[-1]
    if last.when != type(last.when)():
        problems.append(
            f"{rdoc.where(('rules', len(routing.rules) - 1))}: rules: the last rule "
            f"({last.id!r}) has conditions; end with a catch-all such as "
            "'- {id: default, target: general}' so every message is routed"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def load_config(directory: Path) -> RoutingConfig:
    """Load and validate a configuration directory; raise ConfigError listing every problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory; pass the folder holding {CONFIG_FILES}")
    missing = [f for f in CONFIG_FILES if not (directory / f).is_file()]
    if missing:
        raise ConfigError(f"{directory}: missing {missing}; copy them from the shipped config/")
    taxonomy = load_taxonomy(directory / "taxonomy.yaml")
    groups, gdoc = load_model(
        directory / "skill_groups.yaml", SkillGroups, "see README, 'Configuration reference'"
    )
    routing, rdoc = load_model(
        directory / "routing.yaml", RoutingFile, "see README, 'Configuration reference'"
    )
    _cross_check(groups, routing, taxonomy, gdoc, rdoc)
    model: TagModel | None = None
    model_path = directory / MODEL_FILE
    if model_path.is_file():
        model = load_tag_model(model_path)
        model.check_against(taxonomy.issue_categories(), str(model_path))
    digest = hashlib.sha256()
    for name in WATCHED_FILES:
        if (directory / name).is_file():
            digest.update((directory / name).read_bytes())
    version = routing.version or f"sha256:{digest.hexdigest()[:12]}"
    if routing.version:
        version = f"{routing.version}+{digest.hexdigest()[:8]}"
    return RoutingConfig(directory, version, taxonomy, groups, routing, model)
