"""WeCom (企业微信) app callback: ``GET/POST /wecom/{account}`` (always encrypted).

Verification, decryption and parsing are WeChat's (``adapters.wechat``); only the
section model differs.
"""

from .adapter import install
from .config import WeComAccountConfig, WeComConfig

__all__ = ["WeComAccountConfig", "WeComConfig", "install"]
