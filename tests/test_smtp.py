"""Inbound SMTP end to end: a real smtplib client, the real broker and Redis.

Every mail goes through aiosmtpd on a free loopback port; what reaches
omni.inbound is read back with a plain aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
import time
from collections.abc import AsyncIterator, Callable
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.adapters.email import SmtpServer
from omniroute.embedded import free_port
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import EmailSettings, Settings

pytestmark = pytest.mark.integration

T = TypeVar("T")
MAILBOXES = "kefu@shop.example,vip@shop.example,sales@shop.example,ops@shop.example"
MAX_BYTES = 64 * 1024


def email_settings(**extra: Any) -> EmailSettings:
    return EmailSettings.model_validate({
        "OMNI_EMAIL_DOMAINS": "shop.example,Shop2.example",
        "OMNI_EMAIL_MAILBOXES": MAILBOXES,
        "OMNI_SMTP_PORT": 0,
        "OMNI_SMTP_MAX_MESSAGE_BYTES": MAX_BYTES,
        "OMNI_SMTP_MAX_RECIPIENTS": 3,
        "OMNI_CUSTOMER_ID_SALT": "test-salt",
        **extra,
    })


class Edge:
    """A running SMTP server and what it is wired to."""

    def __init__(self, server: SmtpServer, ctx: HttpContext) -> None:
        self.server = server
        self.ctx = ctx

    def metric(self, name: str, **labels: str) -> float:
        value = self.ctx.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    async def client(self, fn: Callable[[smtplib.SMTP], T]) -> T:
        """Run ``fn`` with a connected blocking smtplib client in a thread."""

        def run() -> T:
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=15) as smtp:
                smtp.ehlo("client.example")
                return fn(smtp)

        return await asyncio.to_thread(run)

    async def send(self, raw: bytes, to: list[str], sender: str = "buyer@example.com") -> Any:
        # smtplib sends bytes as they are; the wire wants CRLF (the email package writes LF).
        wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return await self.client(lambda s: s.sendmail(sender, to, wire))


async def build_edge(settings: Settings, redis: Redis | None, **extra: Any) -> tuple[
    SmtpServer, EnvelopeProducer
]:
    producer = EnvelopeProducer(settings)
    ctx = HttpContext(
        settings=settings, sink=producer, metrics=AdapterMetrics(CollectorRegistry()), redis=redis
    )
    return SmtpServer(ctx, email_settings(**extra)), producer


@pytest.fixture
async def edge(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    server, producer = await build_edge(topics_ready, aredis)
    async with producer, server:
        yield Edge(server, server._ctx)


async def consume(settings: Settings, until: Callable[[list[Envelope]], bool],
                  timeout_s: float = 15.0) -> list[tuple[bytes, Envelope]]:
    """Read omni.inbound from the start until ``until(envelopes)`` or the deadline."""
    consumer = AIOKafkaConsumer(
        settings.topic(topics.INBOUND), bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    got: list[tuple[bytes, Envelope]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                got.extend((r.key, Envelope.from_json(r.value)) for r in records)
            if until([e for _, e in got]):
                return got
    finally:
        await consumer.stop()
    raise AssertionError(f"condition not met within {timeout_s} s; got {got!r}")


def word(text: str, label: str) -> str:
    return f"=?{label}?B?{base64.b64encode(text.encode('gb18030')).decode()}?="


def gb_multipart(label: str, msg_id: str, body: str, **headers: str) -> bytes:
    msg = MIMEMultipart("mixed")
    msg["From"] = f"{word('朱先生', label)} <zhu@example.com>"
    msg["To"] = "kefu@shop.example"
    msg["Subject"] = word("朱镕基", label)
    msg["Message-ID"] = msg_id
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    alt = MIMEMultipart("alternative")
    plain = MIMEText("", "plain")
    plain.set_payload(base64.encodebytes(body.encode("gb18030")).decode())
    plain.replace_header("Content-Type", f'text/plain; charset="{label}"')
    plain.replace_header("Content-Transfer-Encoding", "base64")
    alt.attach(plain)
    alt.attach(MIMEText(f"<p>{body}</p>", "html", "utf-8"))
    msg.attach(alt)
    att = MIMEApplication(b"x" * 321, "octet-stream")
    att.add_header("Content-Disposition", "attachment", filename=word("订单截图.png", label))
    msg.attach(att)
    return msg.as_bytes()


async def test_gb2312_and_gbk_multipart_mail_arrives_intact(edge: Edge,
                                                            topics_ready: Settings) -> None:
    body = "我买的《朱镕基讲话实录》还没到，手机13812345678，请尽快处理。"
    refused = await edge.send(gb_multipart("gb2312", "<gb1@example.com>", body),
                              ["kefu@shop.example"])
    assert refused == {}
    await edge.send(gb_multipart("gbk", "<gbk1@example.com>", "镕字测试"), ["VIP@Shop.example"])
    got = await consume(topics_ready, lambda envs: len(envs) >= 2)
    by_id = {e.channel_msg_id: (k, e) for k, e in got}
    key, env = by_id["gb1@example.com"]
    assert env.text == "朱镕基\n\n我买的《朱镕基讲话实录》还没到，手机138****5678，请尽快处理。"
    assert env.account == "kefu@shop.example"
    assert env.conversation_id == "email:gb1@example.com"
    assert key == env.conversation_id.encode()
    assert env.customer.id.startswith("email:")
    assert "zhu" not in env.customer.id
    assert env.customer.handle == "朱先生 <z***@example.com>"
    assert [(a.kind, a.name, a.size_bytes) for a in env.attachments] == [
        ("file", "订单截图.png", 321)
    ]
    assert env.meta.get("pii_masked_phone") == 1
    _, env2 = by_id["gbk1@example.com"]
    assert env2.text == "朱镕基\n\n镕字测试"
    assert env2.account == "vip@shop.example"
    assert edge.metric("omni_adapter_accepted_total", channel="email",
                       account="kefu@shop.example") == 1
    assert edge.metric("omni_adapter_pii_masked_total", channel="email", kind="phone") == 1


async def test_reply_chain_is_one_conversation_and_quotes_are_stripped(
    edge: Edge, topics_ready: Settings
) -> None:
    first = gb_multipart("gb2312", "<t1@example.com>", "快递三天没动了")
    reply = MIMEText(
        "还是没动，请帮我催一下。\n\n"
        "在 2026年11月24日 10:00，客服 <kefu@shop.example> 写道：\n> 已为您催促快递\n",
        "plain", "utf-8",
    )
    reply["From"] = "zhu@example.com"
    reply["Subject"] = "回复：朱镕基"
    reply["Message-ID"] = "<t3@example.com>"
    reply["In-Reply-To"] = "<t2@shop.example>"
    reply["References"] = "<t1@example.com> <t2@shop.example>"
    await edge.send(first, ["kefu@shop.example"])
    await edge.send(reply.as_bytes(), ["kefu@shop.example"])
    got = await consume(topics_ready, lambda envs: len(envs) >= 2)
    (k1, e1), (k2, e2) = got
    assert e1.conversation_id == e2.conversation_id == "email:t1@example.com"
    assert k1 == k2  # same partition key: the conversation stays ordered
    assert e2.text == "朱镕基\n\n还是没动，请帮我催一下。"
    assert e2.meta["in_reply_to"] == "t2@shop.example"


async def test_mta_retry_of_the_same_message_id_is_produced_once(
    edge: Edge, topics_ready: Settings
) -> None:
    raw = gb_multipart("gb2312", "<dup@example.com>", "重复投递")
    assert await edge.send(raw, ["kefu@shop.example"]) == {}
    assert await edge.send(raw, ["kefu@shop.example"]) == {}  # 250 again
    await edge.send(gb_multipart("gb2312", "<after@example.com>", "之后"), ["kefu@shop.example"])
    got = await consume(topics_ready,
                        lambda envs: any(e.channel_msg_id == "after@example.com" for e in envs))
    # Two conversations: two partition keys, so no order between them.
    assert sorted(e.channel_msg_id for _, e in got) == ["after@example.com", "dup@example.com"]
    assert edge.metric("omni_adapter_duplicates_total", channel="email",
                       account="kefu@shop.example") == 1


async def test_recipient_policy_and_limits(edge: Edge) -> None:
    def session(smtp: smtplib.SMTP) -> list[tuple[int, bytes]]:
        replies = [smtp.mail("buyer@example.com")]
        for rcpt in ("someone@elsewhere.example", "nobody@shop.example", "kefu@shop.example",
                     "vip@shop.example", "sales@shop.example", "ops@shop.example", "no-domain"):
            replies.append(smtp.rcpt(rcpt))
        smtp.rset()
        return replies

    replies = await edge.client(session)
    codes = [(code, msg.decode().split(" ", 1)[0]) for code, msg in replies]
    assert codes == [
        (250, "OK"), (554, "5.7.1"), (550, "5.1.1"), (250, "2.1.5"), (250, "2.1.5"),
        (250, "2.1.5"), (452, "4.5.3"), (452, "4.5.3"),
    ]
    assert edge.metric("omni_adapter_rejected_total", channel="email", account="-",
                       reason="relay_denied") == 1
    assert edge.metric("omni_adapter_rejected_total", channel="email", account="-",
                       reason="unknown_recipient") == 1
    assert edge.metric("omni_adapter_rejected_total", channel="email", account="-",
                       reason="too_many_recipients") == 2

    def bad_address(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        smtp.mail("buyer@example.com")
        return smtp.rcpt("no-domain")

    code, msg = await edge.client(bad_address)
    assert (code, msg.split()[0]) == (501, b"5.1.3")


async def test_oversized_mail_is_refused_with_552(edge: Edge) -> None:
    big = b"From: a@example.com\r\nSubject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 80

    def declared(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        return smtp.mail("a@example.com", [f"SIZE={len(big)}"])

    def undeclared(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        smtp.mail("a@example.com")
        smtp.rcpt("kefu@shop.example")
        return smtp.data(big)

    for fn in (declared, undeclared):
        code, msg = await edge.client(fn)
        assert (code, msg[:5]) == (552, b"5.3.4"), msg
    assert edge.metric("omni_adapter_rejected_total", channel="email", account="-",
                       reason="too_large") == 2


async def test_malformed_mail_gets_554_and_the_server_stays_up(
    edge: Edge, topics_ready: Settings
) -> None:
    def send(raw: bytes) -> Callable[[smtplib.SMTP], tuple[int, bytes]]:
        def fn(smtp: smtplib.SMTP) -> tuple[int, bytes]:
            smtp.mail("a@example.com")
            smtp.rcpt("kefu@shop.example")
            return smtp.data(raw)
        return fn

    for raw in (b"\r\n\r\njust a body, no headers", b"From: a@example.com\r\n\r\n"):
        code, msg = await edge.client(send(raw))
        assert (code, msg[:5]) == (554, b"5.6.0"), msg

    def garbage(smtp: smtplib.SMTP) -> tuple[int, bytes]:
        smtp.send(b"\x00\xff BOGUS\r\n")
        return smtp.getreply()

    code, _ = await edge.client(garbage)
    assert 500 <= code < 600
    assert await edge.send(b"From: a@example.com\r\nSubject: ok\r\n\r\nstill alive\r\n",
                           ["kefu@shop.example"]) == {}
    got = await consume(topics_ready, lambda envs: len(envs) >= 1)
    assert [e.text for _, e in got] == ["ok\n\nstill alive"]
    assert edge.metric("omni_adapter_rejected_total", channel="email",
                       account="kefu@shop.example", reason="malformed") == 2


async def test_auto_replies_are_accepted_but_not_routed(edge: Edge,
                                                        topics_ready: Settings) -> None:
    ooo = b"From: a@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: OOO\r\n\r\naway\r\n"
    assert await edge.send(ooo, ["kefu@shop.example"]) == {}
    assert await edge.send(b"From: a@example.com\r\nSubject: real\r\n\r\nhelp\r\n",
                           ["kefu@shop.example"]) == {}
    got = await consume(topics_ready, lambda envs: len(envs) >= 1)
    assert [e.text for _, e in got] == ["real\n\nhelp"]
    assert edge.metric("omni_adapter_filtered_total", channel="email",
                       rule="auto_submitted") == 1


async def test_broker_unreachable_answers_451_and_does_not_mark(
    settings: Settings, aredis: Redis
) -> None:
    dead = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "produce_timeout_s": 1.0}
    )
    server, producer = await build_edge(dead, aredis)
    async with server:
        edge = Edge(server, server._ctx)
        raw = b"From: a@example.com\r\nMessage-ID: <b1@x>\r\nSubject: s\r\n\r\nbody\r\n"

        def send(smtp: smtplib.SMTP) -> tuple[int, bytes]:
            smtp.mail("a@example.com")
            smtp.rcpt("kefu@shop.example")
            return smtp.data(raw)

        code, msg = await edge.client(send)
        assert (code, msg[:5]) == (451, b"4.3.0"), msg
        assert edge.metric("omni_adapter_rejected_total", channel="email",
                           account="kefu@shop.example", reason="broker_unavailable") == 1
        assert await aredis.keys(f"{settings.redis_prefix}:*") == []  # no dedupe mark
    await producer.stop()


async def test_lifecycle_is_idempotent(settings: Settings) -> None:
    server, _ = await build_edge(settings, None)
    assert server.port == 0
    await server.start()
    await server.start()
    port = server.port
    assert port > 0
    await server.stop()
    await server.stop()
    assert server.port == 0
    async with server:
        assert server.port > 0
    unconfigured, _ = await build_edge(settings, None, OMNI_EMAIL_DOMAINS="")
    with pytest.raises(ValueError, match="OMNI_EMAIL_DOMAINS"):
        await unconfigured.start()
    # no mailbox list and no catch-all: every address would be refused (issue 11, item 9)
    no_mailbox, _ = await build_edge(settings, None, OMNI_EMAIL_MAILBOXES="")
    with pytest.raises(ValueError, match=r"OMNI_EMAIL_MAILBOXES.*OMNI_EMAIL_CATCH_ALL"):
        await no_mailbox.start()
    with pytest.raises(ValueError, match="'-' is the label of refusals"):
        email_settings(OMNI_EMAIL_CATCH_ALL="-")


async def test_one_data_to_several_mailboxes_gives_one_envelope(
    edge: Edge, topics_ready: Settings
) -> None:
    """One message, one envelope (issue 11, item 9): the first accepted mailbox is its
    account, ``meta.mailboxes`` lists them all; the Message-ID is deduped across mailboxes."""
    raw = gb_multipart("gb2312", "<multi@example.com>", "两个邮箱都发了")
    # a repeated recipient (other case) and a refused one do not change the accepted set
    refused = await edge.send(raw, ["kefu@shop.example", "VIP@shop.example",
                                    "Kefu@Shop.example", "nobody@shop.example"])
    assert set(refused) == {"nobody@shop.example"}
    # The MTA retries the same mail to one of them plus a third (or splits the
    # recipients into another transaction): still 250, nothing new.
    assert await edge.send(raw, ["vip@shop.example", "sales@shop.example"]) == {}
    assert await edge.send(raw, ["kefu@shop.example", "vip@shop.example"]) == {}
    await edge.send(gb_multipart("gb2312", "<marker@example.com>", "标记"), ["ops@shop.example"])
    got = await consume(topics_ready,
                        lambda envs: any(e.channel_msg_id == "marker@example.com" for e in envs))
    multi = [(k, e) for k, e in got if e.channel_msg_id == "multi@example.com"]
    assert len(multi) == 1
    key, env = multi[0]
    assert env.account == "kefu@shop.example"
    assert env.meta["mailboxes"] == "kefu@shop.example,vip@shop.example"
    assert env.conversation_id == "email:multi@example.com"
    assert key == b"email:multi@example.com"
    assert env.text == "朱镕基\n\n两个邮箱都发了"
    assert edge.metric("omni_adapter_accepted_total", channel="email",
                       account="kefu@shop.example") == 1
    assert edge.metric("omni_adapter_accepted_total", channel="email",
                       account="vip@shop.example") == 0
    assert edge.metric("omni_adapter_requests_total", channel="email",
                       account="kefu@shop.example") == 2
    assert edge.metric("omni_adapter_duplicates_total", channel="email",
                       account="vip@shop.example") == 1
    assert edge.metric("omni_adapter_duplicates_total", channel="email",
                       account="kefu@shop.example") == 1


def email_label_values(edge: Edge) -> set[str]:
    """Every ``account`` label of the e-mail channel's adapter metrics."""
    return {
        sample.labels["account"]
        for metric in edge.ctx.metrics.registry.collect()
        for sample in metric.samples
        if sample.labels.get("channel") == "email" and "account" in sample.labels
    }


async def test_unlisted_addresses_are_refused_at_rcpt_and_labelled_dash(edge: Edge) -> None:
    """Without a catch-all, made-up addresses at our domain never reach DATA."""
    made_up = [f"user{i}@shop.example" for i in range(20)]

    def session(smtp: smtplib.SMTP) -> list[tuple[int, bytes]]:
        smtp.mail("buyer@example.com")
        replies = [smtp.rcpt(a) for a in made_up]
        smtp.rset()
        return replies

    replies = await edge.client(session)
    assert {(code, msg.split()[0]) for code, msg in replies} == {(550, b"5.1.1")}
    assert edge.metric("omni_adapter_rejected_total", channel="email", account="-",
                       reason="unknown_recipient") == 20
    assert email_label_values(edge) == {"-"}


async def test_catch_all_gives_one_account_for_any_address_at_our_domains(
    topics_ready: Settings, aredis: Redis
) -> None:
    """The issue's case: one mail to 20 addresses at our domain is one envelope, and
    the metric labels are the configured accounts, not the addresses."""
    server, producer = await build_edge(topics_ready, aredis, OMNI_EMAIL_MAILBOXES="",
                                        OMNI_EMAIL_CATCH_ALL=" Support ",
                                        OMNI_SMTP_MAX_RECIPIENTS=25)
    async with producer, server:
        edge = Edge(server, server._ctx)
        to = [f"user{i}@shop.example" for i in range(19)] + ["x@shop2.example",
                                                              "x@elsewhere.example"]
        raw = b"From: a@example.com\r\nMessage-ID: <fan@x>\r\nSubject: s\r\n\r\nhelp\r\n"
        refused = await edge.send(raw, to)
        assert set(refused) == {"x@elsewhere.example"}
        got = await consume(topics_ready, lambda envs: len(envs) >= 1)
        assert [(e.account, e.meta["mailboxes"], e.channel_msg_id) for _, e in got] == [
            ("support", "support", "fan@x")
        ]
        assert edge.metric("omni_adapter_accepted_total", channel="email",
                           account="support") == 1
        assert email_label_values(edge) == {"support", "-"}

    # listed mailboxes keep their own account beside the catch-all
    server, producer = await build_edge(topics_ready, aredis, OMNI_EMAIL_CATCH_ALL="support")
    async with producer, server:
        edge = Edge(server, server._ctx)
        raw = b"From: a@example.com\r\nMessage-ID: <mix@x>\r\nSubject: s\r\n\r\nhelp\r\n"
        assert await edge.send(raw, ["anyone@shop.example", "vip@shop.example",
                                     "other@shop.example"]) == {}
        got = await consume(topics_ready,
                            lambda envs: any(e.channel_msg_id == "mix@x" for e in envs))
        mix = [e for _, e in got if e.channel_msg_id == "mix@x"]
        assert [(e.account, e.meta["mailboxes"]) for e in mix] == [
            ("support", "support,vip@shop.example")
        ]
