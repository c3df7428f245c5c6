"""Validation of generic ingest bodies into envelopes."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...router import format_validation_error
from ...router.exceptions import BadRequest, PayloadTooLarge
from ...router.models import (
    MAX_TEXT_CHARS,
    Attachment,
    Channel,
    Customer,
    Entry,
    EntryKind,
    Envelope,
    Order,
    message_id,
)

__all__ = ["IngestMessage", "conversation_id", "parse_body"]

Id = Annotated[str, Field(min_length=1, max_length=256)]


class _Customer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Id
    handle: str | None = Field(None, max_length=256)
    tier: str | None = Field(None, max_length=64)


class _Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Annotated[str, Field(min_length=1, max_length=32)]
    ref: Annotated[str, Field(min_length=1, max_length=2048)]
    name: str | None = Field(None, max_length=256)
    size_bytes: int | None = Field(None, ge=0)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: EntryKind
    id: Id


class _Order(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Id
    # NaN and Infinity (JSON strings "NaN", "Infinity") are refused as such, not as a bound
    amount: float | None = Field(None, ge=0, lt=1e12, allow_inf_nan=False)


class IngestMessage(BaseModel):
    """One message as a caller of ``POST /v1/messages`` sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Channel = Channel.APP
    account: Id = "default"
    channel_msg_id: Id
    conversation_id: Id | None = None  # default: channel and customer id; see to_envelope
    customer: _Customer
    text: str = Field("", max_length=MAX_TEXT_CHARS)
    attachments: list[_Attachment] = Field(default_factory=list, max_length=32)
    entry: _Entry | None = None
    order: _Order | None = None
    hints: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=16)
    sent_at_ms: int | None = Field(None, ge=0)

    def to_envelope(self, received_at_ms: int, source: str = "") -> Envelope:
        """The canonical envelope for this message (the producer masks PII).

        ``source`` (the sending credential, ``Credential.source``) is the namespace of
        the ids and is recorded in ``meta["source"]``: a caller's ``channel_msg_id``
        never collides with a channel's own message ids, nor with another caller's, and
        its conversation id (the one it sent, or ``<channel>:<customer id>``) is put
        behind ``<source>:``, so a caller posting ``channel: "wechat"`` and
        ``conversation_id: "wechat:demo:<openid>"`` gets a conversation of its own, not
        the WeChat customer's (sticky group and agent, SLA timers, agent assignment).
        No channel adapter's conversation id starts with ``bearer:`` or ``hmac:``.

        The declared ``customer.tier`` is kept: the credential is a server-side
        integration, and the tier it declares counts only for its own messages (a tier
        imported into Redis wins over it, see ``skills.priority.tier_of``).
        """
        conversation = self.conversation_id or f"{self.channel}:{self.customer.id}"
        return Envelope(
            id=message_id(self.channel, self.account, self.channel_msg_id, source=source),
            channel=self.channel,
            account=self.account,
            channel_msg_id=self.channel_msg_id,
            conversation_id=conversation_id(source, conversation),
            customer=Customer(self.customer.id, self.customer.handle, self.customer.tier),
            text=self.text,
            received_at_ms=received_at_ms,
            sent_at_ms=self.sent_at_ms,
            attachments=tuple(
                Attachment(a.kind, a.ref, a.name, a.size_bytes) for a in self.attachments
            ),
            entry=Entry(self.entry.kind, self.entry.id) if self.entry else None,
            order=Order(self.order.id, self.order.amount) if self.order else None,
            hints=tuple(self.hints),
            meta={"source": source} if source else {},
        )


def conversation_id(source: str, conversation: str) -> str:
    """The conversation id of a generic-API message: ``conversation`` (as the caller sent
    it) in the namespace of the credential ``source`` (unchanged when there is none)."""
    return f"{source}:{conversation}" if source else conversation


def _require_utf8(body: bytes) -> None:
    """Name the encoding problem (GBK, GB18030, Latin-1 ...) instead of orjson's
    "surrogates not allowed"."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start}); "
            "send JSON encoded as UTF-8 (GBK and GB18030 are not accepted)",
            reason="not_utf8",
        ) from None


def parse_body(
    body: bytes, received_at_ms: int, max_messages: int, source: str = ""
) -> list[Envelope]:
    """Parse one message, a JSON array of messages, or ``{"messages": [...]}``; ids in
    the namespace ``source`` (see ``IngestMessage.to_envelope``)."""
    if not body:
        raise BadRequest("empty body: send a JSON message object or {\"messages\": [...]}",
                         reason="empty")
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        _require_utf8(body)
        raise BadRequest(f"body is not valid JSON: {exc}", reason="bad_json") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
        if not isinstance(data, list):
            raise BadRequest("'messages' must be a JSON array", reason="invalid")
    items = data if isinstance(data, list) else [data]
    if not items:
        raise BadRequest("no messages in the batch", reason="empty")
    if len(items) > max_messages:
        raise PayloadTooLarge(
            f"batch has {len(items)} messages; the limit is {max_messages}",
            reason="batch_too_large",
        )
    envelopes = []
    for i, item in enumerate(items):
        prefix = f"messages[{i}]." if isinstance(data, list) else ""
        if not isinstance(item, dict):
            raise BadRequest(f"{prefix or 'body'} must be a JSON object", reason="invalid")
        try:
            msg = IngestMessage.model_validate(item)
        except ValidationError as exc:
            raise BadRequest(
                format_validation_error(exc, prefix=prefix, show_input=False, sep="; ", limit=5),
                reason="invalid",
            ) from None
        if not msg.text.strip() and not msg.attachments:
            raise BadRequest(f"{prefix}text: empty text and no attachments", reason="invalid")
        envelopes.append(msg.to_envelope(received_at_ms, source))
    return envelopes
