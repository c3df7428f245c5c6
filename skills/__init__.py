"""Pure decision logic: taxonomy, tagger (keywords and learned model), priority model,
routing rules, skill groups.

Imports no other package of omniroute and does no I/O beyond reading its configuration
files. Its inputs are its own types (:mod:`skills.vocabulary`); the Redis side (queues,
relaxation) is the router's.
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
