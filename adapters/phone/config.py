"""Configuration of the phone channel: ``config/phone.yaml``.

``PhoneConfig`` is the validated YAML (IVR menu, prompts, call-back rules); the
secrets and URLs from the environment are the ``phone`` section of
:class:`router.settings.Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from ...router import load_model

__all__ = [
    "CHANNEL",
    "TCCC_PATH",
    "TCCC_PUSH_UUID_HEADER",
    "TWILIO_PATH",
    "TWILIO_SIGNATURE_HEADER",
    "CallbackRules",
    "MenuItem",
    "PhoneConfig",
    "load_phone_config",
]

CHANNEL: Final = "phone"  # metric label and dedupe namespace
TWILIO_PATH: Final = "/phone/twilio/{event}"  # event: voice | gather | status
TCCC_PATH: Final = "/phone/tccc"
TWILIO_SIGNATURE_HEADER: Final = "X-Twilio-Signature"  # base64 HMAC-SHA1, see verify.py
TCCC_PUSH_UUID_HEADER: Final = "X-TCCC-PUSH-UUID"  # one id per push; TCCC re-pushes up to 3x


_Strict = ConfigDict(extra="forbid", frozen=True)
Digits = Annotated[str, Field(pattern=r"^[0-9*#]{1,16}$")]


class MenuItem(BaseModel):
    """One IVR key: where the caller entered, and what they asked for."""

    model_config = _Strict
    entry: Annotated[str, Field(min_length=1, max_length=64)]
    label: Annotated[str, Field(min_length=1, max_length=64)]
    hints: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=8
    )


class CallbackRules(BaseModel):
    """Which call outcomes leave a customer waiting for a call-back."""

    model_config = _Strict
    hint: str = "callback"
    missed_text: str = "未接来电，请回拨"
    abandoned_text: str = "放弃来电，请回拨"
    twilio_missed: list[str] = Field(default_factory=lambda: ["no-answer", "busy", "failed"])
    twilio_abandoned: list[str] = Field(default_factory=lambda: ["canceled"])
    tccc_missed: list[str] = Field(
        default_factory=lambda: ["unconnected", "seatGiveUp", "noSeatOnline", "notWorkTime"]
    )
    tccc_abandoned: list[str] = Field(
        default_factory=lambda: ["ivrGiveUp", "waitingGiveUp", "ringingGiveUp"]
    )
    tccc_missed_codes: list[int] = Field(default_factory=lambda: [2, 17, 105, 106])
    tccc_abandoned_codes: list[int] = Field(default_factory=lambda: [102, 103, 104])


class PhoneConfig(BaseModel):
    """``config/phone.yaml``."""

    model_config = _Strict
    language: str = "zh-CN"
    gather_timeout_s: int = Field(default=6, ge=1, le=60)
    prompt: str = "您好，欢迎致电客服中心。请按键选择服务，或直接说出您的问题。"
    no_input: str = "正在为您转接人工客服。"
    after_gather: str = "您的来电已登记，正在为您转接客服，请稍候。"
    queue: str = ""
    lines: dict[str, Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=dict
    )
    menu: dict[Digits, MenuItem] = Field(default_factory=dict)
    callback: CallbackRules = Field(default_factory=CallbackRules)

    def line(self, number: str) -> str:
        """Account name of one of our numbers."""
        return self.lines.get(number.strip(), number.strip() or "unknown")


def load_phone_config(path: Path) -> PhoneConfig:
    """Load and validate ``phone.yaml``; ConfigError names file:line and the fix."""
    config, _ = load_model(
        path, PhoneConfig, "see the comments in config/phone.yaml for every key"
    )
    return config
