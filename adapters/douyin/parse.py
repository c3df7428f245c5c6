"""Douyin push bodies -> envelopes (comments) and signal records (gifts, likes, fans club).

Body: a JSON array of ``{msg_id, sec_openid, content, nickname, avatar_url,
timestamp}`` (gifts add ``sec_gift_id``, ``gift_num``, ``gift_value``; likes
``like_num``). Unknown fields are ignored; a wrong type is a 400 naming the item.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ...router import format_validation_error
from ...router.events import SIGNAL_KINDS, SignalKind, SignalRecord
from ...router.exceptions import BadRequest, PayloadTooLarge
from ...router.models import (
    MAX_TEXT_CHARS,
    Channel,
    Customer,
    Entry,
    EntryKind,
    Envelope,
    message_id,
)
from ..text import clip

__all__ = ["LiveItem", "comment_envelope", "parse_items", "signal_record", "to_ms"]

_SIGNAL_KINDS: Final[dict[str, SignalKind]] = {k: k for k in SIGNAL_KINDS}

def _id_str(value: Any) -> Any:
    # Douyin sends ids as strings; tolerate integers without accepting floats or bools.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_id_str), Field(min_length=1, max_length=256)]


class LiveItem(BaseModel):
    """One item of a push (comment, gift, like or fans-club event)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    msg_id: Id
    sec_openid: Id
    content: str = Field("", max_length=4 * MAX_TEXT_CHARS)
    nickname: str | None = Field(None, max_length=1024)
    avatar_url: str | None = Field(None, max_length=4096)
    timestamp: int | None = Field(None, ge=0, le=10**14)
    gift_num: int | None = Field(None, ge=0, le=10**9)
    gift_value: float | None = Field(None, ge=0, le=1e12)
    like_num: int | None = Field(None, ge=0, le=10**9)


def to_ms(timestamp: int | None) -> int | None:
    """Douyin timestamps: milliseconds, or seconds from older integrations."""
    if timestamp is None:
        return None
    return timestamp if timestamp >= 10**11 else timestamp * 1000


def parse_items(body: bytes, max_items: int) -> list[LiveItem]:
    """Validate a push body.

    Raises:
        BadRequest: not JSON, not an array of objects, or an invalid item.
        PayloadTooLarge: more than ``max_items`` items (reason ``batch_too_large``).
    """
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", reason="bad_json") from None
    if not isinstance(data, list):
        raise BadRequest("body must be a JSON array of push items", reason="invalid")
    if len(data) > max_items:
        raise PayloadTooLarge(f"push has {len(data)} items; the limit is {max_items}",
                              reason="batch_too_large")
    items = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise BadRequest(f"item {i} must be a JSON object", reason="invalid")
        try:
            items.append(LiveItem.model_validate(raw))
        except ValidationError as exc:
            problems = format_validation_error(exc, prefix=f"item {i}.", show_input=False,
                                               sep="; ", limit=5)
            raise BadRequest(problems, reason="invalid") from None
    return items


def comment_envelope(item: LiveItem, room_id: str, received_at_ms: int) -> Envelope:
    """The envelope of one live comment (PII masking happens after)."""
    text = clip(item.content.strip())
    return Envelope(
        id=message_id(Channel.LIVESTREAM, room_id, item.msg_id),
        channel=Channel.LIVESTREAM,
        account=room_id,
        channel_msg_id=item.msg_id,
        conversation_id=f"{Channel.LIVESTREAM}:{room_id}:{item.sec_openid}",
        customer=Customer(item.sec_openid, handle=item.nickname[:64] if item.nickname else None),
        text=text or "[empty]",
        received_at_ms=received_at_ms,
        sent_at_ms=to_ms(item.timestamp),
        entry=Entry(EntryKind.LIVE_ROOM, room_id),
        meta={"msg_type": "live_comment"},
    )


def signal_record(
    msg_type: str, room_id: str, items: list[LiveItem], received_at_ms: int
) -> SignalRecord:
    """The ``omni.signals`` record (key = room id) summarising one push of gifts, likes
    or fans-club events (KeyError for a ``live_comment`` push: comments are routed)."""
    kind = _SIGNAL_KINDS[msg_type]
    stamps = [t for t in (to_ms(i.timestamp) for i in items) if t is not None]
    count = sum(
        (i.gift_num if kind == "live_gift" else i.like_num if kind == "live_like" else None) or 1
        for i in items
    )
    return SignalRecord(
        channel=Channel.LIVESTREAM,
        room=room_id,
        kind=kind,
        events=len(items),
        count=count,
        viewers=len({i.sec_openid for i in items}),
        first_ms=min(stamps) if stamps else None,
        last_ms=max(stamps) if stamps else None,
        received_at_ms=received_at_ms,
        gift_value=sum(i.gift_value or 0 for i in items) if kind == "live_gift" else None,
    )
