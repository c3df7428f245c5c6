"""Errors of the channel edge; each carries the HTTP status and metric reason to answer with."""

from __future__ import annotations

from router.exceptions import RouterError

__all__ = ["AdapterError", "BadRequest", "PayloadTooLarge", "Unauthorized"]


class AdapterError(RouterError):
    """Refused input. ``status`` is the HTTP status, ``reason`` the metric label."""

    status = 400
    reason = "invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class BadRequest(AdapterError, ValueError):
    """Malformed or invalid body (400)."""


class Unauthorized(AdapterError, PermissionError):
    """Missing or wrong credentials or signature (401)."""

    status = 401
    reason = "unauthorized"


class PayloadTooLarge(AdapterError, ValueError):
    """Body or batch over its limit (413)."""

    status = 413
    reason = "too_large"
