"""Text of a mail body: HTML to text, quoted replies and signatures stripped.

Pure functions; ``adapters.email.parse`` applies them to every decoded body.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Final

__all__ = ["html_to_text", "normalise_subject", "strip_quoted"]


# --- HTML ---------------------------------------------------------------------------

_BLOCK_TAGS: Final = frozenset({
    "p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
    "section", "article", "header", "footer", "hr", "pre", "dt", "dd",
})
_SKIP_TAGS: Final = frozenset({"script", "style", "head", "title", "template", "noscript"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._quote = 0  # inside <blockquote>: the quoted earlier message
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "blockquote":
            self._quote += 1
        elif tag == "pre":
            self._pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        elif tag == "blockquote" and self._quote:
            self._quote -= 1
        elif tag == "pre" and self._pre:
            self._pre -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip or self._quote:
            return
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Readable text of an HTML body (stdlib parser; quoted ``<blockquote>`` dropped)."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):
        pass  # keep what was extracted before the broken markup
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- quoted replies and signatures ---------------------------------------------------

_ON_WROTE: Final = re.compile(r"^On\b.{0,300}\bwrote:\s*$", re.IGNORECASE)
_ZH_WROTE: Final = re.compile(r"^在.{0,300}写道\s*[:：]\s*$")
_ORIGINAL: Final = re.compile(
    r"^-{2,}\s*(原始邮件|原邮件|Original Message|Original)\s*-{2,}\s*$", re.IGNORECASE
)
_HEADER_START: Final = re.compile(r"^(发件人|From)\s*[:：]", re.IGNORECASE)
_HEADER_NEXT: Final = re.compile(
    r"^(发送时间|时间|日期|收件人|抄送|主题|Sent|Date|To|Cc|Subject)\s*[:：]", re.IGNORECASE
)
_MOBILE_SIG: Final = re.compile(
    r"^(发自我的|来自我的|Sent from my |Get Outlook for )", re.IGNORECASE
)


def _is_header_block(lines: list[str], i: int) -> bool:
    following = [ln.strip() for ln in lines[i + 1 : i + 5] if ln.strip()]
    return any(_HEADER_NEXT.match(ln) for ln in following[:3])


def strip_quoted(text: str) -> str:
    """Drop quoted earlier messages and the signature; keep what the customer wrote now.

    Cuts at the first quote introduction (``On ... wrote:``, ``在 ... 写道：``,
    ``-----原始邮件-----``, an Outlook ``发件人:``/``From:`` header block), the
    signature delimiter ``-- `` or a mobile "sent from" line; drops ``>`` lines.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        s = line.strip()
        if line.rstrip("\n") in ("-- ", "--"):
            break
        if _ON_WROTE.match(s) or _ZH_WROTE.match(s) or _ORIGINAL.match(s):
            break
        if s.lower().startswith("on ") and i + 1 < len(lines):
            joined = f"{s} {lines[i + 1].strip()}"
            if _ON_WROTE.match(joined):  # Gmail wraps the attribution line
                break
        if _HEADER_START.match(s) and _is_header_block(lines, i):
            break
        if _MOBILE_SIG.match(s):
            break
        if s.startswith(">"):
            continue
        kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


_SUBJECT_PREFIX: Final = re.compile(
    r"^\s*((re|fw|fwd|aw|sv|回复|答复|转发)\s*(\[\d+\])?\s*[:：]\s*)+", re.IGNORECASE
)


def normalise_subject(subject: str) -> str:
    """The subject without ``Re:``/``回复：``/``Fwd:`` prefixes."""
    return _SUBJECT_PREFIX.sub("", subject).strip()
