"""WeCom encryption: WeChat's safe mode with the corp id as the receive id (re-exported)."""

from ..wechat.crypto import BLOCK_BYTES, MessageCipher

__all__ = ["BLOCK_BYTES", "MessageCipher"]
