"""Errors of the message contracts and the runtime. Every error derives from OmniError."""

from __future__ import annotations

from ..skills.exceptions import ConfigError, OmniError

__all__ = [
    "BadRequest",
    "BrokerUnavailable",
    "ClientDisconnected",
    "ConfigError",
    "InfrastructureError",
    "InvalidEnvelope",
    "InvalidRecord",
    "NoRuleMatched",
    "NotStarted",
    "OmniError",
    "PayloadTooLarge",
    "RequestRejected",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMediaType",
]


class InvalidRecord(OmniError, ValueError):
    """A topic record does not match its model (router.models, router.events); the
    message names the record and the field."""


class InvalidEnvelope(InvalidRecord):
    """A record or request body is not a valid envelope; the message names the field."""


class BrokerUnavailable(OmniError, ConnectionError):
    """The Kafka broker did not acknowledge in time; the caller should retry later."""


class InfrastructureError(OmniError, RuntimeError):
    """An embedded broker or Redis server could not be started."""


class NotStarted(OmniError, RuntimeError):
    """A component was used before its ``start()`` (a programming error)."""


class NoRuleMatched(OmniError, LookupError):
    """No routing rule matched a message: the configuration has no catch-all rule
    (``load_config`` refuses such a file; a hand-built configuration can lack it)."""


class RequestRejected(OmniError):
    """Refused HTTP input. ``status`` is the HTTP status, ``reason`` the metric label."""

    status = 400
    reason = "invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class BadRequest(RequestRejected, ValueError):
    """Malformed or invalid body (400)."""


class Unauthorized(RequestRejected, PermissionError):
    """Missing or wrong credentials or signature (401)."""

    status = 401
    reason = "unauthorized"


class PayloadTooLarge(RequestRejected, ValueError):
    """Body or batch over its limit (413)."""

    status = 413
    reason = "too_large"


class RequestTimeout(RequestRejected):
    """The body did not arrive in full within the deadline (408)."""

    status = 408
    reason = "body_timeout"


class UnsupportedMediaType(RequestRejected, ValueError):
    """The Content-Type is not one the route reads (415)."""

    status = 415
    reason = "unsupported_media_type"


class ClientDisconnected(RequestRejected, ConnectionError):
    """The client went away before its body arrived in full; nobody reads the answer."""

    status = 400
    reason = "client_disconnected"
