"""Phone channel: Twilio-compatible voice webhooks and Tencent Cloud Contact Center push."""

from .adapter import PhoneAdapter, install, make_installer
from .config import PhoneConfig, load_phone_config
from .verify import twilio_signature

__all__ = [
    "PhoneAdapter",
    "PhoneConfig",
    "install",
    "load_phone_config",
    "make_installer",
    "twilio_signature",
]
