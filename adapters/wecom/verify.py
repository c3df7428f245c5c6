"""WeCom signatures: ``msg_signature`` = sha1(sorted(token, timestamp, nonce, payload)).

The scheme, the constant-time comparison and the timestamp window are
WeChat's; this module re-exports them so that every channel has the same
role-named modules.
"""

from ..wechat.verify import check_timestamp, sha1_signature, verify_signature

__all__ = ["check_timestamp", "sha1_signature", "verify_signature"]
