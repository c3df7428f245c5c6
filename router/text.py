"""Text clipping, written once: envelope texts, dead-letter reasons and the bad values
shown in error messages are all cut the same way, ending in an ellipsis when cut.

The package sits under ``router`` so the contracts can use it; the channel parsers
reach it through ``adapters.text``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ELLIPSIS", "MAX_TEXT_CHARS", "SHOWN_CHARS", "clip"]

ELLIPSIS: Final = "…"
MAX_TEXT_CHARS: Final = 20_000  # longer texts are truncated by adapters, refused by the router
SHOWN_CHARS: Final = 80  # a bad value is shown in an error cut to this many characters


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut.

    The router refuses envelopes whose text is longer than ``MAX_TEXT_CHARS``; a
    channel's parser clips instead, so a long mail or transcript is still routed.
    """
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS
