"""Message contracts (envelope, decision, topic records, settings, errors, config files)
and the routing worker. ``skills`` is the only package below it.

Importing this package has no side effects: apps, pools and producers are built by
factories called from the CLI.
"""

# the edge reads its own YAML files and bodies with the same errors as the routing config
from ..skills.yamlconfig import format_validation_error, load_model
from .exceptions import (
    BrokerUnavailable,
    ConfigError,
    InfrastructureError,
    InvalidEnvelope,
    OmniError,
)
from .models import (
    Attachment,
    Band,
    Channel,
    Customer,
    Decision,
    Entry,
    EntryKind,
    Envelope,
    Order,
    Priority,
    TagHit,
    message_id,
)
from .settings import Settings

__all__ = [
    "Attachment",
    "Band",
    "BrokerUnavailable",
    "Channel",
    "ConfigError",
    "Customer",
    "Decision",
    "Entry",
    "EntryKind",
    "Envelope",
    "InfrastructureError",
    "InvalidEnvelope",
    "OmniError",
    "Order",
    "Priority",
    "Settings",
    "TagHit",
    "format_validation_error",
    "load_model",
    "message_id",
]
