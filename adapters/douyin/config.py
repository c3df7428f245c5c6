"""Douyin live-room push settings: the ``douyin:`` section of ``config/channels.yaml``.

Each message type has its own push secret, read from the environment variable
named by ``secret_env`` (a literal ``secret`` is for demos only). A type
without a secret is refused with 401 ``auth_not_configured``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..channel_config import CHANNELS_FILE, ChannelSection, resolve_secret

__all__ = [
    "MSG_TYPES",
    "PATH",
    "ChatterConfig",
    "DouyinConfig",
    "MessageTypeConfig",
    "MsgType",
]

log = logging.getLogger(__name__)

PATH: Final = "/douyin/live"
MsgType = Literal["live_comment", "live_gift", "live_like", "live_fansclub"]
MSG_TYPES: Final[tuple[MsgType, ...]] = ("live_comment", "live_gift", "live_like", "live_fansclub")


class MessageTypeConfig(BaseModel):
    """The push secret of one message type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_env: str | None = None
    secret: SecretStr | None = None  # demo only: prefer secret_env


class ChatterConfig(BaseModel):
    """Thresholds and word lists of ``adapters.douyin.chatter``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_chars: int = Field(3, ge=0, le=50)  # shorter non-questions are chatter
    repeat_window_s: float = Field(60.0, ge=0)  # same viewer + same text within -> chatter
    repeat_cache_size: int = Field(100_000, ge=0)  # remembered (viewer, text) pairs per process
    cheers: tuple[str, ...] = ("666", "赞", "好", "哈哈", "来了", "打卡", "扣1", "冲", "主播好",
                               "支持", "加油", "nb", "yyds", "辛苦了", "辛苦啦", "爱了", "比心",
                               "笔芯", "么么哒", "绝了", "绝绝子", "顶", "捧场", "关注了",
                               "已关注", "点赞", "晚上好", "早上好", "下午好", "中午好", "晚安",
                               "早安", "你好", "大家好", "好评", "牛哇", "真棒", "棒棒哒")
    keep_keywords: tuple[str, ...] = ("退款", "退货", "投诉", "发货", "物流", "链接", "尺码",
                                      "价格", "优惠", "客服", "质量", "假货", "12315", "报警")
    # How viewers address the host (add the host's nickname): "主播好美", "加油小姐姐".
    hosts: tuple[str, ...] = ("主播", "主持人", "小姐姐", "小哥哥", "姐姐", "哥哥", "妹妹",
                              "弟弟", "宝宝", "宝子", "宝贝", "美女", "帅哥", "老师", "老板",
                              "你", "您", "你们", "大家", "家人们", "姐妹们", "兄弟们")
    # Praise of the host's person, never of a product (no 好用, 便宜, 衣服好看 ...).
    praise: tuple[str, ...] = ("美", "漂亮", "好看", "美丽", "美美哒", "帅", "可爱", "温柔",
                               "有气质", "仙", "飒", "酷", "靓", "瘦", "年轻",
                               "好听", "动听", "棒", "厉害", "专业", "优秀", "牛", "有才",
                               "有趣", "幽默", "搞笑", "耐心", "敬业", "用心", "认真", "真诚",
                               "有魅力", "迷人", "养眼", "会说话", "会聊天", "好", "赞",
                               "beautiful", "pretty", "cute", "nice", "cool", "gorgeous",
                               "amazing", "awesome", "handsome")


class DouyinConfig(ChannelSection):
    """The ``douyin:`` section of ``channels.yaml``."""

    SECTION: ClassVar[str] = "douyin"

    max_body_bytes: int = Field(1_048_576, ge=1024)  # a push carries up to 2000 items
    max_items: int = Field(2000, ge=1, le=100_000)  # items in one push; more -> 413
    max_in_flight: int = Field(32, ge=1, le=10_000)  # concurrent pushes; more -> 429
    retry_after_s: int = Field(1, ge=1, le=3600)
    produce_timeout_s: float = Field(5.0, gt=0, le=60)
    message_types: dict[MsgType, MessageTypeConfig] = Field(default_factory=dict)
    chatter: ChatterConfig = Field(default_factory=lambda: ChatterConfig.model_validate({}))

    def resolve(
        self, environ: Mapping[str, str], source: str = CHANNELS_FILE
    ) -> dict[str, SecretStr]:
        """The push secret of each message type that has one (the others are refused)."""
        secrets: dict[str, SecretStr] = {}
        for msg_type, tcfg in self.message_types.items():
            secret = resolve_secret(tcfg.secret, tcfg.secret_env, environ)
            if secret is None:
                log.warning("%s: no secret (set %s); pushes refused",
                            self.where(source, "message_types", msg_type),
                            tcfg.secret_env or "secret")
                continue
            secrets[msg_type] = secret
        return secrets
