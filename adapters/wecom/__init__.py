"""WeCom (企业微信) app callback: ``GET/POST /wecom/{account}`` (always encrypted)."""

from .adapter import install, make_installer
from .config import WeComConfig, load_wecom_config

__all__ = ["WeComConfig", "install", "load_wecom_config", "make_installer"]
