"""Errors of the SLA package."""

from __future__ import annotations

from ..router.exceptions import ConfigError, OmniError

__all__ = ["ConfigError", "SlaError", "StateConflict"]


class SlaError(OmniError):
    """Root of the SLA package's own errors."""


class StateConflict(SlaError, RuntimeError):
    """A conversation's SLA state kept changing under us; the write was retried and gave up."""
