"""WeChat Official Account callback: ``GET/POST /wechat/{account}`` (plain and safe mode)."""

from adapters.wechat.adapter import CallbackHandler, install, make_installer
from adapters.wechat.config import WeChatAccount, WeChatConfig, load_wechat_config
from adapters.wechat.crypto import MessageCipher
from adapters.wechat.parse import parse_xml, to_envelope
from adapters.wechat.verify import check_timestamp, sha1_signature, verify_signature

__all__ = [
    "CallbackHandler",
    "MessageCipher",
    "WeChatAccount",
    "WeChatConfig",
    "check_timestamp",
    "install",
    "load_wechat_config",
    "make_installer",
    "parse_xml",
    "sha1_signature",
    "to_envelope",
    "verify_signature",
]
