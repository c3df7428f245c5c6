"""Text normalisation shared by the keyword tagger and its keywords.

Customers type traditional characters, full-width Latin letters (ＶＩＰ), mixed case
and decorative punctuation; keywords are written once, in simplified Chinese and
lower case. Both sides go through :func:`normalize`, so one keyword matches every
spelling.

The t2s step is the expensive one (the pure-Python OpenCC port costs ~25 µs per
short message), while most messages are already simplified. :class:`Normalizer`
therefore precomputes the set of characters that *can* change under t2s and only
calls OpenCC when the text contains one of them. The check is a regex character class
of the ~3,800 BMP characters (~0.16 µs per message: ``re`` compiles a BMP-only class
into a constant-time lookup table; one astral character in the class makes it a
linear scan, ~10 µs) plus a set check for the ~350 astral ones, run only when the text
has an astral character at all. NFKC is likewise skipped when
``unicodedata.is_normalized`` says it would change nothing, which is the common case
once full-width punctuation has been collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from opencc import OpenCC

__all__ = ["SEPARATOR", "Normalizer", "default_normalizer", "normalize"]

SEPARATOR = " "  # what every run of whitespace/punctuation collapses to; a clause boundary

# \w is Unicode-aware: CJK ideographs, letters and digits are kept, everything else
# (punctuation, symbols, emoji, whitespace, "_") is a separator.
_SEPARATORS = re.compile(r"[\W_]+")


def _trigger_chars(converter: OpenCC) -> set[str]:
    """Characters whose presence means t2s may change the text.

    Sound by construction: every dictionary entry whose conversion differs contributes
    at least one of its characters, so text without any of them converts to itself.
    Single-character entries contribute themselves; a phrase entry only adds its
    changed positions when none of its characters is already a trigger (otherwise
    common simplified characters such as 么 would make every message take the slow
    path).
    """
    tables: list[dict[str, str]] = []

    def collect(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item)
        else:
            tables.append(node[2])

    converter.convert("")  # forces the lazy dictionary load
    # The port exposes no public accessor for its loaded dictionaries.
    collect(converter._dict_chain_data)
    triggers: set[str] = set()
    phrases: list[tuple[str, str]] = []
    for table in tables:
        for key, value in table.items():
            first = value.split(" ")[0]
            if first == key:
                continue
            if len(key) == 1:
                triggers.add(key)
            else:
                phrases.append((key, first))
    for key, first in phrases:
        if triggers.intersection(key):
            continue
        if len(key) != len(first):
            triggers.update(key)
        else:
            triggers.update(a for a, b in zip(key, first, strict=True) if a != b)
    return triggers


class Normalizer:
    """t2s + NFKC + lower case + separator collapsing, with a fast path for simplified text.

    Building one loads the OpenCC dictionaries (~10 ms); share it via
    :func:`default_normalizer`.
    """

    __slots__ = ("_astral", "_astral_triggers", "_bmp_triggers", "_converter")

    def __init__(self) -> None:
        self._converter = OpenCC("t2s")
        triggers = _trigger_chars(self._converter)
        bmp = sorted(ch for ch in triggers if ord(ch) < 0x10000)
        self._bmp_triggers = re.compile(f"[{re.escape(''.join(bmp))}]")
        self._astral_triggers = frozenset(ch for ch in triggers if ord(ch) >= 0x10000)
        self._astral = re.compile("[\U00010000-\U0010ffff]")

    def __call__(self, text: str) -> str:
        """Normalise ``text`` (see :func:`normalize`)."""
        # Collapsing first removes full-width punctuation, after which most Chinese
        # messages are already NFKC-normal and the costly normalize() call is skipped.
        text = _SEPARATORS.sub(SEPARATOR, text.lower())
        if not text.isascii():
            if not unicodedata.is_normalized("NFKC", text):
                # NFKC can produce new punctuation or capitals (①, Ｖ), so collapse again.
                text = _SEPARATORS.sub(SEPARATOR, unicodedata.normalize("NFKC", text).lower())
            if self.needs_t2s(text):
                text = self._converter.convert(text)
        return text.strip(SEPARATOR)

    def needs_t2s(self, text: str) -> bool:
        """Whether ``text`` has a character that traditional->simplified may change."""
        if self._bmp_triggers.search(text) is not None:
            return True
        return self._astral.search(text) is not None and not self._astral_triggers.isdisjoint(text)

    def convert_t2s(self, text: str) -> str:
        """The plain OpenCC t2s conversion (no fast path); for tests and benchmarks."""
        result: str = self._converter.convert(text)
        return result


@lru_cache(maxsize=1)
def default_normalizer() -> Normalizer:
    """The process-wide normaliser, built on first use (not at import)."""
    return Normalizer()


def normalize(text: str) -> str:
    """Canonical form used for keyword matching.

    Traditional -> simplified Chinese (OpenCC t2s), NFKC (full-width -> half-width),
    lower case, and every run of whitespace / punctuation / symbols collapsed to one
    space (:data:`SEPARATOR`), stripped at both ends.

    Args:
        text: Any customer text.

    Returns:
        The normalised text; ``""`` when nothing but separators remains.

    Example:
        >>> normalize("訂單　ＶＩＰ！！退貨")
        '订单 vip 退货'
    """
    return default_normalizer()(text)
