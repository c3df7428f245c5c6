"""The hot-path tagger: one Aho-Corasick pass over the normalised message.

Every keyword of the taxonomy (leaves and emotions) is normalised at build time and
put into one automaton, so the cost of :meth:`Tagger.tag` grows with the message
length and the number of hits, not with the number of keywords. Matches are then
filtered by the taxonomy's negation rules (see docs/taxonomy.md).

With a learned model (:mod:`skills.model`), its character n-grams go into the same
automaton: the pass that finds the keywords also sums the n-gram weights, and the
model then confirms, drops or adds each issue category, naming its evidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, NamedTuple

import ahocorasick

from .model import TagModel
from .normalize import SEPARATOR, Normalizer, default_normalizer
from .taxonomy import NegationRules, Taxonomy
from .vocabulary import TagHit

__all__ = ["TagResult", "Tagger"]


@dataclass(frozen=True, slots=True)
class TagResult:
    """What the tagger found in one message.

    Attributes:
        tags: Issue tags (``category.leaf``), sorted by id, each with its keywords
            (deduplicated, in order of first appearance).
        emotions: Emotion hits (``angry``, ``urgent`` ...), same shape.
    """

    tags: tuple[TagHit, ...]
    emotions: tuple[TagHit, ...]

    def __repr__(self) -> str:
        def fmt(hits: tuple[TagHit, ...]) -> str:
            return ",".join(f"{h.id}[{'|'.join(h.keywords)}]" for h in hits) or "-"

        return f"TagResult(tags={fmt(self.tags)} emotions={fmt(self.emotions)})"

    @property
    def tag_ids(self) -> tuple[str, ...]:
        """Just the tag ids."""
        return tuple(h.id for h in self.tags)

    @property
    def emotion_ids(self) -> tuple[str, ...]:
        """Just the emotion ids."""
        return tuple(h.id for h in self.emotions)


EMPTY: Final = TagResult(tags=(), emotions=())


class _Target(NamedTuple):
    key: tuple[bool, str]  # (is_emotion, tag_id): sorts issues first, then by id
    negatable: bool
    keyword: str  # as written in the config, which is what an operator greps for
    offset: int  # where this keyword starts inside the matched one (see _attach_inner)
    # Built once: most messages hit one tag with one keyword, and creating frozen
    # dataclasses per message costs more than the whole automaton pass.
    hit: TagHit
    alone: TagResult  # the result when this is the only hit of the message


def _target(tag_id: str, is_emotion: bool, negatable: bool, keyword: str) -> _Target:
    hit = TagHit(tag_id, (keyword,))
    alone = TagResult((), (hit,)) if is_emotion else TagResult((hit,), ())
    return _Target((is_emotion, tag_id), negatable, keyword, 0, hit, alone)


class _Gram(NamedTuple):
    """A model n-gram: its weight per scored category packed into one int (one
    fixed-point lane per category, see _Lanes), and the n-gram itself. A message's
    n-grams are then summed by one ``sum`` in C over plain ints, not weight by weight
    in Python, and named as evidence by their (hash-cached) strings."""

    packed: int
    gram: str


# Automaton payload. A model n-gram that is no keyword is its _Gram alone (the hot loop
# tests the class once and moves on). Keywords and stop phrases are a plain tuple, for
# fast unpacking: (length of the normalised keyword, word_start, word_end, targets,
# _Gram or None). A keyword that starts/ends with a latin letter or digit must not
# match inside a longer latin word or number ("app" in "apple", "315" in "3150"). Stop
# phrases have no targets (()). Unigrams are not in the automaton: the scorer sums them
# from a per-character table, so the automaton reports only the rarer longer n-grams.
_Entry = tuple[int, bool, bool, tuple["_Target", ...], _Gram | None]

# Characters put first among the automaton root's children (see _root_order). The
# most frequent characters of modern Chinese, in frequency order.
_FREQUENT_CHARS: Final = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家"
    "学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经"
    "头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者"
    "向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气"
    "信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活"
    "难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清"
    "物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功"
    "指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强"
    "步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版"
    "双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志"
    "飞观争究包组造落视济喜离虽坏兴送餐味道菜饭肉吃快慢差评买货质量价格服务态度"
)
_NEVER: Final = "\x01"  # normalisation turns control characters into separators


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


class _Negation:
    """Compiled negation rules; called only for keyword hits, never per character."""

    __slots__ = ("_boundary", "_cue", "_exempt", "_pad", "_window")

    def __init__(self, rules: NegationRules, normalizer: Normalizer) -> None:
        def alternation(words: list[str]) -> re.Pattern[str] | None:
            # Longest first, so 有没有 is matched before a shorter phrase inside it.
            norm = sorted({w for w in (normalizer(w) for w in words) if w}, key=len, reverse=True)
            return re.compile("|".join(map(re.escape, norm))) if norm else None

        self._window = rules.window_chars
        self._cue = alternation(rules.cues)
        self._exempt = alternation(rules.exempt)
        # Look a little further back than the window, so an exempt phrase that starts
        # before the window (有没有 with only 没有 inside) is still recognised.
        self._pad = max((len(e) for e in rules.exempt), default=1)
        # Punctuation and whitespace were normalised to SEPARATOR: always a boundary.
        boundary = alternation([*rules.boundaries])
        separator = re.escape(SEPARATOR)
        self._boundary = re.compile(
            f"{separator}|{boundary.pattern}" if boundary is not None else separator
        )

    def any_cue(self, text: str) -> bool:
        """Whether ``text`` has a negation cue anywhere (if not, nothing is negated)."""
        return self._cue is not None and self._window > 0 and self._cue.search(text) is not None

    def negated(self, text: str, start: int) -> bool:
        """Whether the keyword starting at ``start`` is negated by the text before it."""
        cue = self._cue
        lo = start - self._window
        if cue is None or start == 0 or self._window == 0:
            return False
        if lo < 0:
            lo = 0
        # Fast path, by far the common case: no cue at all right before the keyword.
        if cue.search(text, lo, start) is None:
            return False
        window = text[max(0, lo - self._pad) : start]
        cut = 0
        for m in self._boundary.finditer(window):
            cut = m.end()
        window = window[cut:]
        if self._exempt is not None:
            # Same-length filler keeps positions; NUL never comes out of
            # normalisation, so it never forms a cue.
            window = self._exempt.sub(lambda m: "\0" * len(m.group()), window)
        return cue.search(window[-self._window :]) is not None


def _root_order(keywords: list[str]) -> str:
    """Characters to insert first under the automaton's root, most frequent first.

    pyahocorasick keeps a node's children in a table searched linearly, so with ~2,500
    keywords every character of a message is compared against the ~670 first
    characters of all keywords, and characters that start no keyword cost a full scan.
    Giving the root a child for each frequent character, frequent ones first, makes the
    common case a short scan (measured: automaton pass 3.5 -> 2.9 µs per message).
    Matching is unchanged: those children lead only to ``_NEVER``.
    """
    counts: dict[str, int] = {}
    for kw in keywords:
        for ch in kw:
            counts[ch] = counts.get(ch, 0) + 1
    by_keyword_use = sorted(counts, key=lambda ch: -counts[ch])
    return "".join(dict.fromkeys(" " + _FREQUENT_CHARS + "".join(by_keyword_use)))


class Tagger:
    """Tags messages with taxonomy leaves and emotions.

    Build once per taxonomy (building normalises every keyword and compiles one
    automaton, ~25 ms for the default taxonomy) and share it: ``tag`` keeps no
    per-call state.

    Only maximal matches count: a keyword found inside a longer matched keyword is
    dropped, so 没收到退款 (refund not received) beats 没收到 (parcel not received),
    骑手态度差 beats 态度差, and a stop phrase such as 不好意思 hides the 不好 inside it.
    Keywords that merely overlap both count. Issue and emotion keywords do
    not hide each other: an emotion keyword inside an issue keyword (太差 in 服务太差)
    is attached to it at build time, and vice versa.

    Example:
        >>> tagger = Tagger(load_taxonomy(default_taxonomy_path()))
        >>> tagger.tag("外卖等了一个小时还没送到，气死了").tag_ids
        ('logistics.delay',)
    """

    __slots__ = (
        "_any_cue",
        "_automaton",
        "_keywords",
        "_negated",
        "_normalize",
        "_scorer",
        "model",
        "taxonomy",
    )

    def __init__(self, taxonomy: Taxonomy, model: TagModel | None = None) -> None:
        """Compile ``taxonomy`` (and ``model``'s n-grams) into one automaton.

        Args:
            taxonomy: A validated taxonomy (see :func:`skills.taxonomy.load_taxonomy`).
            model: An optional learned model over the taxonomy's issue categories.
        """
        self.taxonomy = taxonomy
        self.model = model
        self._scorer = _Scorer(taxonomy, model) if model is not None else None
        self._normalize = default_normalizer()
        negation = _Negation(taxonomy.negation, self._normalize)
        self._negated = negation.negated
        self._any_cue = negation.any_cue
        targets: dict[str, list[_Target]] = {}
        for cat_id, cat in taxonomy.categories.items():
            for leaf_id, leaf in cat.children.items():
                for kw in leaf.keywords:
                    target = _target(f"{cat_id}.{leaf_id}", False, leaf.negatable, kw)
                    targets.setdefault(self._normalize(kw), []).append(target)
        for emo_id, emotion in taxonomy.emotions.items():
            for kw in emotion.keywords:
                target = _target(emo_id, True, True, kw)
                targets.setdefault(self._normalize(kw), []).append(target)
        self._keywords = sorted(targets)
        _attach_inner(targets)
        # Unigrams are scored from the scorer's per-character table, not the automaton.
        weights = self._scorer.packed if self._scorer is not None else {}
        automaton = ahocorasick.Automaton()
        for ch in _root_order(self._keywords):
            automaton.add_word(ch + _NEVER, (2, False, False, (), None))
        entries: dict[str, _Entry | _Gram] = {}
        for phrase in taxonomy.stop_phrases:
            norm = self._normalize(phrase)
            if norm not in targets:  # a stop phrase that is also a keyword stays a keyword
                entries[norm] = (len(norm), False, False, (), weights.get(norm))
        for norm, found in targets.items():
            word_start, word_end = _is_word_char(norm[0]), _is_word_char(norm[-1])
            entries[norm] = (len(norm), word_start, word_end, tuple(found), weights.get(norm))
        for gram, weighted in weights.items():
            if gram not in entries:
                entries[gram] = weighted
        for norm, entry in entries.items():
            automaton.add_word(norm, entry)
        automaton.make_automaton()
        self._automaton = automaton

    @property
    def keyword_count(self) -> int:
        """Distinct normalised keywords (issues and emotions)."""
        return len(self._keywords)

    def keywords(self) -> list[str]:
        """Every distinct normalised keyword, sorted (for baselines and diagnostics)."""
        return list(self._keywords)

    def tag(self, text: str) -> TagResult:
        """Tag one message.

        Args:
            text: The customer's text, in any script, width or case.

        Returns:
            The tags and emotions found; equal to ``TagResult((), ())`` when nothing
            matched.
        """
        norm = self._normalize(text)
        if not norm:
            return EMPTY
        # Maximal matches only: a match inside a longer one is dropped. ``iter`` yields
        # matches by end position, so a new match can only contain earlier ones that
        # start at or after it, which are at the top of the stack.
        spans: list[tuple[int, int, tuple[_Target, ...]]] = []
        grams: list[_Gram] = []
        last = len(norm) - 1
        negated = self._negated
        for end, entry in self._automaton.iter(norm):
            if entry.__class__ is _Gram:
                grams.append(entry)  # an n-gram of the model only
                continue
            length, word_start, word_end, targets, weighted = entry
            if weighted is not None:
                grams.append(weighted)
            start = end - length + 1
            if (word_start and start > 0 and _is_word_char(norm[start - 1])) or (
                word_end and end < last and _is_word_char(norm[end + 1])
            ):
                continue
            while spans and spans[-1][0] >= start:
                spans.pop()
            if spans and spans[-1][1] == end:
                continue  # inside the longer match already on the stack
            spans.append((start, end, targets))
        scorer = self._scorer
        if not spans:
            return EMPTY if scorer is None else scorer.decide(None, norm, grams)
        # One scan of the message saves a window check per keyword when it has no cue.
        negatable = self._any_cue(norm)
        hits: dict[tuple[bool, str], list[_Target]] | None = None
        for start, _, targets in spans:  # stop phrases have no targets
            for target in targets:
                if negatable and target.negatable and negated(norm, start + target.offset):
                    continue
                if hits is None:
                    hits = {target.key: [target]}
                    continue
                found = hits.get(target.key)
                if found is None:
                    hits[target.key] = [target]
                elif all(t.keyword != target.keyword for t in found):
                    found.append(target)
        if scorer is not None:
            return scorer.decide(hits, norm, grams)
        if hits is None:
            return EMPTY
        if len(hits) == 1:
            (found,) = hits.values()
            if len(found) == 1:
                return found[0].alone
        tags: list[TagHit] = []
        emotions: list[TagHit] = []
        for key in sorted(hits):
            found = hits[key]
            hit = found[0].hit if len(found) == 1 else _merge(found)
            (emotions if key[0] else tags).append(hit)
        return TagResult(tags=tuple(tags), emotions=tuple(emotions))


def _merge(found: list[_Target]) -> TagHit:
    return TagHit(found[0].key[1], tuple(t.keyword for t in found))


_EVIDENCE: Final = 4  # n-grams named per tag
_PACKED: Final = itemgetter(0)
_GRAM: Final = itemgetter(1)
_Named = tuple[str, float]  # an n-gram and its weight, rounded, as a tag names it


class _Lanes:
    """Fixed-point weight vectors packed into one Python int, so sums run in C.

    Weight ``w`` of category ``i`` is stored as ``round(w * 10**6)`` in bits
    ``[64 i, 64 i + 64)``; negative lane values borrow from the lane above, and adding
    ``_OFFSET`` to every lane at decoding undoes that exactly, as long as each lane's
    sum stays below 2**62 in magnitude (model files keep 6 decimals, so the packed sums
    are the exact sums of the file's weights). After that addition a lane's bit 62 is
    set exactly when its sum is >= 0, so one ``&`` tells which categories cleared
    their thresholds (packed negated) without decoding any lane.
    """

    SCALE: Final = 1_000_000
    BITS: Final = 64
    _OFFSET: Final = 1 << 62
    _MASK: Final = (1 << 64) - 1

    def __init__(self, count: int) -> None:
        self._shifts = tuple(i * self.BITS for i in range(count))
        #: ``_OFFSET`` in every lane; as a mask, bit 62 of every lane (see ``fired``)
        self.offsets = sum(self._OFFSET << s for s in self._shifts)

    def pack(self, weights: Sequence[float]) -> int:
        """One n-gram's weights (one per category, in order)."""
        return self.pack_ints([round(w * self.SCALE) for w in weights])

    def pack_ints(self, values: Sequence[int]) -> int:
        """Fixed-point lane values, already scaled."""
        packed = 0
        for shift, v in zip(self._shifts, values, strict=True):
            packed += v << shift
        return packed

    def lane(self, offset_total: int, index: int) -> int:
        """Lane ``index`` of a sum that already has ``offsets`` added, scaled."""
        return ((offset_total >> self._shifts[index]) & self._MASK) - self._OFFSET

    def fired(self, offset_total: int) -> list[int]:
        """Indexes of the lanes whose sum is >= 0 (``offsets`` already added)."""
        bits = offset_total & self.offsets  # bit 62 of a lane: its sum is >= 0
        found = []
        while bits:
            low = bits & -bits
            found.append((low.bit_length() - 1) // self.BITS)
            bits ^= low
        return found


class _Scorer:
    """The compiled model: per-category bias, cut-off and keyword weights, by index.

    Everything that moves a score is packed (see _Lanes): the bias less the cut-off
    (so a category fires when its lane is >= 0), each n-gram's weights, and the
    weights of "keywords of category K fired" per K, which also carry the model's
    keyword margin in K's own lane (a keyword tag is dropped only when the score is
    below the cut-off by more than the margin). A message's decision is then a
    ``sum`` over its hits and one ``&``; only the categories that fire are decoded,
    and their reported probability leaves the margin out.
    """

    __slots__ = ("_base", "_cats", "_cut", "_final", "_kw", "_lanes", "_leaf", "_margin",
                 "_positive", "_unigram", "packed")

    def __init__(self, taxonomy: Taxonomy, model: TagModel) -> None:
        issue = taxonomy.issue_categories()
        model.check_against(issue, "tag model")
        self._cats = tuple(model.categories)
        self._final = {c: i for i, c in enumerate(self._cats) if c in model.keyword_final}
        self._leaf = [f"{c}.{taxonomy.categories[c].model_leaf_or_first()}" for c in self._cats]
        self._lanes = lanes = _Lanes(len(self._cats))
        scale = lanes.SCALE
        # score >= cut  <=>  score * SCALE >= ceil(cut * SCALE), the score being a sum of
        # 6-decimal numbers and so an exact integer once scaled
        self._cut = [math.ceil(model.categories[c].threshold_logit * scale) for c in self._cats]
        bias = [round(model.categories[c].bias * scale) for c in self._cats]
        self._base = lanes.pack_ints([b - c for b, c in zip(bias, self._cut, strict=True)])
        #: each category's keyword margin, scaled: its own keywords lower its bar by it
        self._margin = [round(model.categories[c].keyword_margin * scale) for c in self._cats]
        kw: dict[str, list[int]] = {}
        for i, c in enumerate(self._cats):
            for k, w in model.categories[c].keyword_weights.items():
                kw.setdefault(k, [0] * len(self._cats))[i] = round(w * scale)
            kw.setdefault(c, [0] * len(self._cats))[i] += self._margin[i]
        #: keyword category -> the packed weights of "its keywords fired", plus its
        #: margin in its own lane (taken out again where a score is reported)
        self._kw = {k: lanes.pack_ints(v) for k, v in kw.items()}
        #: n-grams of two or more characters -> packed weights (they go into the automaton)
        self.packed: dict[str, _Gram] = {}
        #: single characters -> packed weights (summed per character of the message)
        self._unigram: dict[str, _Gram] = {}
        #: per category: n-gram -> (weight, n-gram, as named in a tag's
        #: evidence), positive weights only
        self._positive: list[dict[str, tuple[float, str, _Named]]] = [{} for _ in self._cats]
        for gram, ws in sorted(model.ngrams.items()):
            dense = [ws.get(c, 0.0) for c in self._cats]
            weighted = _Gram(lanes.pack(dense), gram)
            (self._unigram if len(gram) == 1 else self.packed)[gram] = weighted
            for i, w in enumerate(dense):
                if w > 0:
                    named = (gram, round(w, 3))
                    self._positive[i][gram] = (w, gram, named)

    def decide(
        self,
        hits: dict[tuple[bool, str], list[_Target]] | None,
        norm: str,
        grams: list[_Gram],
    ) -> TagResult:
        """Keyword hits plus n-gram weights -> the tags the model keeps, drops or adds."""
        lanes = self._lanes
        grams.extend(filter(None, map(self._unigram.get, norm)))
        total = sum(map(_PACKED, grams), self._base + lanes.offsets)
        keyword_cats: set[str] = set()
        if hits is not None:
            for is_emotion, tag_id in hits:
                if not is_emotion:
                    keyword_cats.add(tag_id.partition(".")[0])
            kw = self._kw
            for cat in keyword_cats:
                total += kw.get(cat, 0)
        fired = {self._cats[i]: i for i in lanes.fired(total)}
        for cat in keyword_cats:
            i = self._final.get(cat)
            if i is not None:
                fired[cat] = i  # keyword evidence of this category is never out-voted
        if not fired and hits is None:
            return EMPTY
        probs = {
            i: _prob((lanes.lane(total, i) + self._cut[i]
                      - (self._margin[i] if cat in keyword_cats else 0)) / lanes.SCALE)
            for cat, i in fired.items()
        }
        evidence: dict[int, tuple[tuple[str, float], ...]] = {}
        tags: list[TagHit] = []
        emotions: list[TagHit] = []
        covered: set[str] = set()
        if hits is not None:
            for key in sorted(hits):
                found = hits[key]
                hit = found[0].hit if len(found) == 1 else _merge(found)
                if key[0]:
                    emotions.append(hit)
                    continue
                cat = key[1].partition(".")[0]
                i = fired.get(cat, -1)
                if i < 0:
                    if cat in self._cats:
                        continue  # the model out-voted this keyword
                    tags.append(hit)  # a topic category the model does not score
                    continue
                covered.add(cat)
                if i not in evidence:
                    evidence[i] = self._evidence(i, grams)
                tags.append(TagHit(hit.id, hit.keywords, probs[i], evidence[i]))
        for cat, i in fired.items():
            if cat not in covered:
                tags.append(TagHit(self._leaf[i], (), probs[i], self._evidence(i, grams)))
        if not tags and not emotions:
            return EMPTY
        tags.sort(key=lambda t: t.id)
        return TagResult(tags=tuple(tags), emotions=tuple(emotions))

    def _evidence(self, index: int, grams: list[_Gram]) -> tuple[_Named, ...]:
        """The strongest positive n-grams of one category in this message, each once."""
        found = set(filter(None, map(self._positive[index].get, map(_GRAM, grams))))
        return tuple(x[2] for x in sorted(found, reverse=True)[:_EVIDENCE])


def _prob(score: float) -> float:
    return round(1.0 / (1.0 + math.exp(-score)), 3)


def _attach_inner(targets: dict[str, list[_Target]]) -> None:
    """Give every keyword the targets of the other kind's keywords found inside it.

    Only maximal matches are reported; without this, 服务太差
    (service.attitude) would hide the emotion 太差 (angry). Same-kind keywords inside
    a longer one stay hidden on purpose: the longer phrase is the more specific.
    """
    finder = ahocorasick.Automaton()
    for norm in targets:
        finder.add_word(norm, norm)
    finder.make_automaton()
    inner: dict[str, list[_Target]] = {}
    for outer, found in targets.items():
        kinds = {t.key[0] for t in found}
        seen = {outer}
        for end, other in finder.iter(outer):
            if other in seen:
                continue
            seen.add(other)
            offset = end - len(other) + 1
            for t in targets[other]:
                if t.key[0] not in kinds and t.offset == 0:
                    inner.setdefault(outer, []).append(t._replace(offset=offset))
    for outer, extra in inner.items():
        targets[outer].extend(extra)
