"""Text helpers every channel's parser shares (clipping lives in ``router.text``)."""

from __future__ import annotations

from ..router.text import ELLIPSIS, clip

__all__ = ["ELLIPSIS", "clip"]
