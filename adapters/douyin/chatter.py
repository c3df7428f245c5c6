"""Live-room chatter: comments kept off agent queues (produced to ``omni.chatter``).

A comment is classified by the first rule that decides, in this order:

1. ``empty``       nothing but whitespace.
2. ``repeat``      the same viewer sent the same (normalised) text within
                   ``repeat_window_s`` (a different msg_id: a re-delivery of the
                   same message is not a repeat).
3. *route*         contains one of ``keep_keywords`` (退款, 投诉, 发货 ...): never chatter.
4. *route*         is a question: ``?``/``？`` or a question word (吗, 呢, 怎么, 什么,
                   多少, 几, 哪, 为什么, 能不能, 有没有, how, what ...).
5. ``emoji_only``  no letter or digit once emoji, ``[表情]`` codes, punctuation and
                   symbols are removed.
6. ``cheer``       one of ``cheers`` (666, 赞, 哈哈, 来了 ...) or a repetition of one
                   (来了来了), or a run of 6s, 哈/h, 1s or "2333".
7. ``too_short``   fewer than ``min_chars`` letters/digits.

Anything else is routed. Chatter is counted (``omni_adapter_filtered_total{rule}``)
and produced to ``omni.chatter`` with the rule in ``meta.chatter_rule``: it is
never lost, only kept away from agents. The repeat memory is per process
(a bounded LRU), a best-effort heuristic, like the rules themselves.
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from typing import Final

from ...router.events import ChatterRule
from .config import ChatterConfig

__all__ = ["ChatterRules", "meaningful", "normalise"]

_EMOJI_CODE: Final = re.compile(r"\[[^\[\]\s]{1,8}\]")  # Douyin's [比心] [赞] codes
_CHEER_RUNS: Final = re.compile(r"(?:6{2,}|[哈呵嘿h]{2,}|1+|23{2,})")
_QUESTION_WORDS: Final = (
    "吗", "呢", "么", "怎么", "什么", "多少", "几", "哪", "为什么", "为啥", "能不能", "可不可以",
    "有没有", "是不是", "how", "what", "when", "why", "where", "which", "can i", "do you",
)


def normalise(text: str) -> str:
    """Lower-case, without ``[表情]`` codes and surrounding whitespace."""
    return _EMOJI_CODE.sub("", text).strip().lower()


def meaningful(text: str) -> str:
    """Only the letters and digits of ``text`` (emoji, punctuation, symbols removed)."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


class ChatterRules:
    """The rules above, with a per-process memory for ``repeat``."""

    def __init__(self, config: ChatterConfig) -> None:
        self.config = config
        self._cheers = frozenset(meaningful(normalise(c)) for c in config.cheers)
        self._keep = tuple(k.lower() for k in config.keep_keywords)
        self._recent: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"ChatterRules(min_chars={self.config.min_chars}, remembered={len(self._recent)})"

    def _repeat(self, viewer: str, norm: str, msg_id: str, now_s: float) -> bool:
        if self.config.repeat_cache_size == 0:
            return False
        key = (viewer, norm)
        previous = self._recent.pop(key, None)
        self._recent[key] = (now_s, msg_id)
        while len(self._recent) > self.config.repeat_cache_size:
            self._recent.popitem(last=False)
        if previous is None:
            return False
        seen_s, seen_id = previous
        return seen_id != msg_id and now_s - seen_s <= self.config.repeat_window_s

    def classify(
        self, viewer: str, text: str, msg_id: str, now_s: float
    ) -> ChatterRule | None:
        """The chatter rule that matches, or None when the comment goes to agents."""
        if not text.strip():
            return "empty"
        norm = normalise(text)
        if self._repeat(viewer, norm, msg_id, now_s):
            return "repeat"
        if any(k in norm for k in self._keep):
            return None
        if "?" in norm or "？" in norm or any(w in norm for w in _QUESTION_WORDS):
            return None
        core = meaningful(norm)
        if not core:
            return "emoji_only"
        if _CHEER_RUNS.fullmatch(core) or any(
            c and len(core) % len(c) == 0 and core == c * (len(core) // len(c))
            for c in self._cheers
        ):
            return "cheer"
        if len(core) < self.config.min_chars:
            return "too_short"
        return None
