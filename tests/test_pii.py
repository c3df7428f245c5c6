"""PII masking: checksums decide, recognisable forms are kept, other digits stay."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omniroute.router.exceptions import ConfigError
from omniroute.router.models import (
    Attachment,
    Channel,
    Customer,
    Entry,
    EntryKind,
    Envelope,
    Order,
)
from omniroute.router.pii import (
    bank_card_valid,
    id_card_shaped,
    id_card_valid,
    load_pii_policy,
    mask_envelope,
    mask_pii,
)

VALID_ID = "11010519491231002X"  # the GB 11643 example number
VALID_ID_DIGIT = "110101199003074477"
VALID_CARD = "6222021234567890128"  # 19 digits, Luhn-valid (UnionPay prefix)
VISA_TEST = "4111111111111111"


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if bank_card_valid(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


def _id_complete(first17: str) -> str:
    for c in "0123456789X":
        if id_card_valid(first17 + c):
            return first17 + c
    raise AssertionError("unreachable")


def test_checksum_helpers() -> None:
    assert id_card_valid(VALID_ID)
    assert id_card_valid(VALID_ID.lower())
    assert id_card_valid(VALID_ID_DIGIT)
    assert not id_card_valid("110105194912310021")
    assert bank_card_valid(VISA_TEST)
    assert bank_card_valid(VALID_CARD)
    assert not bank_card_valid("4111111111111112")
    assert not bank_card_valid("411111111111")  # 12 digits: too short


def test_id_card_masked_with_valid_checksum() -> None:
    r = mask_pii(f"身份证{VALID_ID}谢谢")
    assert r.text == "身份证110***********002X谢谢"
    assert r.counts == {"id_card": 1}


def test_id_card_with_a_wrong_check_digit_is_masked_too() -> None:
    bad = "110105194912310021"  # wrong check digit, not Luhn-valid either
    assert not id_card_valid(bad)
    assert not bank_card_valid(bad)
    r = mask_pii(f"身份证{bad}，麻烦查一下")
    assert r.text == "身份证110***********0021，麻烦查一下"
    assert r.counts == {"id_card": 1}


def test_old_15_digit_id_card_masked() -> None:
    r = mask_pii("老身份证号110105491231002办的卡")
    assert r.text == "老身份证号110********1002办的卡"
    assert r.counts == {"id_card": 1}


def test_id_shaped_numbers_that_are_not_ids_stay() -> None:
    # no province starts with 00 or 99; month 13 is no birth date; 16 digits is no ID
    for text in ("单号001051949123100211", "单号991051949123100211", "单号110105491331002",
                 "单号1101054912310021"):
        assert mask_pii(text).counts == {}, text


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("010-88886666", "010-****6666"),
        ("01088886666", "010-****6666"),
        ("(0755)2345678", "(0755)****5678"),
        ("0571 8888 6666", "0571 ****6666"),
        ("021-6123-4567", "021-****4567"),
    ],
)
def test_landlines_masked(raw: str, masked: str) -> None:
    r = mask_pii(f"座机{raw}，白天打")
    assert r.text == f"座机{masked}，白天打"
    assert r.counts == {"landline": 1}


def test_not_a_landline() -> None:
    # a local number never starts with 0 or 1; 400/800 numbers are companies', not people's
    for text in ("010-08886666", "010-18886666", "4008-123-456", "客服 400 820 8820"):
        assert mask_pii(text).counts == {}, text


def test_id_card_lowercase_x_normalised() -> None:
    r = mask_pii(VALID_ID.lower())
    assert r.text == "110***********002X"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (VISA_TEST, "4111 **** **** 1111"),
        ("4111 1111 1111 1111", "4111 **** **** 1111"),
        ("4111-1111-1111-1111", "4111 **** **** 1111"),
        (VALID_CARD, "6222 **** **** 0128"),
    ],
)
def test_bank_cards_masked(raw: str, masked: str) -> None:
    r = mask_pii(f"卡号{raw}。")
    assert r.text == f"卡号{masked}。"
    assert r.counts == {"bank_card": 1}


def test_order_numbers_failing_checksums_stay() -> None:
    order = "4111111111111112"  # Luhn fails
    tracking = "SF1234567890123"  # letters in front, 13 digits, first digit 1 (not an issuer)
    text = f"订单号{order}，运单{tracking}，金额 129.00 元"
    r = mask_pii(text)
    assert r.text == text
    assert r.counts == {}


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("13812345678", "138****5678"),
        ("138 1234 5678", "138****5678"),
        ("138-1234-5678", "138****5678"),
        ("+86 13812345678", "+86 138****5678"),
        ("+86-199-0000-1111", "+86-199****1111"),
    ],
)
def test_mobiles_masked(raw: str, masked: str) -> None:
    r = mask_pii(f"电话：{raw}，尽快回电")
    assert r.text == f"电话：{masked}，尽快回电"
    assert r.counts == {"phone": 1}


def test_not_a_mobile() -> None:
    for text in ("12812345678", "138123456789", "call 1381234567"):
        assert mask_pii(text).counts == {}, text


def test_email_masked() -> None:
    r = mask_pii("mail alice.wang@example.com or bob@mail.example.cn")
    assert r.text == "mail a***@example.com or b***@mail.example.cn"
    assert r.counts == {"email": 2}


def test_everything_at_once_and_meta() -> None:
    r = mask_pii(f"{VALID_ID} {VISA_TEST} 13812345678 x@y.com 13912345678")
    assert r.counts == {"id_card": 1, "bank_card": 1, "phone": 2, "email": 1}
    assert r.total == 5
    assert r.meta()["pii_masked_phone"] == 2
    for secret in (VALID_ID, VISA_TEST, "13812345678", "x@y.com"):
        assert secret not in r.text


def test_mask_envelope_masks_text_and_handle() -> None:
    env = Envelope(
        id="e", channel=Channel.LIVESTREAM, account="r", channel_msg_id="m",
        conversation_id="c", customer=Customer("u", handle="小王13812345678"),
        text="我的卡 4111111111111111", received_at_ms=1,
    )
    masked, result = mask_envelope(env)
    assert masked.text == "我的卡 4111 **** **** 1111"
    assert masked.customer.handle == "小王138****5678"
    assert masked.meta == {"pii_masked_bank_card": 1, "pii_masked_phone": 1}
    assert result.total == 2
    same, none = mask_envelope(masked)
    assert same is masked
    assert none.total == 0


def test_mask_envelope_masks_every_free_text_field_and_no_id() -> None:
    """Attachment names, hints and meta strings are masked like the text (issue 11,
    item 4: the generic API let them through); id fields and refs stay as sent."""
    env = Envelope(
        id="app-1", channel=Channel.APP, account="shop", channel_msg_id="m-1",
        conversation_id="bearer:ab:app:c-1", customer=Customer("c-1", tier="vip"),
        text="见附件", received_at_ms=1,
        attachments=(Attachment("file", "s3://b/k-13912345678", f"身份证{VALID_ID}.jpg"),
                     Attachment("image", "media-1")),
        entry=Entry(EntryKind.ORDER, "o-1"), order=Order("o-1", 9.0),
        hints=("1", f"卡{VALID_CARD}"),
        meta={"source": "bearer:13912345678abcd", "note": "回电13912345678",
              "in_reply_to": "<x.y@mail.example>", "call_id": "CA13912345678",
              "attachments_total": 3},
    )
    masked, result = mask_envelope(env)
    assert [a.name for a in masked.attachments] == ["身份证110***********002X.jpg", None]
    assert [a.ref for a in masked.attachments] == ["s3://b/k-13912345678", "media-1"]
    assert masked.hints == ("1", "卡6222 **** **** 0128")
    assert masked.meta == {
        "source": "bearer:13912345678abcd", "note": "回电139****5678",
        "in_reply_to": "<x.y@mail.example>", "call_id": "CA13912345678",
        "attachments_total": 3,
        "pii_masked_id_card": 1, "pii_masked_bank_card": 1, "pii_masked_phone": 1,
    }
    assert result.counts == {"id_card": 1, "bank_card": 1, "phone": 1}
    ids = ("id", "channel", "account", "channel_msg_id", "conversation_id", "customer",
           "text", "entry", "order", "received_at_ms")
    assert all(getattr(masked, f) == getattr(env, f) for f in ids)
    again, none = mask_envelope(masked)
    assert again is masked
    assert none.total == 0


@given(st.from_regex(r"\A[1-6][0-9]{12,17}\Z"))
def test_every_luhn_valid_card_is_masked(prefix: str) -> None:
    card = _luhn_complete(prefix)
    r = mask_pii(f"卡号{card}")
    if card[0] in "3456":
        assert card not in r.text
        assert r.total == 1
    elif r.counts:  # not an issuer prefix: only an ID-card number (15 or 18) is masked
        assert r.counts == {"id_card": 1}
        assert id_card_valid(card) or id_card_shaped(card) or len(card) == 15
    else:
        assert r.text == f"卡号{card}"


@given(
    st.from_regex(r"\A[1-9][0-9]{5}\Z"),
    # only the birth dates an ID card can hold (18xx-20xx): every example reaches the assertion
    st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(2099, 12, 31)),
    st.from_regex(r"\A[0-9]{3}\Z"),
)
def test_every_valid_id_card_is_masked(region: str, born: dt.date, seq: str) -> None:
    number = _id_complete(f"{region}{born:%Y%m%d}{seq}")
    r = mask_pii(f"身份证号{number}")
    assert r.text == f"身份证号{number[:3]}{'*' * 11}{number[-4:]}"
    assert r.counts == {"id_card": 1}


@given(st.text(max_size=300))
def test_never_raises_and_idempotent(text: str) -> None:
    once = mask_pii(text)
    assert mask_pii(once.text).text == once.text


def test_unmasked_access_policy() -> None:
    assert load_pii_policy({}).unmasked_access == "none"
    assert load_pii_policy({"pii": {"unmasked_access": "none"}}).unmasked_access == "none"
    with pytest.raises(ConfigError, match="'vault' is not supported"):
        load_pii_policy({"pii": {"unmasked_access": "vault"}}, "channels.yaml")
