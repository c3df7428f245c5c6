"""Small helpers for Redis replies, shared by the SLA modules."""

from __future__ import annotations

__all__ = ["as_text"]


def as_text(value: object) -> str:
    """A Redis reply (bytes, or str on a decoding client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
