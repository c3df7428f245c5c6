"""MIME parsing: charsets (gb2312 labels carrying GBK-only characters), RFC 2047,
HTML, attachments, threading and quote/signature stripping. Pure functions."""

from __future__ import annotations

import base64
import contextlib
from datetime import datetime, timedelta, timezone
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniroute.adapters.email.parse import (
    MalformedMail,
    decode_header_value,
    html_to_text,
    normalise_subject,
    parse_mail,
    strip_quoted,
    thread_root,
    to_envelope,
)
from omniroute.router.models import Channel
from omniroute.router.pii import mask_envelope


def rfc2047(text: str, label: str) -> str:
    """An encoded word whose *label* is ``label`` but whose bytes are GB 18030."""
    return f"=?{label}?B?{base64.b64encode(text.encode('gb18030')).decode()}?="


def gb_mail(subject: str, body: str, label: str = "gb2312", **headers: str) -> bytes:
    head = {
        "From": f"{rfc2047('张三', label)} <zhang.san@example.com>",
        "To": "kefu@shop.example",
        "Subject": rfc2047(subject, label),
        "Message-ID": "<m1@client.example>",
        "Date": "Tue, 24 Nov 2026 10:00:00 +0800",
        "MIME-Version": "1.0",
        "Content-Type": f'text/plain; charset="{label}"',
        "Content-Transfer-Encoding": "base64",
    }
    head.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = [f"{k}: {v}" for k, v in head.items()]
    payload = base64.encodebytes(body.encode("gb18030")).decode()
    return ("\r\n".join(lines) + "\r\n\r\n" + payload).encode("ascii")


@pytest.mark.parametrize("label", ["gb2312", "GBK", "gb_2312-80", "x-gbk"])
def test_gbk_only_characters_in_gb2312_labelled_mail_arrive_intact(label: str) -> None:
    mail = parse_mail(gb_mail("朱镕基", "请问朱镕基的书什么时候发货？堃喆", label))
    assert mail.subject == "朱镕基"
    assert mail.body == "请问朱镕基的书什么时候发货？堃喆"
    assert mail.from_name == "张三"
    assert mail.from_address == "zhang.san@example.com"
    sent = datetime(2026, 11, 24, 10, tzinfo=timezone(timedelta(hours=8)))
    assert mail.sent_at_ms == int(sent.timestamp() * 1000)


def test_rfc2047_mixed_words_and_plain_text() -> None:
    value = f"Re: {rfc2047('订单', 'gb2312')} {rfc2047('镕', 'gbk')} 123"
    assert decode_header_value(value) == "Re: 订单镕 123"


def test_raw_8bit_utf8_and_gbk_headers_are_decoded() -> None:
    raw = (
        "Subject: 退款\r\nFrom: a@b.example\r\nMessage-ID: <x@y>\r\n\r\n你好\r\n".encode()
    )
    mail = parse_mail(raw)
    assert (mail.subject, mail.body) == ("退款", "你好")
    raw_gbk = "Subject: 镕\r\nFrom: a@b.example\r\n\r\n".encode("gb18030") + "好".encode("gb18030")
    mail = parse_mail(raw_gbk)
    assert mail.subject == "镕"
    assert mail.body == "好"


def test_multipart_prefers_plain_and_keeps_attachment_metadata_only() -> None:
    msg = MIMEMultipart("mixed")
    msg["From"] = "buyer@example.com"
    msg["Subject"] = "invoice"
    msg["Message-ID"] = "<inv-1@example.com>"
    alt = MIMEMultipart("alternative")
    alt.attach(MIMEText("plain body", "plain", "utf-8"))
    alt.attach(MIMEText("<p>html body</p>", "html", "utf-8"))
    msg.attach(alt)
    pdf = MIMEApplication(b"%PDF" + b"0" * 996, "pdf")
    pdf.add_header("Content-Disposition", "attachment", filename=rfc2047("发票.pdf", "gb2312"))
    msg.attach(pdf)
    img = MIMEApplication(b"\x89PNG" + b"1" * 60, "png")
    img.replace_header("Content-Type", "image/png")
    img.add_header("Content-Disposition", "inline", filename="photo.png")
    msg.attach(img)
    mail = parse_mail(msg.as_bytes())
    assert mail.body == "plain body"
    assert [(a.kind, a.name, a.size_bytes) for a in mail.attachments] == [
        ("file", "发票.pdf", 1000),
        ("image", "photo.png", 64),
    ]
    assert all(a.ref.startswith("mid:inv-1@example.com#part") for a in mail.attachments)


def test_html_only_body_becomes_text_without_quoted_blockquote() -> None:
    html = (
        "<html><head><style>p{}</style><title>t</title></head><body>"
        "<p>您好，&nbsp;订单<b>未到</b></p><div>第二行<br>第三行</div>"
        "<blockquote>旧邮件内容</blockquote><script>alert(1)</script></body></html>"
    )
    assert html_to_text(html) == "您好， 订单未到\n\n第二行\n第三行"
    msg = MIMEText(html, "html", "gb2312")
    msg["From"] = "a@b.example"
    mail = parse_mail(msg.as_bytes())
    assert mail.body == "您好， 订单未到\n\n第二行\n第三行"
    assert mail.had_html_only


def test_broken_html_keeps_what_it_can() -> None:
    assert "hello" in html_to_text("<div><p>hello<<<</b></i>&#xZZ;")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("新问题\n\nOn Mon, 23 Nov 2026 at 10:00, Shop <kefu@shop.example> wrote:\n> old",
         "新问题"),
        ("新问题\nOn Mon, 23 Nov 2026 at 10:00, Shop Support\n<kefu@shop.example> wrote:\n> x",
         "新问题"),
        ("还没收到\n\n在 2026年11月23日 10:00，客服 <kefu@shop.example> 写道：\n> 已发货",
         "还没收到"),
        ("好的\n\n-----原始邮件-----\n发件人: 客服\n主题: 订单", "好的"),
        ("好的\n------------------ 原始邮件 ------------------\n发件人: x", "好的"),
        ("收到\n\n发件人: 客服 <kefu@shop.example>\n发送时间: 2026年11月23日 10:00\n收件人: 我\n"
         "主题: 回复: 订单\n\n旧内容", "收到"),
        ("Thanks\n\nFrom: Shop\nSent: Monday\nTo: me\nSubject: order\n\nold", "Thanks"),
        ("请退款\n-- \n张三\n13800000000", "请退款"),
        ("请退款\n\n发自我的iPhone", "请退款"),
        ("第一行\n> 引用\n第二行", "第一行\n第二行"),
        ("发件人：我自己填写的地址有误，请修改", "发件人：我自己填写的地址有误，请修改"),
    ],
)
def test_strip_quoted(text: str, expected: str) -> None:
    assert strip_quoted(text) == expected


@given(st.text(max_size=500))
@settings(max_examples=200, deadline=None)
def test_strip_quoted_never_raises_and_never_grows(text: str) -> None:
    assert len(strip_quoted(text)) <= len(text)


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_parse_mail_of_random_bytes_raises_only_malformed(raw: bytes) -> None:
    with contextlib.suppress(MalformedMail):
        parse_mail(raw)


def test_thread_root_is_the_head_of_references() -> None:
    assert thread_root("c@x", "<b@x>", "<a@x> <b@x>") == "a@x"
    assert thread_root("b@x", "<a@x>", "") == "a@x"
    assert thread_root("a@x", "", "") == "a@x"
    assert thread_root("c@x", "", "a@x\r\n b@x") == "a@x"  # ids without brackets


def test_reply_chain_shares_one_conversation() -> None:
    first = gb_mail("订单问题", "还没到")
    reply = gb_mail("回复: 订单问题", "还是没到\n\n在 昨天，客服 写道：\n> 已发货",
                    Message_ID="<m3@client.example>", In_Reply_To="<m2@shop.example>",
                    References="<m1@client.example> <m2@shop.example>")
    envs = [to_envelope(parse_mail(raw), "kefu@shop.example", 1) for raw in (first, reply)]
    assert envs[0].conversation_id == envs[1].conversation_id == "email:m1@client.example"
    assert envs[0].id != envs[1].id
    assert envs[1].text == "订单问题\n\n还是没到"  # reply prefix and quote stripped
    assert envs[1].channel is Channel.EMAIL
    assert "zhang" not in envs[1].customer.id


def test_attachment_names_are_masked() -> None:
    msg = MIMEMultipart()
    msg["From"] = "a@b.example"
    msg["Subject"] = "证件"
    att = MIMEApplication(b"x", "jpeg")
    att.add_header("Content-Disposition", "attachment", filename="13812345678.jpg")
    msg.attach(att)
    # by the producer's one masking step, like the text (router.pii.mask_envelope)
    env, _ = mask_envelope(to_envelope(parse_mail(msg.as_bytes()), "kefu@shop.example", 1))
    assert [a.name for a in env.attachments] == ["138****5678.jpg"]


def test_missing_message_id_is_a_stable_digest() -> None:
    raw = b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n"
    assert parse_mail(raw).message_id == parse_mail(raw).message_id
    assert parse_mail(raw).message_id.endswith("@omniroute.invalid")


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\r\n\r\njust a body"])
def test_not_a_mail_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMail):
        parse_mail(raw)


def test_no_sender_and_no_content_are_malformed() -> None:
    with pytest.raises(MalformedMail, match="no sender"):
        to_envelope(parse_mail(b"Subject: x\r\n\r\nbody"), "kefu@shop.example", 1)
    with pytest.raises(MalformedMail, match="no text"):
        to_envelope(parse_mail(b"From: a@b.example\r\n\r\n\r\n"), "kefu@shop.example", 1)


def test_auto_replies_are_flagged() -> None:
    raw = b"From: a@b.example\r\nAuto-Submitted: auto-replied\r\nSubject: OOO\r\n\r\naway"
    assert parse_mail(raw).auto_submitted
    assert not parse_mail(b"From: a@b.example\r\nAuto-Submitted: no\r\n\r\nx").auto_submitted


def test_header_fields_with_raw_8bit_bytes_do_not_break_parsing() -> None:
    """Found by tests/test_ingest_fuzz.py: such fields came back as Header objects and the
    parser called str methods on them (SMTP answered 451 and the MTA retried forever)."""
    flagged = parse_mail(b"From: a@b.example\r\nAuto-Submitted:\x80\r\n\r\nx")
    assert flagged.auto_submitted  # present and not "no"
    raw = (b"From: a@b.example\r\nPrecedence: bu\xe9lk\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b"--b\r\nContent-Type: image/png\r\nContent-Disposition: at\xe9tachment\r\n\r\n"
           b"png\r\n--b--\r\n")
    mail = parse_mail(raw)
    assert not mail.auto_submitted
    assert mail.body == "hello"
    assert [a.kind for a in mail.attachments] == ["image"]


def test_normalise_subject() -> None:
    assert normalise_subject("Re: 回复：Fwd: RE[2]: 订单") == "订单"
