"""omniroute runtime: envelope and decision models, the router worker, the CLI, metrics.

Importing this package has no side effects: apps, pools and producers are built by
factories called from the CLI.
"""

from router.exceptions import (
    BrokerUnavailable,
    ConfigError,
    InfrastructureError,
    InvalidEnvelope,
    RouterError,
)
from router.models import (
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
from router.settings import Settings

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
    "Order",
    "Priority",
    "RouterError",
    "Settings",
    "TagHit",
    "message_id",
]
