"""``GET/POST /wecom/{account}``: always encrypted; GET answers the decrypted ``echostr``."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ...router.http import HttpContext, Installer
from ...router.models import Channel
from ..wechat.adapter import CallbackHandler, CallbackLimits, channels_path
from ..wechat.config import WeChatAccount, read_channels_yaml
from .config import PATH, WeComConfig, load_wecom_config

__all__ = ["install", "make_installer"]


def make_installer(
    accounts: Mapping[str, WeChatAccount], config: WeComConfig | None = None
) -> Installer:
    """An installer for the given WeCom apps (tests and embedding applications)."""
    cfg = config or WeComConfig.model_validate({})

    def install_accounts(app: web.Application, ctx: HttpContext) -> None:
        limits = CallbackLimits(cfg.timestamp_window_s, cfg.max_body_bytes,
                                cfg.produce_timeout_s, cfg.dedupe_ttl_s)
        handler = CallbackHandler(ctx, Channel.WECOM, accounts, limits, always_encrypted=True)
        app.router.add_get(PATH, handler.get)
        app.router.add_post(PATH, handler.post)

    return install_accounts


def install(app: web.Application, ctx: HttpContext) -> None:
    """Add ``GET/POST /wecom/{account}`` with the apps of ``channels.yaml``."""
    path = channels_path(ctx)
    cfg, accounts = load_wecom_config(read_channels_yaml(path), ctx.settings.environ, str(path))
    make_installer(accounts, cfg)(app, ctx)
