"""The project's error root and the errors of decision logic.

The root lives here, in the bottom layer, because every package must be able to
derive from it and ``skills`` imports no other package; ``router.exceptions``
re-exports it as part of the message contracts.
"""

from __future__ import annotations

__all__ = ["ConfigError", "OmniError"]


class OmniError(Exception):
    """Root of every error omniroute raises."""


class ConfigError(OmniError, ValueError):
    """A configuration file or setting is invalid; the message names where and how to fix it."""
