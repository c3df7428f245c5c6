"""MIME mail -> envelope: charsets, RFC 2047 headers, HTML, attachments, threading, quotes.

Everything here is a pure function of the message bytes (no I/O), so SMTP and
IMAP share it and tests can feed it real mail.

Chinese mail labelled ``gb2312`` (or ``gbk``) routinely contains characters
outside GB 2312 (镕, 堃, 喆 ...): bodies and RFC 2047 words with those labels are
decoded as GB 18030, the superset, so they arrive intact.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import Header, decode_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import Final

from ...router.exceptions import BadRequest
from ...router.models import (
    Attachment,
    Channel,
    Customer,
    Envelope,
    message_id,
)
from ..text import clip
from .text import html_to_text, normalise_subject, strip_quoted

__all__ = [
    "MAX_ATTACHMENTS",
    "MalformedMail",
    "ParsedMail",
    "customer_id",
    "decode_bytes",
    "decode_header_value",
    "html_to_text",
    "is_auto_submitted",
    "normalise_subject",
    "parse_mail",
    "strip_quoted",
    "thread_root",
    "to_envelope",
]

MAX_ATTACHMENTS: Final = 32  # more are counted in meta, not listed
_MAX_MIME_DEPTH: Final = 20  # nested multiparts deeper than this are ignored

# Labels whose real-world content is GBK / GB 18030; decode with the superset.
_GB_LABELS: Final = frozenset({
    "gb2312", "gb_2312", "gb_2312-80", "gb2312-80", "csgb2312", "euc-cn", "x-euc-cn",
    "gbk", "x-gbk", "cp936", "ms936", "windows-936", "chinese", "gb18030",
})
_ALIASES: Final = {"big5": "big5hkscs", "ks_c_5601-1987": "cp949", "x-sjis": "shift_jis"}


class MalformedMail(BadRequest):
    """The message cannot be turned into an envelope (SMTP 554 5.6.0)."""

    reason = "malformed"


# --- charsets ---------------------------------------------------------------------


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    label = charset.strip().strip('"').lower()
    if label in _GB_LABELS:
        return "gb18030"
    return _ALIASES.get(label, label)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode body or header bytes; gb2312/gbk labels as GB 18030; never raises.

    Unlabelled or unknown-charset 8-bit data is tried as UTF-8, then GB 18030
    (the two encodings Chinese mail clients actually send), then replaced.
    """
    codec = _codec(charset)
    if codec not in (None, "unknown-8bit", "x-unknown", "us-ascii", "ascii"):
        try:
            return data.decode(codec, errors="replace")
        except LookupError:
            pass  # unknown label: guess below
    for guess in ("utf-8", "gb18030"):
        try:
            return data.decode(guess)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def _fix_surrogates(text: str) -> str:
    """Raw 8-bit header bytes arrive surrogate-escaped; decode them properly."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return decode_bytes(text.encode("utf-8", errors="surrogateescape"), None)


def decode_header_value(value: str | Header | None) -> str:
    """Decode an RFC 2047 header (``=?gb2312?B?...?=`` as GB 18030) to one line of text."""
    if value is None:
        return ""
    try:
        parts = decode_header(value)
    except (ValueError, LookupError, AssertionError):
        return _fix_surrogates(str(value))
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(_fix_surrogates(chunk))
        elif charset is None:
            out.append(_fix_surrogates(chunk.decode("raw-unicode-escape", errors="replace")))
        else:
            out.append(decode_bytes(chunk, charset))
    return " ".join("".join(out).split())


# --- threading ----------------------------------------------------------------------

_MSGID: Final = re.compile(r"<([^<>\s]{1,998})>")


def _ids(value: str) -> list[str]:
    found = _MSGID.findall(value)
    if found:
        return list(found)
    return [t.strip("<>") for t in value.split() if t.strip("<>")]


def thread_root(own_id: str, in_reply_to: str = "", references: str = "") -> str:
    """The message id that names the conversation (pure; no state needed).

    The first id of ``References`` is the root of the chain; without it, the
    message replied to; else the message itself starts a conversation.
    """
    refs = _ids(references)
    if refs:
        return refs[0]
    parents = _ids(in_reply_to)
    if parents:
        return parents[0]
    return own_id


# --- the message ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """What the router needs from one mail (texts unmasked; the adapter masks)."""

    message_id: str  # without angle brackets; synthesised from a digest if missing
    root_id: str  # conversation root (see ``thread_root``)
    subject: str
    from_address: str  # lower-cased; empty if there is none
    from_name: str
    body: str  # quoted replies and signature stripped
    attachments: tuple[Attachment, ...] = ()
    attachments_total: int = 0
    sent_at_ms: int | None = None
    in_reply_to: str | None = None
    auto_submitted: bool = False
    had_html_only: bool = False
    warnings: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        return (
            f"ParsedMail(<{self.message_id}> root=<{self.root_id}> subject={self.subject!r} "
            f"attachments={self.attachments_total})"
        )


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return decode_header_value(value) if value is not None else ""


def _kind(content_type: str) -> str:
    major = content_type.split("/", 1)[0]
    return {"image": "image", "audio": "voice", "video": "video"}.get(major, "file")


def _leaves(msg: Message, depth: int = 0) -> Iterator[Message]:
    if depth > _MAX_MIME_DEPTH:
        return
    if msg.is_multipart():
        payload = msg.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _leaves(sub, depth + 1)
        return
    yield msg


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", errors="surrogateescape") if isinstance(raw, str) else b""


def _raw_header(msg: Message, name: str) -> str:
    """The field as text, undecoded; compat32 hands back a ``Header`` (no ``str`` methods)
    when the field holds bytes that are not ASCII."""
    value = msg.get(name)
    return "" if value is None else str(value)


def is_auto_submitted(msg: Message) -> bool:
    """Out-of-office replies, bounces and list mail: kept off agent queues (RFC 3834)."""
    auto = (_raw_header(msg, "Auto-Submitted") or "no").strip().lower()
    precedence = _raw_header(msg, "Precedence").strip().lower()
    return (
        auto != "no"
        or precedence in ("bulk", "junk", "list", "auto_reply")
        or msg.get("X-Autoreply") is not None
        or msg.get("X-Autorespond") is not None
        or msg.get_content_type() == "multipart/report"
    )


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse one RFC 5322 message; raises MalformedMail if it is not a mail at all."""
    if not raw.strip():
        raise MalformedMail("empty message")
    msg = message_from_bytes(raw, policy=compat32)
    if not msg.keys():
        raise MalformedMail("no header fields: this is not an RFC 5322 message")
    own = _ids(_header(msg, "Message-ID"))
    # No Message-ID: a digest of the bytes, so a retry of the same mail dedupes.
    mid = own[0] if own else f"{hashlib.sha256(raw).hexdigest()[:32]}@omniroute.invalid"
    in_reply_to = _header(msg, "In-Reply-To")
    root = thread_root(mid, in_reply_to, _header(msg, "References"))
    subject = _header(msg, "Subject")
    senders = getaddresses([_header(msg, "From")])
    from_name, from_address = senders[0] if senders else ("", "")

    plains: list[str] = []
    htmls: list[str] = []
    attachments: list[Attachment] = []
    total = 0
    for index, part in enumerate(_leaves(msg)):
        ctype = part.get_content_type()
        disposition = _raw_header(part, "Content-Disposition").split(";", 1)[0].strip().lower()
        raw_name = part.get_filename()
        name = decode_header_value(raw_name) if raw_name else None
        is_text = ctype in ("text/plain", "text/html")
        if is_text and disposition != "attachment" and not (name and disposition == "inline"):
            text = decode_bytes(_payload(part), part.get_content_charset())
            (plains if ctype == "text/plain" else htmls).append(text)
            continue
        if ctype == "message/rfc822" and name is None:
            name = "message.eml"
        total += 1
        if len(attachments) < MAX_ATTACHMENTS:
            attachments.append(
                Attachment(
                    kind=_kind(ctype),
                    ref=f"mid:{mid}#part{index}",  # RFC 2392 style; bytes stay in the mail
                    name=name,
                    size_bytes=len(_payload(part)),
                )
            )
    if plains:
        body = "\n\n".join(strip_quoted(p) for p in plains)
    else:
        body = "\n\n".join(strip_quoted(html_to_text(h)) for h in htmls)
    sent_at_ms: int | None = None
    date = msg.get("Date")
    if date:
        try:
            sent_at_ms = max(0, int(parsedate_to_datetime(str(date)).timestamp() * 1000))
        except (TypeError, ValueError, IndexError, OverflowError):
            sent_at_ms = None
    return ParsedMail(
        message_id=mid,
        root_id=root,
        subject=subject,
        from_address=from_address.strip().lower(),
        from_name=from_name.strip(),
        body=body.strip(),
        attachments=tuple(attachments),
        attachments_total=total,
        sent_at_ms=sent_at_ms,
        in_reply_to=next(iter(_ids(in_reply_to)), None),
        auto_submitted=is_auto_submitted(msg),
        had_html_only=not plains and bool(htmls),
    )


def customer_id(address: str, salt: str) -> str:
    """A stable customer id for a sender address (keyed hash: no address on Kafka)."""
    key = hashlib.sha256(salt.encode()).digest() if salt else b""
    digest = hashlib.blake2b(address.lower().encode(), key=key, digest_size=12).hexdigest()
    return f"email:{digest}"


def to_envelope(
    mail: ParsedMail, mailbox: str, received_at_ms: int, *, salt: str = "", sender: str = ""
) -> Envelope:
    """The envelope for ``mail`` delivered to ``mailbox`` (text not yet PII-masked).

    ``sender`` (the SMTP envelope sender) stands in when the mail has no From.
    Raises MalformedMail when there is neither text nor an attachment.
    """
    address = mail.from_address or sender.strip().lower()
    if not address:
        raise MalformedMail("no sender: the mail has no From header and no envelope sender")
    subject = normalise_subject(mail.subject)
    text = "\n\n".join(p for p in (subject, mail.body) if p)
    if not text and not mail.attachments:
        raise MalformedMail("the mail has no subject, no text and no attachment")
    # Attachments only: a placeholder like the other channels' ("[image]"); an empty
    # text is no valid envelope on the wire (found by tests/test_email_fuzz.py).
    text = clip(text) or f"[{mail.attachments[0].kind}]"
    handle = f"{mail.from_name} <{address}>" if mail.from_name else address
    # No subject in meta: the text starts with it. Everything here (text, handle, file
    # names) is PII-masked by the producer (router.pii.mask_envelope), not here.
    meta: dict[str, str | int] = {}
    if mail.in_reply_to:
        meta["in_reply_to"] = mail.in_reply_to[:256]
    if mail.attachments_total > len(mail.attachments):
        meta["attachments_total"] = mail.attachments_total
    return Envelope(
        id=message_id(Channel.EMAIL, mailbox, mail.message_id),
        channel=Channel.EMAIL,
        account=mailbox,
        channel_msg_id=mail.message_id,
        conversation_id=f"email:{mail.root_id}",
        customer=Customer(id=customer_id(address, salt), handle=handle[:256]),
        text=text,
        received_at_ms=received_at_ms,
        sent_at_ms=mail.sent_at_ms,
        attachments=mail.attachments,
        meta=meta,
    )
