"""Phone events -> envelopes: Twilio ``gather`` / ``status`` forms and TCCC CDR pushes.

No raw phone number leaves this module: the customer id is a keyed hash of the
normalised caller number (the same caller gets the same id on Twilio and TCCC),
the handle is masked (``138****5678``), and texts are built from fixed phrases,
IVR labels and recognised speech (which the adapter PII-masks before produce).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from ...router.exceptions import BadRequest
from ...router.models import (
    Channel,
    Customer,
    Entry,
    EntryKind,
    Envelope,
    message_id,
)
from ..text import clip
from .config import MenuItem, PhoneConfig

__all__ = [
    "CallOutcome",
    "caller_customer",
    "cdr_to_envelope",
    "first_values",
    "form_pairs",
    "gather_to_envelope",
    "mask_number",
    "normalise_number",
    "status_to_envelope",
    "twilio_call",
]

_SID: Final = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")
_DIGITS_ONLY: Final = re.compile(r"\D")
# Caller ids carriers (and Twilio) send for withheld numbers: ANONYMOUS, RESTRICTED,
# BLOCKED, UNKNOWN, UNAVAILABLE spelt on a keypad.
_WITHHELD: Final = frozenset({"266696687", "7378742833", "2562533", "8656696", "86282452253"})


def normalise_number(raw: str) -> str | None:
    """Digits of a caller number in national form for China (+86/0086/86 dropped).

    Returns None for anonymous or withheld numbers (fewer than 5 digits).
    """
    digits = _DIGITS_ONLY.sub("", raw)
    if len(digits) < 5 or digits in _WITHHELD:
        return None
    for prefix in ("0086", "86"):
        rest = digits[len(prefix):]
        if digits.startswith(prefix) and len(rest) == 11 and rest.startswith("1"):
            return rest
    if raw.strip().startswith("+") and not digits.startswith("86"):
        return "+" + digits  # foreign number: keep the country code
    return digits


def mask_number(number: str) -> str:
    """``13812345678`` -> ``138****5678``; short numbers keep only the last two digits."""
    if len(number) >= 7:
        return f"{number[:3]}****{number[-4:]}"
    return "*" * (len(number) - 2) + number[-2:]


def caller_customer(raw_number: str, call_id: str, salt: str) -> Customer:
    """The customer behind a caller number: hashed id, masked handle.

    Withheld numbers get a per-call id, so anonymous callers are not merged.
    """
    number = normalise_number(raw_number)
    if number is None:
        return Customer(id=f"phone:anon:{call_id}", handle="匿名来电")
    key = hashlib.sha256(salt.encode()).digest() if salt else b""
    digest = hashlib.blake2b(number.encode(), key=key, digest_size=12).hexdigest()
    return Customer(id=f"phone:{digest}", handle=mask_number(number))


def _field(form: Mapping[str, str], name: str, *, required: bool = True) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        raise BadRequest(f"missing form parameter {name!r}", reason="invalid")
    if len(value) > 1024:
        raise BadRequest(f"form parameter {name!r} is longer than 1024 characters",
                         reason="invalid")
    return value


def twilio_call(form: Mapping[str, str]) -> tuple[str, str, str]:
    """``(CallSid, From, To)`` of a Twilio webhook, validated."""
    sid = _field(form, "CallSid")
    if not _SID.match(sid):
        raise BadRequest(f"CallSid {sid[:40]!r} is not an id", reason="invalid")
    return sid, _field(form, "From"), _field(form, "To", required=False)


def _menu(config: PhoneConfig, digits: str) -> MenuItem | None:
    return config.menu.get(digits) or (config.menu.get(digits[0]) if digits else None)


def gather_to_envelope(
    form: Mapping[str, str], config: PhoneConfig, received_at_ms: int, salt: str
) -> Envelope:
    """A ``gather`` result (Digits and/or SpeechResult) as a synchronous phone message."""
    sid, caller, called = twilio_call(form)
    digits = _field(form, "Digits", required=False)
    if digits and not re.fullmatch(r"[0-9*#]{1,32}", digits):
        raise BadRequest(f"Digits {digits[:40]!r} are not key presses", reason="invalid")
    speech = _field(form, "SpeechResult", required=False)
    item = _menu(config, digits)
    parts: list[str] = []
    if digits:
        parts.append(f"电话按键 {digits}" + (f"：{item.label}" if item else ""))
    if speech:
        parts.append(speech)
    text = "\n".join(parts) or "来电，未选择菜单"
    speech_id = hashlib.blake2b(speech.encode(), digest_size=4).hexdigest()
    channel_msg_id = f"{sid}:gather:{digits or '-'}:{speech_id}"
    account = config.line(called)
    meta: dict[str, str | int] = {"call_id": sid, "event": "gather"}
    confidence = form.get("Confidence")
    if speech and confidence:
        meta["speech_confidence"] = confidence[:16]
    return Envelope(
        id=message_id(Channel.PHONE, account, channel_msg_id),
        channel=Channel.PHONE,
        account=account,
        channel_msg_id=channel_msg_id,
        conversation_id=f"phone:{sid}",
        customer=caller_customer(caller, sid, salt),
        text=clip(text),
        received_at_ms=received_at_ms,
        entry=Entry(EntryKind.IVR, item.entry if item else (digits or "none")),
        hints=tuple(item.hints) if item else (),
        meta=meta,
    )


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How a call ended, as far as routing cares."""

    callback: bool
    text: str = ""


def _twilio_outcome(status: str, config: PhoneConfig) -> CallOutcome:
    rules = config.callback
    if status in rules.twilio_missed:
        return CallOutcome(True, rules.missed_text)
    if status in rules.twilio_abandoned:
        return CallOutcome(True, rules.abandoned_text)
    return CallOutcome(False)


def status_to_envelope(
    form: Mapping[str, str], config: PhoneConfig, received_at_ms: int, salt: str
) -> Envelope | None:
    """A status callback: an envelope with the call-back hint for missed or abandoned
    calls (no-answer, busy, failed, canceled), None for every other status."""
    sid, caller, called = twilio_call(form)
    status = _field(form, "CallStatus")
    if form.get("Direction", "inbound").startswith("outbound"):
        return None  # our own call-backs failing are the dialler's business
    outcome = _twilio_outcome(status, config)
    if not outcome.callback:
        return None
    channel_msg_id = f"{sid}:status:{status}"
    account = config.line(called)
    return Envelope(
        id=message_id(Channel.PHONE, account, channel_msg_id),
        channel=Channel.PHONE,
        account=account,
        channel_msg_id=channel_msg_id,
        conversation_id=f"phone:{sid}",
        customer=caller_customer(caller, sid, salt),
        text=outcome.text,
        received_at_ms=received_at_ms,
        entry=Entry(EntryKind.IVR, "none"),
        hints=(config.callback.hint,),
        meta={"call_id": sid, "event": "status", "call_status": status[:32]},
    )


# --- Tencent Cloud Contact Center ----------------------------------------------------


def _str(cdr: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = cdr.get(key)
    if value is None and not required:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"field {key!r} must be a non-empty string, got {value!r}"[:200],
                         reason="invalid")
    if len(value) > 256:
        raise BadRequest(f"field {key!r} is longer than 256 characters", reason="invalid")
    return value.strip()


def _int(cdr: Mapping[str, Any], key: str) -> int | None:
    value = cdr.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field {key!r} must be an integer, got {value!r}"[:200],
                         reason="invalid")
    return value


def _keys(cdr: Mapping[str, Any]) -> list[tuple[str, str]]:
    """IVR key presses with their labels, from IVRKeyPressedEx or IVRKeyPressed."""
    extended = cdr.get("IVRKeyPressedEx")
    if isinstance(extended, list) and extended:
        pairs = []
        for item in extended[:16]:
            if not isinstance(item, dict) or not isinstance(item.get("Key"), str):
                raise BadRequest("IVRKeyPressedEx items must be {\"Key\": str, \"Label\": str}",
                                 reason="invalid")
            label = item.get("Label")
            pairs.append((item["Key"][:16], label[:64] if isinstance(label, str) else ""))
        return pairs
    plain = cdr.get("IVRKeyPressed") or []
    if not isinstance(plain, list) or not all(isinstance(k, str) for k in plain):
        raise BadRequest("IVRKeyPressed must be a list of strings", reason="invalid")
    return [(k[:16], "") for k in plain[:16]]


def _tccc_outcome(cdr: Mapping[str, Any], config: PhoneConfig) -> CallOutcome:
    rules = config.callback
    status = _str(cdr, "EndStatusString")
    code = _int(cdr, "EndStatus")
    if status in rules.tccc_missed or (not status and code in rules.tccc_missed_codes):
        return CallOutcome(True, rules.missed_text)
    if status in rules.tccc_abandoned or (not status and code in rules.tccc_abandoned_codes):
        return CallOutcome(True, rules.abandoned_text)
    return CallOutcome(False)


def cdr_to_envelope(
    cdr: Any, config: PhoneConfig, received_at_ms: int, salt: str
) -> Envelope | None:
    """A TCCC phone CDR (``action=cdr``): an envelope with the call-back hint for an
    inbound call nobody answered; None for answered, outbound or self-service calls."""
    if not isinstance(cdr, dict):
        raise BadRequest("the CDR push must be a JSON object", reason="invalid")
    session = _str(cdr, "SessionId", required=True)
    if not _SID.match(session):
        raise BadRequest(f"SessionId {session[:40]!r} is not an id", reason="invalid")
    caller = _str(cdr, "Caller")  # empty for withheld numbers: a per-call customer
    callee = _str(cdr, "Callee")
    direction = _int(cdr, "Direction")
    if direction not in (0, 1):
        raise BadRequest(f"Direction must be 0 (inbound) or 1 (outbound), got {direction!r}",
                         reason="invalid")
    keys = _keys(cdr)
    outcome = _tccc_outcome(cdr, config)
    if direction == 1 or not outcome.callback:
        return None
    started = _int(cdr, "StartTimestamp")
    pressed = "".join(k for k, _ in keys)
    item = _menu(config, keys[0][0]) if keys else None
    labels = [label or (m.label if (m := _menu(config, k)) else "") for k, label in keys]
    ivr = "、".join(f"{k} {lb}".strip() for (k, _), lb in zip(keys, labels, strict=True))
    text = outcome.text + (f"（IVR 按键 {ivr}）" if ivr else "")
    app = _int(cdr, "SdkAppId")
    account = config.lines.get(callee) or (f"tccc-{app}" if app is not None else "tccc")
    channel_msg_id = f"tccc:{session}"
    hints = [config.callback.hint, *(item.hints if item else ())]
    meta: dict[str, str | int] = {"call_id": session, "event": "cdr"}
    if status := _str(cdr, "EndStatusString"):
        meta["end_status"] = status[:32]
    if skill_group := _str(cdr, "QueuedSkillGroupName"):
        meta["tccc_skill_group"] = skill_group[:64]
    return Envelope(
        id=message_id(Channel.PHONE, account, channel_msg_id),
        channel=Channel.PHONE,
        account=account,
        channel_msg_id=channel_msg_id,
        conversation_id=f"phone:tccc:{session}",
        customer=caller_customer(caller, session, salt),
        text=clip(text),
        received_at_ms=received_at_ms,
        sent_at_ms=started * 1000 if started and started > 0 else None,
        entry=Entry(EntryKind.IVR, item.entry if item else (pressed or "none")),
        hints=tuple(dict.fromkeys(hints)),
        meta=meta,
    )


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` body as (name, value) pairs, in order."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                         max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not a URL-encoded form: {exc}", reason="bad_form") from None


def first_values(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Name -> first value (Twilio sends each parameter once)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out
