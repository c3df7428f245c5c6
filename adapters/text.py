"""Text helpers every channel's parser shares."""

from __future__ import annotations

from ..router.models import MAX_TEXT_CHARS

__all__ = ["clip"]

ELLIPSIS = "…"


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut.

    The router refuses envelopes whose text is longer than ``MAX_TEXT_CHARS``; a
    channel's parser clips instead, so a long mail or transcript is still routed.
    """
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS
