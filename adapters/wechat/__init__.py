"""WeChat Official Account callback: ``GET/POST /wechat/{account}`` (plain and safe mode)."""

from .adapter import CallbackHandler, install, make_installer
from .config import CallbackSection, WeChatAccount, WeChatConfig
from .crypto import MessageCipher
from .parse import parse_xml, to_envelope
from .verify import check_timestamp, sha1_signature, verify_signature

__all__ = [
    "CallbackHandler",
    "CallbackSection",
    "MessageCipher",
    "WeChatAccount",
    "WeChatConfig",
    "check_timestamp",
    "install",
    "make_installer",
    "parse_xml",
    "sha1_signature",
    "to_envelope",
    "verify_signature",
]
