"""WeChat / WeCom callback XML -> Envelope.

XML is parsed with defusedxml and every DTD is refused, so entity expansion
("billion laughs") and external entities never run. Only the flat children of
``<xml>`` are read; WeChat's payloads are flat.

What becomes an envelope (text is never empty: the router requires text):

========== =============================================================
MsgType    envelope
========== =============================================================
text       ``Content``
voice      ``Recognition`` (speech-to-text) or ``[voice]``; attachment
image      ``[image]``; attachment ``image`` = MediaId, ``meta.pic_url``
video      ``[video]`` / ``shortvideo``; attachment
location   ``[location] Label (x,y)``
link       ``[link] Title Url``
file       ``[file] Title`` (WeCom)
event      subscribe / SCAN -> hints ``event:subscribe`` (+ ``scene:<id>``,
           entry ``other``); CLICK -> hints ``menu:<EventKey>``
========== =============================================================

Other events (unsubscribe, LOCATION, VIEW, template/mass-send reports, WeCom
``enter_agent`` ...) are acknowledged and counted (``filtered{rule}``) but not
routed: no customer is waiting for an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from ...router.exceptions import BadRequest
from ...router.models import (
    Attachment,
    Channel,
    Customer,
    Entry,
    EntryKind,
    Envelope,
    message_id,
)
from ..text import clip

__all__ = ["Inbound", "parse_xml", "to_envelope"]

MAX_FIELDS: Final = 64
ROUTED_EVENTS: Final = frozenset({"subscribe", "scan", "click"})
#: Events acknowledged but not routed; anything else is counted as ``event_other``.
KNOWN_EVENTS: Final = frozenset(
    {"unsubscribe", "location", "view", "templatesendjobfinish", "masssendjobfinish",
     "enter_agent", "view_miniprogram", "scancode_push", "scancode_waitmsg", "pic_sysphoto",
     "pic_photo_or_album", "pic_weixin", "location_select", "change_contact",
     "kf_msg_or_event", "batch_job_result"}
)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed callback: an envelope to route, or the rule that skipped it."""

    channel_msg_id: str
    envelope: Envelope | None
    skipped: str | None = None  # metric label of filtered{rule}


def parse_xml(body: bytes) -> dict[str, str]:
    """The flat ``<xml>`` children as a dict (tag -> text).

    Raises:
        BadRequest: ``empty``, ``hostile_xml`` (DTD, entities, external
            references) or ``bad_xml``.
    """
    if not body.strip():
        raise BadRequest("empty body: WeChat sends an <xml> document", reason="empty")
    try:
        root = DefusedET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise BadRequest(f"XML with a DTD or entities is refused ({exc!r})",
                         reason="hostile_xml") from None
    except (DefusedET.ParseError, ValueError, UnicodeError, LookupError) as exc:
        raise BadRequest(f"body is not well-formed XML ({exc})", reason="bad_xml") from None
    if root.tag != "xml":
        raise BadRequest(f"root element must be <xml>, got <{root.tag[:32]}>", reason="bad_xml")
    fields: dict[str, str] = {}
    for child in root:
        if len(fields) >= MAX_FIELDS:
            raise BadRequest(f"more than {MAX_FIELDS} fields in <xml>", reason="bad_xml")
        if isinstance(child.tag, str) and len(child) == 0:
            fields[child.tag] = (child.text or "").strip()
    return fields


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise BadRequest(f"<{name}> is missing or empty", reason="invalid")
    if len(value) > 256:
        raise BadRequest(f"<{name}> is longer than 256 characters", reason="invalid")
    return value


def to_envelope(
    fields: Mapping[str, str], channel: Channel, account: str, received_at_ms: int
) -> Inbound:
    """Normalise one decrypted callback.

    Raises:
        BadRequest: a required field is missing (reason ``invalid``).
    """
    openid = _required(fields, "FromUserName")
    create_time = _required(fields, "CreateTime")
    if not create_time.isascii() or not create_time.isdigit() or len(create_time) > 12:
        raise BadRequest(f"<CreateTime> must be unix seconds, got {create_time[:16]!r}",
                         reason="invalid")
    msg_type = _required(fields, "MsgType").lower()
    msg_id = fields.get("MsgId", "")[:64]
    channel_msg_id = msg_id or f"{openid}-{create_time}"
    hints: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    entry: Entry | None = None
    meta: dict[str, str | int] = {"msg_type": msg_type}
    if fields.get("ToUserName"):
        meta["to_user"] = fields["ToUserName"][:128]
    agent_id = fields.get("AgentID", "")
    if agent_id:
        meta["agent_id"] = int(agent_id) if agent_id.isascii() and agent_id.isdigit() else agent_id

    media = fields.get("MediaId", "")[:256]
    if msg_type == "text":
        text = fields.get("Content", "")
        if not text.strip():
            raise BadRequest("<Content> is empty", reason="invalid")
    elif msg_type == "voice":
        text = fields.get("Recognition", "").strip() or "[voice]"
        if media:
            attachments = (Attachment("voice", media, fields.get("Format") or None),)
    elif msg_type == "image":
        text = "[image]"
        ref = media or fields.get("PicUrl", "")[:2048]
        if ref:
            attachments = (Attachment("image", ref),)
        if fields.get("PicUrl"):
            meta["pic_url"] = fields["PicUrl"][:2048]
    elif msg_type in ("video", "shortvideo"):
        text = "[video]"
        if media:
            attachments = (Attachment("video", media),)
    elif msg_type == "location":
        text = (f"[location] {fields.get('Label', '')} "
                f"({fields.get('Location_X', '')},{fields.get('Location_Y', '')})")
    elif msg_type == "link":
        text = f"[link] {fields.get('Title', '')} {fields.get('Url', '')}".strip()
    elif msg_type == "file":
        text = f"[file] {fields.get('Title', '')}".strip()
        if media:
            attachments = (Attachment("file", media, fields.get("Title") or None),)
    elif msg_type == "event":
        event = fields.get("Event", "").lower()
        meta["event"] = event[:64]
        key = fields.get("EventKey", "")[:128]
        if event not in ROUTED_EVENTS:
            rule = f"event_{event}" if event in KNOWN_EVENTS else "event_other"
            return Inbound(channel_msg_id, None, rule)
        if event == "click":
            text = f"[menu] {key}".strip()
            hints = (f"menu:{key}",) if key else ()
        else:
            text = f"[event] {event}"
            scene = key.removeprefix("qrscene_")
            hints = ("event:subscribe",) if event == "subscribe" else ("event:scan",)
            if scene:
                hints += (f"scene:{scene}",)
                entry = Entry(EntryKind.OTHER, scene)
    else:
        return Inbound(channel_msg_id, None, "unsupported_type")

    envelope = Envelope(
        id=message_id(channel, account, channel_msg_id),
        channel=channel,
        account=account,
        channel_msg_id=channel_msg_id,
        conversation_id=f"{channel}:{account}:{openid}",
        customer=Customer(openid),
        text=clip(text),
        received_at_ms=received_at_ms,
        sent_at_ms=int(create_time) * 1000,
        attachments=attachments,
        entry=entry,
        hints=hints,
        meta=meta,
    )
    return Inbound(channel_msg_id, envelope)
