"""Taxonomy, keyword tagger, priority model, routing rules, skill groups, Redis queues.

The Redis side (``skills.queues``, ``skills.relax``) is imported from its own modules:
it depends on the router's pipeline, which depends on this package.
"""

from .config import RoutingConfig, load_config
from .groups import SkillGroup, SkillGroups
from .priority import PriorityModel, PrioritySettings
from .rules import Facts, Rule, RuleSet, When
from .tagger import Tagger, TagResult
from .taxonomy import Taxonomy, load_taxonomy

__all__ = [
    "Facts",
    "PriorityModel",
    "PrioritySettings",
    "RoutingConfig",
    "Rule",
    "RuleSet",
    "SkillGroup",
    "SkillGroups",
    "TagResult",
    "Tagger",
    "Taxonomy",
    "When",
    "load_config",
    "load_taxonomy",
]
