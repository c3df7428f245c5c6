"""Douyin live-room data push: ``POST /douyin/live`` (comments, gifts, likes, fans club)."""

from .adapter import LivePushHandler, install, make_installer
from .chatter import ChatterRules
from .config import ChatterConfig, DouyinConfig
from .verify import sign, verify_push

__all__ = [
    "ChatterConfig",
    "ChatterRules",
    "DouyinConfig",
    "LivePushHandler",
    "install",
    "make_installer",
    "sign",
    "verify_push",
]
