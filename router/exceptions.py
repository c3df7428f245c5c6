"""Errors of the router runtime. Every error of omniroute derives from RouterError."""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "InfrastructureError",
    "InvalidEnvelope",
    "RouterError",
]


class RouterError(Exception):
    """Root of every omniroute error."""


class ConfigError(RouterError, ValueError):
    """A configuration file or setting is invalid; the message names where and how to fix it."""


class InvalidEnvelope(RouterError, ValueError):
    """A record or request body is not a valid envelope; the message names the field."""


class BrokerUnavailable(RouterError, ConnectionError):
    """The Kafka broker did not acknowledge in time; the caller should retry later."""


class InfrastructureError(RouterError, RuntimeError):
    """An embedded broker or Redis server could not be started."""
