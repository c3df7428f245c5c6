"""Phone channel: Twilio-compatible voice webhooks and Tencent Cloud Contact Center push."""

from adapters.phone.adapter import PhoneAdapter, install, make_installer
from adapters.phone.config import PhoneConfig, PhoneSettings, load_phone_config
from adapters.phone.verify import twilio_signature

__all__ = [
    "PhoneAdapter",
    "PhoneConfig",
    "PhoneSettings",
    "install",
    "load_phone_config",
    "make_installer",
    "twilio_signature",
]
