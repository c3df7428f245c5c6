"""WeCom (企业微信) app callbacks: the ``wecom:`` section of ``config/channels.yaml``.

Same rules as ``adapters.wechat.config``: ``token_env`` / ``encoding_aes_key_env``
name environment variables; an app without both is disabled with a warning.
WeCom callbacks are always encrypted; the receive id checked after decryption is
the corp id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ...router.models import Channel
from ..channel_config import CHANNELS_FILE, resolve_secret
from ..wechat.config import CallbackSection, WeChatAccount, validate_aes_key

__all__ = ["PATH", "WeComAccountConfig", "WeComConfig"]

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


class WeComConfig(CallbackSection):
    """The ``wecom:`` section of ``channels.yaml``."""

    SECTION: ClassVar[str] = "wecom"
    CHANNEL: ClassVar[Channel] = Channel.WECOM
    PATH: ClassVar[str] = PATH
    ALWAYS_ENCRYPTED: ClassVar[bool] = True

    accounts: dict[str, WeComAccountConfig] = Field(default_factory=dict)

    def resolve(
        self, environ: Mapping[str, str], source: str = CHANNELS_FILE
    ) -> dict[str, WeChatAccount]:
        """Apps with both a token and an EncodingAESKey (always safe mode)."""
        accounts: dict[str, WeChatAccount] = {}
        for name, acc in self.accounts.items():
            where = self.where(source, "accounts", name)
            token = resolve_secret(acc.token, acc.token_env, environ)
            aes = resolve_secret(acc.encoding_aes_key, acc.encoding_aes_key_env, environ)
            if token is None or aes is None:
                log.warning("%s: token or EncodingAESKey missing (set %s and %s); account disabled",
                            where, acc.token_env or "token",
                            acc.encoding_aes_key_env or "encoding_aes_key")
                continue
            validate_aes_key(aes.get_secret_value(), where)
            accounts[name] = WeChatAccount(name, acc.corp_id, token, aes, "safe")
        return accounts
