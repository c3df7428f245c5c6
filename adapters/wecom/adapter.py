"""``GET/POST /wecom/{account}``: WeChat's callback handler, always encrypted; GET answers
the decrypted ``echostr``."""

from __future__ import annotations

from ..channel_config import channel_installer
from ..wechat.adapter import make_installer
from .config import WeComConfig

__all__ = ["install"]

#: ``GET/POST /wecom/{account}`` with the apps of ``channels.yaml``.
install = channel_installer(WeComConfig, make_installer)
