"""Masking of personal data in message text before it is produced to Kafka.

What is masked (each kind has a count in :class:`MaskResult` and in
``omni_adapter_pii_masked_total{kind}``):

========== ===================================================== =======================
kind       recognised when                                        masked as
========== ===================================================== =======================
id_card    18 characters: region, a real birth date (18xx-20xx),  ``110***********123X``
           sequence, ISO 7064 MOD 11-2 check character (``X``
           allowed, either case); the same shape with a wrong
           check character when the region starts with a
           province code (a mistyped number is still someone's);
           15-digit first-generation cards: province code, region, ``110********1002``
           YYMMDD birth date, sequence
bank_card  13-19 digits, first digit 3-6 (ISO/IEC 7812 banking    ``6222 **** **** 1234``
           and financial issuers), Luhn-valid; plain or grouped
           by four with one space or dash
phone      mainland mobile ``1[3-9]x xxxx xxxx``, optional        ``138****5678``
           ``+86`` / ``0086`` / ``86`` prefix, spaces or dashes   (prefix kept)
landline   area code ``010``, ``02x`` or ``0xxx`` (optionally in      ``010-****5678``
           parentheses), then a 7-8 digit local number starting  (area code and the
           2-9; plain, or with one space or dash after the area   last four kept)
           code (and inside the local number)
email      ``local@domain.tld``                                   ``a***@example.com``
========== ===================================================== =======================

Bank-card-length digit runs that fail the Luhn check (order numbers, tracking
numbers) stay as they are, so agents can still read them. Kinds are checked in
the order of the table; a masked value is never matched again.

Where it runs: :meth:`router.producer.EnvelopeProducer.send_envelopes` masks
every envelope before it goes to Kafka, whichever ingest path built it, so no
path can skip it (the channel adapters may mask earlier, e.g. to keep chatter
records clean; masking is idempotent, a second pass finds nothing new). What it
masks is every free-text field of the envelope: the text, the customer's display
handle, attachment names, hints and ``meta`` strings (:func:`mask_envelope` says
which id fields are left alone, and why).

Unmasked access (``pii.unmasked_access`` in ``config/channels.yaml``): the only
supported value is ``none``: the original values never leave the adapter
process; they are not logged, not produced, not stored. An agent who needs a
full number asks the customer or looks it up in the system of record (the order
or CRM system, which has its own access control). This is deliberate: a
"vault" of originals in Redis would make Redis a store of personal data that
needs its own access control, audit and deletion process.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .exceptions import ConfigError
from .models import Customer, Envelope

__all__ = [
    "ID_META_KEYS",
    "PII_KINDS",
    "MaskResult",
    "PiiPolicy",
    "UnmaskedAccess",
    "bank_card_valid",
    "id_card_shaped",
    "id_card_valid",
    "load_pii_policy",
    "mask_envelope",
    "mask_pii",
]

#: Every kind that ``mask_pii`` counts (metric label ``kind``).
PII_KINDS: Final = ("id_card", "bank_card", "phone", "landline", "email")

#: Who may see unmasked values: nobody (they never leave the adapter).
UnmaskedAccess = Literal["none"]


class PiiPolicy(BaseModel):
    """The ``pii:`` section of ``config/channels.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unmasked_access: UnmaskedAccess = "none"


def load_pii_policy(data: Mapping[str, Any], source: str = "channels.yaml") -> PiiPolicy:
    """Validate the ``pii:`` section; anything but ``unmasked_access: none`` is refused."""
    section = data.get("pii") or {}
    try:
        return PiiPolicy.model_validate(section)
    except ValidationError as exc:
        value = section.get("unmasked_access") if isinstance(section, dict) else section
        raise ConfigError(
            f"{source}: pii.unmasked_access = {value!r} is not supported; the only value is "
            "'none' (unmasked values never leave the adapter, see adapters/pii.py)"
        ) from exc


@dataclass(frozen=True, slots=True)
class MaskResult:
    """Masked text and how many values of each kind were masked."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of values masked, all kinds together."""
        return sum(self.counts.values())

    def meta(self) -> dict[str, int]:
        """Counts as envelope meta fields, e.g. ``{"pii_masked_phone": 1}``."""
        return {f"pii_masked_{kind}": n for kind, n in self.counts.items() if n}


# --- checksums -----------------------------------------------------------------

_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK: Final = "10X98765432"


def id_card_valid(number: str) -> bool:
    """True if ``number`` is 18 characters with a valid ISO 7064 MOD 11-2 check character."""
    if len(number) != 18 or not number[:17].isascii() or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


#: First two digits of the mainland provinces, Taiwan, Hong Kong, Macao (GB/T 2260).
_PROVINCES: Final = r"(?:1[1-5]|2[1-3]|3[1-7]|4[1-6]|5[0-4]|6[1-5]|71|8[1-3])"
_ID18_SHAPE: Final = re.compile(
    _PROVINCES + r"\d{4}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
)


def id_card_shaped(number: str) -> bool:
    """True if ``number`` looks like an 18-character ID card (province code, birth date),
    whatever its check character: masked too, a mistyped number is still someone's."""
    return len(number) == 18 and _ID18_SHAPE.fullmatch(number) is not None


def bank_card_valid(digits: str) -> bool:
    """True if ``digits`` (digits only, 13-19 of them) passes the Luhn check."""
    if not 13 <= len(digits) <= 19 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# --- patterns ------------------------------------------------------------------
# Boundaries are "not a digit" rather than \b: Chinese characters are word
# characters, and "手机13812345678" must still be found.

_EMAIL: Final = re.compile(
    r"(?<![A-Za-z0-9._%+\-])([A-Za-z0-9][A-Za-z0-9._%+\-]{0,63})@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![A-Za-z0-9\-])"
)
_ID_CARD: Final = re.compile(
    r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
    r"(?![\dXx])"
)
_OLD_ID_CARD: Final = re.compile(
    r"(?<!\d)" + _PROVINCES + r"\d{6}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}(?![\dXx])"
)
_BANK_CARD: Final = re.compile(
    r"(?<!\d)(?:[3-6]\d{12,18}|[3-6]\d{3}(?P<s>[ \-])\d{4}(?:(?P=s)\d{4}){1,2}(?:(?P=s)\d{1,3})?)"
    r"(?!\d)"
)
_PHONE: Final = re.compile(
    r"(?<![\d+])(?P<prefix>(?:\+86|0086|86)[ \-]?)?(?P<a>1[3-9]\d)[ \-]?(?P<b>\d{4})[ \-]?"
    r"(?P<c>\d{4})(?!\d)"
)


_LANDLINE: Final = re.compile(
    r"(?<![\d+])(?P<area>0(?:10|2\d|[3-9]\d{2})|\(0(?:10|2\d|[3-9]\d{2})\))(?P<sep>[ \-]?)"
    r"(?P<a>[2-9]\d{2,3})[ \-]?(?P<b>\d{4})(?!\d)"
)


def _mask_email(m: re.Match[str]) -> str:
    return f"{m.group(1)[0]}***@{m.group(2)}"


def _mask_id_card(m: re.Match[str]) -> str | None:
    value = m.group(0)
    if not (id_card_valid(value) or id_card_shaped(value)):
        return None
    return value[:3] + "*" * 11 + value[-4:].upper()


def _mask_old_id_card(m: re.Match[str]) -> str:
    value = m.group(0)
    return value[:3] + "*" * 8 + value[-4:]


def _mask_bank_card(m: re.Match[str]) -> str | None:
    digits = re.sub(r"[ \-]", "", m.group(0))
    if not bank_card_valid(digits):
        return None
    return f"{digits[:4]} **** **** {digits[-4:]}"


def _mask_phone(m: re.Match[str]) -> str:
    return f"{m.group('prefix') or ''}{m.group('a')}****{m.group('c')}"


def _mask_landline(m: re.Match[str]) -> str:
    area = m.group("area")
    sep = m.group("sep") or ("" if area.startswith("(") else "-")
    return f"{area}{sep}****{m.group('b')}"


def _sub(
    pattern: re.Pattern[str], masker: Callable[[re.Match[str]], str | None], text: str
) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        masked = masker(m)
        if masked is None:
            return m.group(0)
        count += 1
        return masked

    return pattern.sub(repl, text), count


_PASSES: Final[tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str | None]], ...]] = (
    ("email", _EMAIL, _mask_email),
    ("id_card", _ID_CARD, _mask_id_card),
    ("id_card", _OLD_ID_CARD, _mask_old_id_card),
    ("bank_card", _BANK_CARD, _mask_bank_card),
    ("phone", _PHONE, _mask_phone),
    ("landline", _LANDLINE, _mask_landline),
)


def mask_pii(text: str) -> MaskResult:
    """Mask ID-card and bank-card numbers, mobile and landline numbers, e-mail addresses.

    Args:
        text: Free text from a customer (any length, any script).

    Returns:
        The masked text and the number of values masked per kind (kinds with no
        match are absent from ``counts``).
    """
    counts: dict[str, int] = {}
    # Fast path: every kind contains a digit or an "@".
    if "@" not in text and not any(ch.isdigit() for ch in text):
        return MaskResult(text, counts)
    for kind, pattern, masker in _PASSES:
        text, n = _sub(pattern, masker, text)
        if n:
            counts[kind] = counts.get(kind, 0) + n
    return MaskResult(text, counts)


#: ``meta`` keys whose values are identifiers or references that an adapter copies
#: from the channel or its own configuration, not text a customer wrote: the
#: credential namespace (``source``), a call id, an e-mail ``In-Reply-To`` message id,
#: the receiving mailboxes and official account, a picture URL. They are left alone
#: like the envelope's id fields (a masked one would no longer match what it names,
#: and the patterns do match inside them: a Message-ID looks like an e-mail address,
#: a hex call id can hold a mobile-shaped digit run). Every other string value is masked.
ID_META_KEYS: Final = frozenset(
    {"source", "call_id", "in_reply_to", "mailboxes", "to_user", "pic_url"}
)


def mask_envelope(env: Envelope) -> tuple[Envelope, MaskResult]:
    """Mask every free-text field of ``env``; counts go to ``meta``.

    Masked: the text, the customer's display handle, attachment names, hints and the
    string values of ``meta`` (except :data:`ID_META_KEYS`); all of them can carry what
    a customer or a caller of the generic API typed ("13812345678身份证.jpg").

    Not masked: the id fields (``id``, ``channel_msg_id``, ``conversation_id``,
    ``account``, ``customer.id``, ``customer.tier``, ``entry.id``, ``order.id``) and
    attachment ``ref``\\ s. They are keys the router, Redis and the agents' systems join
    on (dedupe, sticky routing, tiers, SLA state, fetching the attachment), so a
    rewritten one would stop matching; the channel adapters derive them from opaque
    channel ids or hash them (a phone number becomes ``phone:<digest>``), and callers of
    the generic API are told to send opaque ids (README, "Personal data").

    Returns the new envelope (``env`` itself when nothing was masked) and the combined
    counts (for the metrics). Idempotent: a second pass finds nothing new.
    """
    counts: dict[str, int] = {}

    def mask(value: str) -> str:
        result = mask_pii(value)
        for kind, n in result.counts.items():
            counts[kind] = counts.get(kind, 0) + n
        return result.text

    text = mask(env.text)
    customer = env.customer
    if customer.handle:
        handle = mask(customer.handle)
        if handle != customer.handle:
            customer = Customer(customer.id, handle, customer.tier)
    attachments = tuple(
        dataclasses.replace(a, name=mask(a.name)) if a.name else a for a in env.attachments
    )
    hints = tuple(mask(h) for h in env.hints)
    meta: dict[str, str | int] = {
        k: mask(v) if isinstance(v, str) and k not in ID_META_KEYS else v
        for k, v in env.meta.items()
    }
    result = MaskResult(text, counts)
    if not counts:
        return env, result
    meta.update(result.meta())
    masked = dataclasses.replace(
        env, text=text, customer=customer, attachments=attachments, hints=hints, meta=meta
    )
    return masked, result
