"""Live-room chatter: comments kept off agent queues (produced to ``omni.chatter``).

A comment is classified by the first rule that decides, in this order:

1. ``empty``       nothing but whitespace.
2. ``repeat``      the same viewer sent the same (normalised) text within
                   ``repeat_window_s`` (a different msg_id: a re-delivery of the
                   same message is not a repeat).
3. *route*         contains one of ``keep_keywords`` (退款, 投诉, 发货 ...): never chatter.
4. *route*         is a question: ``?``/``？`` or a question word (吗, 呢, 怎么, 什么,
                   多少, 几, 哪, 为什么, 能不能, 有没有, how, what ...); the 么 of
                   这么/那么/多么/么么哒 does not ask anything.
5. ``emoji_only``  no letter or digit once emoji, ``[表情]`` codes, punctuation and
                   symbols are removed.
6. ``cheer``       cheering, greetings and compliments to the host: every clause
                   (the text split at punctuation, emoji and spaces) is
                   - one of ``cheers`` (666, 赞, 加油, 辛苦了, 晚上好 ...), or a
                     repetition of one (来了来了), or a run of 6s, 哈/h, 1s or "2333",
                     optionally with one of ``hosts`` before or after (主播加油,
                     晚上好主播, 辛苦了宝子);
                   - a compliment: [host] [a feature of the host's person, 声音 /
                     皮肤 / 笑得 ...] [intensifiers 好/太/真/超 ...] one of ``praise``
                     [particles 啊/呀/了 ...] [host] (主播好美, 好美啊主播,
                     主播声音真好听, 小姐姐太可爱了);
                   - love or support: [我] [intensifiers] 喜欢/爱/支持/心疼 ... [host]
                     (好喜欢主播, 支持主播, 爱你哦).
                   Praise of a product is not a compliment to the host: 衣服 /
                   口红 are no feature here, so "主播的衣服真好看" is routed (it is
                   often the start of a purchase), as is anything negated (不/没).
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
# 么 that asks nothing: 这么美, 那么好, 多么可爱, 么么哒 (a kiss)
_NOT_A_QUESTION: Final = re.compile(r"么么哒?|[这那多]么")
# Parts of the compliment grammar that are language, not configuration.
_FEATURES: Final = (
    "声音", "嗓音", "嗓子", "皮肤", "头发", "发型", "身材", "颜值", "气质", "笑容", "笑声", "眼睛",
    "牙齿", "五官", "脸", "状态", "性格", "脾气", "口才", "普通话", "歌声", "人", "心",
)
_DOING_WELL: Final = ("笑", "唱", "说", "讲", "跳", "长", "穿", "播", "介绍")  # + 得: 唱得真好听
# One way only to split a run of these (no 好好 beside 好, no 还是 beside 还 + 是): an
# ambiguous split makes the regex backtrack exponentially on 好好好...好x.
_INTENSIFIERS: Final = (
    "真的", "超级", "特别", "非常", "越来越", "实在", "简直", "这么", "那么", "多么", "如此",
    "今天", "今晚", "每天", "一直", "就是", "绝对", "永远",
    "好", "太", "真", "超", "很", "巨", "贼", "蛮", "挺", "最", "也", "又", "还", "都", "是",
    "so", "very", "too", "really",
)
_LOVE: Final = (
    "喜欢", "爱死", "爱上", "爱", "支持", "心疼", "宠", "粉", "关注", "想", "love", "like",
)
_PARTICLES: Final = r"(?:了|啦|啊|呀|哇|哦|噢|喔|耶|哟|呐|嘛|吧|吖|鸭|哈|捏|叻|you|u)*"
_INTERJECTIONS: Final = r"(?:哇|啊|呀|哈|嘿|天哪|天呐|wow|omg)*"
_MAX_CLAUSE_CHARS: Final = 24  # compliments are short; longer clauses are read by agents
_SEPARATORS: Final = re.compile(r"[^\w]+|_+")  # punctuation, emoji, symbols, spaces

_QUESTION_WORDS: Final = (
    "吗", "呢", "么", "怎么", "什么", "多少", "几", "哪", "为什么", "为啥", "能不能", "可不可以",
    "有没有", "是不是", "how", "what", "when", "why", "where", "which", "can i", "do you",
)


def _alt(words: tuple[str, ...] | frozenset[str]) -> str:
    """A regex alternation of ``words``, longest first (so 真的 wins over 真)."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True) if w)


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
        self._host_praise = _host_praise_grammar(config, self._cheers)
        self._recent: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"ChatterRules(min_chars={self.config.min_chars}, remembered={len(self._recent)})"

    def _is_cheer(self, core: str) -> bool:
        return bool(_CHEER_RUNS.fullmatch(core)) or any(
            c and len(core) % len(c) == 0 and core == c * (len(core) // len(c))
            for c in self._cheers
        )

    def _praises(self, clause: str) -> bool:
        """One clause is a cheer or a compliment / love for the host (or a repetition)."""
        if self._is_cheer(clause):
            return True
        if len(clause) > _MAX_CLAUSE_CHARS:
            return False
        if self._host_praise.fullmatch(clause):
            return True
        # 爱了爱了, 主播好美主播好美: a repeated unit
        return any(
            len(clause) % n == 0
            and clause == clause[:n] * (len(clause) // n)
            and self._host_praise.fullmatch(clause[:n]) is not None
            for n in range(1, len(clause) // 2 + 1)
        )

    def _all_host_praise(self, norm: str) -> bool:
        """Every clause praises or cheers (主播好美！加油 / 来了来了 主播晚上好)."""
        clauses = [meaningful(c) for c in _SEPARATORS.split(norm)]
        clauses = [c for c in clauses if c]
        if not clauses:
            return False
        if all(self._praises(c) for c in clauses):
            return True
        # "so beautiful", "主播 好美": words split by spaces only, read as one clause
        joined = [meaningful(p) for p in re.split(r"[^\w\s]+|_+", norm)]
        return all(self._praises(c) for c in joined if c)

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
        asked = _NOT_A_QUESTION.sub("", norm)
        if "?" in asked or "？" in asked or any(w in asked for w in _QUESTION_WORDS):
            return None
        core = meaningful(norm)
        if not core:
            return "emoji_only"
        if self._is_cheer(core) or self._all_host_praise(norm):
            return "cheer"
        if len(core) < self.config.min_chars:
            return "too_short"
        return None


def _host_praise_grammar(config: ChatterConfig, cheers: frozenset[str]) -> re.Pattern[str]:
    """The compliment / love / cheer-with-host grammar of rule 6, for ``fullmatch``
    on one clause (letters and digits only, lower-cased)."""
    hosts = tuple(meaningful(normalise(h)) for h in config.hosts)
    host = f"(?:(?:{_alt(hosts)})们?){{1,2}}" if any(hosts) else "(?!)"
    host = f"(?:{host})"  # so that ``{host}?`` is optional, not a lazy {1,2}
    praise = tuple(meaningful(normalise(w)) for w in config.praise)
    adjective = f"(?:{_alt(praise)})" if any(praise) else "(?!)"
    more = f"(?:{_alt(_INTENSIFIERS)})*"
    feature = f"(?:{more}的?(?:{_alt(_FEATURES)}|(?:{_alt(_DOING_WELL)})得))?"
    cheer = f"(?:{_alt(cheers)})" if cheers else "(?!)"
    tail = _PARTICLES
    compliment = (
        f"{_INTERJECTIONS}(?:我的)?{host}?{feature}{more}{adjective}+{tail}{host}?{tail}"
    )
    love = f"{host}?我?{more}(?:{_alt(_LOVE)}){tail}(?:{host}{tail})?"
    cheer_host = f"{host}?{more}{cheer}{tail}{host}?{tail}"
    return re.compile(f"(?:{compliment}|{love}|{cheer_host})")
