"""WeCom (企业微信) app callbacks: accounts from ``config/channels.yaml``, secrets from env.

Same rules as ``adapters.wechat.config``: ``token_env`` / ``encoding_aes_key_env``
name environment variables; an account without both is disabled with a
warning. WeCom callbacks are always encrypted; the receive id checked after
decryption is the corp id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ...router.exceptions import ConfigError
from ..dedupe import DEFAULT_DEDUPE_TTL_S
from ..wechat.config import (
    CHANNELS_FILE,
    WeChatAccount,
    describe_validation_error,
    resolve_secret,
    validate_aes_key,
)

__all__ = ["PATH", "WeComAccountConfig", "WeComConfig", "load_wecom_config"]

log = logging.getLogger(__name__)

PATH: Final = "/wecom/{account}"


class WeComAccountConfig(BaseModel):
    """One WeCom app (callback URL) as written in ``channels.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corp_id: str = Field(min_length=1, max_length=64)
    token_env: str | None = None
    token: SecretStr | None = None  # demo only: prefer token_env
    encoding_aes_key_env: str | None = None
    encoding_aes_key: SecretStr | None = None  # demo only: prefer encoding_aes_key_env


class WeComConfig(BaseModel):
    """The ``wecom:`` section of ``channels.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp_window_s: float = Field(300.0, gt=0)
    max_body_bytes: int = Field(65_536, ge=1024)
    produce_timeout_s: float = Field(4.0, gt=0, le=30)
    dedupe_ttl_s: int = Field(DEFAULT_DEDUPE_TTL_S, ge=1)
    accounts: dict[str, WeComAccountConfig] = Field(default_factory=dict)


def load_wecom_config(
    data: Mapping[str, Any], environ: Mapping[str, str], source: str = CHANNELS_FILE
) -> tuple[WeComConfig, dict[str, WeChatAccount]]:
    """Validate the ``wecom:`` section and resolve every account's secrets."""
    env = environ  # Settings.environ: the variables as read at process start
    try:
        cfg = WeComConfig.model_validate(data.get("wecom") or {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"{source}: wecom")) from None
    accounts: dict[str, WeChatAccount] = {}
    for name, acc in cfg.accounts.items():
        where = f"{source}: wecom.accounts.{name}"
        token = resolve_secret(acc.token, acc.token_env, env)
        aes = resolve_secret(acc.encoding_aes_key, acc.encoding_aes_key_env, env)
        if token is None or aes is None:
            log.warning("%s: token or EncodingAESKey missing (set %s and %s); account disabled",
                        where, acc.token_env or "token",
                        acc.encoding_aes_key_env or "encoding_aes_key")
            continue
        validate_aes_key(aes.get_secret_value(), where)
        accounts[name] = WeChatAccount(name, acc.corp_id, token, aes, "safe")
    return cfg, accounts
