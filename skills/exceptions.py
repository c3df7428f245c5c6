"""Errors of the skills package."""

from __future__ import annotations

from router.exceptions import ConfigError

__all__ = ["ConfigError"]
