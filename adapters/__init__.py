"""Channel edge: verify, parse, normalise, mask PII, dedupe, produce to Kafka."""

from adapters.context import AdapterContext, Clock, SystemClock
from adapters.exceptions import AdapterError, BadRequest, PayloadTooLarge, Unauthorized
from adapters.http import build_http_app, default_installers
from adapters.producer import EnvelopeProducer, EnvelopeSink

__all__ = [
    "AdapterContext",
    "AdapterError",
    "BadRequest",
    "Clock",
    "EnvelopeProducer",
    "EnvelopeSink",
    "PayloadTooLarge",
    "SystemClock",
    "Unauthorized",
    "build_http_app",
    "default_installers",
]
