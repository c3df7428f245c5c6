"""Phone webhooks end to end: Twilio-signed forms and TCCC pushes over real HTTP,
the real broker and Redis. Signatures are computed with Twilio's own library."""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from omniroute.adapters.http import build_http_app
from omniroute.adapters.phone import load_phone_config, make_installer
from omniroute.adapters.phone.parse import mask_number, normalise_number
from omniroute.adapters.phone.verify import twilio_signature
from omniroute.embedded import free_port
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import EntryKind, Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import PhoneSettings, Settings

pytestmark = pytest.mark.integration

TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://cs.example.com/omni"  # what Twilio calls; a proxy strips /omni
TCCC_AUTH = "Basic " + base64.b64encode(b"tccc-push:push-secret").decode()
CONFIG = load_phone_config(Path(__file__).resolve().parent.parent / "config" / "phone.yaml")
CALLER = "+8613812345678"
FORM = "application/x-www-form-urlencoded"


def phone_settings() -> PhoneSettings:
    return PhoneSettings.model_validate({
        "OMNI_TWILIO_AUTH_TOKEN": TOKEN,
        "OMNI_PHONE_PUBLIC_BASE_URL": PUBLIC + "/",
        "OMNI_TCCC_USERNAME": "tccc-push",
        "OMNI_TCCC_PASSWORD": "push-secret",
        "OMNI_CUSTOMER_ID_SALT": "salt",
    })


class Phone:
    """The adapters' HTTP app with only the phone routes, on a free loopback port."""

    def __init__(self, ctx: HttpContext, base: str, http: aiohttp.ClientSession) -> None:
        self.ctx = ctx
        self.base = base
        self.http = http

    def metric(self, name: str, **labels: str) -> float:
        return self.ctx.metrics.registry.get_sample_value(name, labels) or 0.0

    async def twilio(self, event: str, params: dict[str, str], *, token: str = TOKEN,
                     tamper: Callable[[dict[str, str]], None] | None = None,
                     signature: str | None = None) -> tuple[int, str]:
        url = f"{PUBLIC}/phone/twilio/{event}"
        sig = RequestValidator(token).compute_signature(url, params)
        sent = dict(params)
        if tamper is not None:
            tamper(sent)
        headers = {"X-Twilio-Signature": signature if signature is not None else sig,
                   "Content-Type": FORM}
        async with self.http.post(f"{self.base}/phone/twilio/{event}", data=sent,
                                  headers=headers) as resp:
            return resp.status, await resp.text()

    async def tccc(self, body: Any, *, push_uuid: str | None = None, auth: str = TCCC_AUTH,
                   action: str = "cdr") -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        if push_uuid:
            headers["X-TCCC-PUSH-UUID"] = push_uuid
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.http.post(f"{self.base}/phone/tccc?action={action}&version=1",
                                  data=raw, headers=headers) as resp:
            return resp.status, await resp.json()


async def start_phone(settings: Settings, redis: Redis | None) -> AsyncIterator[Phone]:
    producer = EnvelopeProducer(settings)
    ctx = HttpContext(settings=settings, sink=producer,
                         metrics=AdapterMetrics(CollectorRegistry()), redis=redis)
    app = build_http_app(ctx, [make_installer(phone_settings(), CONFIG)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Phone(ctx, f"http://127.0.0.1:{port}", http)
    finally:
        await runner.cleanup()
        await producer.stop()


@pytest.fixture
async def phone(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Phone]:
    async for p in start_phone(topics_ready, aredis):
        yield p


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
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((r.value, Envelope.from_json(r.value)) for r in records)
            if until([e for _, e in got]):
                return got
    finally:
        await consumer.stop()
    raise AssertionError(f"condition not met within {timeout_s} s; got {got!r}")


def call(sid: str = "CA" + "1" * 32, **extra: str) -> dict[str, str]:
    return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": CALLER,
            "To": "+864000000000", "CallStatus": "in-progress", "Direction": "inbound", **extra}


# --- pure pieces -------------------------------------------------------------------------


def test_our_signature_equals_twilios() -> None:
    params = {"CallSid": "CA1", "Digits": "1", "From": "+8613812345678", "b": "2", "a": ""}
    url = "https://cs.example.com/phone/twilio/gather?x=1"
    assert twilio_signature(url, params.items(), TOKEN) == RequestValidator(
        TOKEN).compute_signature(url, params)


@pytest.mark.parametrize(("raw", "national"), [
    ("+8613812345678", "13812345678"), ("008613812345678", "13812345678"),
    ("13812345678", "13812345678"), ("8613812345678", "13812345678"),
    ("+14155550100", "+14155550100"), ("anonymous", None), ("+266696687", None),
    ("+86282452253", None), ("075512345678", "075512345678"),
])
def test_caller_numbers_normalise_so_channels_agree(raw: str, national: str | None) -> None:
    assert normalise_number(raw) == national


def test_masked_handle() -> None:
    assert mask_number("13812345678") == "138****5678"


# --- Twilio --------------------------------------------------------------------------------


async def test_voice_answers_a_gather_pointing_at_the_public_url(phone: Phone) -> None:
    status, body = await phone.twilio("voice", call(CallStatus="ringing"))
    assert status == 200
    root = ET.fromstring(body)
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("action") == f"{PUBLIC}/phone/twilio/gather"
    assert gather.get("input") == "dtmf speech"
    assert "按1" in (gather.findtext("Say") or "")


async def test_gather_produces_a_masked_synchronous_phone_message(
    phone: Phone, topics_ready: Settings
) -> None:
    params = call(Digits="1", SpeechResult="我的快递没到，手机13912345678", Confidence="0.9")
    status, body = await phone.twilio("gather", params)
    assert status == 200
    assert ET.fromstring(body).findtext("Enqueue") == "omniroute"
    assert (await phone.twilio("gather", params))[0] == 200  # a retry: deduplicated
    got = await consume(topics_ready, lambda envs: len(envs) >= 1)
    assert len(got) == 1
    raw, env = got[0]
    assert env.text == "电话按键 1：订单与物流查询\n我的快递没到，手机139****5678"
    assert env.synchronous
    assert env.account == "hotline"
    assert env.conversation_id == "phone:CA" + "1" * 32
    assert env.entry is not None
    assert (env.entry.kind, env.entry.id) == (EntryKind.IVR, "order")
    assert env.hints == ("order_status",)
    assert env.customer.handle == "138****5678"
    assert env.customer.id.startswith("phone:")
    for number in (b"13812345678", b"13912345678"):
        assert number not in raw  # no raw phone number anywhere in the record
    assert phone.metric("omni_adapter_duplicates_total", channel="phone",
                        account="hotline") == 1


async def test_tampered_or_unsigned_requests_are_refused(
    phone: Phone, topics_ready: Settings
) -> None:
    params = call(Digits="3")
    changed = await phone.twilio("gather", params, tamper=lambda p: p.update(Digits="9"))
    added = await phone.twilio("gather", params, tamper=lambda p: p.update(Extra="x"))
    wrong_token = await phone.twilio("gather", params, token="not-the-token")
    missing = await phone.twilio("gather", params, signature="")
    for status, body in (changed, added, wrong_token, missing):
        assert status == 401, body
    assert "bad_signature" in changed[1]
    assert "missing_signature" in missing[1]
    assert phone.metric("omni_adapter_rejected_total", channel="phone", account="-",
                        reason="bad_signature") == 3
    # Only a correctly signed message reaches Kafka.
    assert (await phone.twilio("gather", call("CA" + "2" * 32, Digits="2")))[0] == 200
    got = await consume(topics_ready, lambda envs: len(envs) >= 1)
    assert [e.hints for _, e in got] == [("after_sales",)]


async def test_missed_and_abandoned_calls_ask_for_a_call_back(
    phone: Phone, topics_ready: Settings
) -> None:
    for sid, status in (("CA" + "3" * 32, "no-answer"), ("CA" + "4" * 32, "canceled"),
                        ("CA" + "5" * 32, "completed"), ("CA" + "6" * 32, "busy")):
        code, body = await phone.twilio("status", call(sid, CallStatus=status))
        assert code == 200, body
    got = await consume(topics_ready, lambda envs: len(envs) >= 3)
    texts = sorted((e.meta["call_status"], e.text, e.hints) for _, e in got)
    assert texts == [
        ("busy", "未接来电，请回拨", ("callback",)),
        ("canceled", "放弃来电，请回拨", ("callback",)),
        ("no-answer", "未接来电，请回拨", ("callback",)),
    ]
    assert phone.metric("omni_adapter_filtered_total", channel="phone", rule="call_status") == 1


async def test_bad_twilio_input_gets_specific_errors(phone: Phone) -> None:
    assert (await phone.twilio("hangup", call()))[0] == 404
    no_sid = call()
    del no_sid["CallSid"]
    status, body = await phone.twilio("gather", no_sid)
    assert status == 400
    assert "CallSid" in body
    status, body = await phone.twilio("gather", call(Digits="1; DROP"))
    assert status == 400
    async with phone.http.post(f"{phone.base}/phone/twilio/gather", json={"CallSid": "x"},
                               headers={"X-Twilio-Signature": "x"}) as resp:
        assert resp.status == 400
        assert "bad_content_type" in await resp.text()


async def test_gather_answers_503_when_the_broker_is_down(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "produce_timeout_s": 1.0}
    )
    async for p in start_phone(dead, None):
        status, body = await p.twilio("gather", call(Digits="1"))
        assert status == 503, body
        assert p.metric("omni_adapter_rejected_total", channel="phone", account="-",
                        reason="broker_unavailable") == 1


# --- Tencent Cloud Contact Center ----------------------------------------------------------


def cdr(session: str, **extra: Any) -> dict[str, Any]:
    return {"SdkAppId": 1400000001, "SessionId": session, "Caller": "008613812345678",
            "Callee": "4000000000", "Direction": 0, "StartTimestamp": 1795485600,
            "EndStatusString": "waitingGiveUp", "IVRKeyPressed": ["2"], **extra}


async def test_tccc_abandoned_call_is_produced_once_per_push_uuid(
    phone: Phone, topics_ready: Settings
) -> None:
    body = cdr("sess-1")
    assert await phone.tccc(body, push_uuid="uuid-1") == (200, {"ErrCode": 0, "ErrMsg": "ok"})
    assert await phone.tccc(body, push_uuid="uuid-1") == (200, {"ErrCode": 0, "ErrMsg": "ok"})
    answered = cdr("sess-2", EndStatusString="ok")
    assert (await phone.tccc(answered, push_uuid="uuid-2"))[1]["ErrCode"] == 0
    outbound = cdr("sess-3", Direction=1, EndStatusString="notAnswer")
    assert (await phone.tccc(outbound, push_uuid="uuid-3"))[1]["ErrCode"] == 0
    missed = cdr("sess-4", EndStatusString=None, EndStatus=105, IVRKeyPressed=[], Caller="")
    assert (await phone.tccc(missed, push_uuid="uuid-4"))[1]["ErrCode"] == 0
    got = await consume(topics_ready, lambda envs: len(envs) >= 2)
    by_call = {e.meta["call_id"]: (raw, e) for raw, e in got}
    assert sorted(by_call) == ["sess-1", "sess-4"]
    raw, env = by_call["sess-1"]
    assert env.text == "放弃来电，请回拨（IVR 按键 2 退货退款）"
    assert env.hints == ("callback", "after_sales")
    assert env.customer.handle == "138****5678"
    assert b"13812345678" not in raw
    assert env.sent_at_ms == 1795485600000
    assert by_call["sess-4"][1].text == "未接来电，请回拨"
    assert by_call["sess-4"][1].customer.id == "phone:anon:sess-4"
    assert phone.metric("omni_adapter_duplicates_total", channel="phone",
                        account="tccc-1400000001") == 1
    assert phone.metric("omni_adapter_filtered_total", channel="phone",
                        rule="call_completed") == 2


async def test_same_caller_is_the_same_customer_on_twilio_and_tccc(
    phone: Phone, topics_ready: Settings
) -> None:
    await phone.twilio("status", call(CallStatus="no-answer"))
    await phone.tccc(cdr("sess-9"), push_uuid="uuid-9")
    got = await consume(topics_ready, lambda envs: len(envs) >= 2)
    assert len({e.customer.id for _, e in got}) == 1


async def test_tccc_bad_input_and_auth(phone: Phone) -> None:
    wrong = "Basic " + base64.b64encode(b"tccc-push:guess").decode()
    status, body = await phone.tccc(cdr("s"), auth=wrong)
    assert (status, body["ErrCode"]) == (401, 401)
    status, body = await phone.tccc(cdr("s"), auth="Bearer x")
    assert (status, body["ErrCode"]) == (401, 401)
    status, body = await phone.tccc(b"{not json")
    assert (status, body["ErrCode"]) == (400, 400)
    assert "bad_json" in body["ErrMsg"]
    status, body = await phone.tccc({"Caller": "13812345678", "Direction": 0})
    assert (status, body["ErrCode"]) == (400, 400)
    assert "SessionId" in body["ErrMsg"]
    status, body = await phone.tccc(cdr("s", Direction="in"))
    assert status == 400
    status, body = await phone.tccc([1, 2])
    assert status == 400
    status, body = await phone.tccc({"RecordURL": "x"}, action="record")
    assert (status, body["ErrCode"]) == (200, 0)
    assert phone.metric("omni_adapter_rejected_total", channel="phone", account="-",
                        reason="bad_credentials") == 1


# --- wiring and configuration ----------------------------------------------------------------


async def test_default_install_uses_the_phone_settings_and_shipped_menu(
    settings: Settings,
) -> None:
    from omniroute.adapters.phone import install

    settings = settings.model_copy(update={
        "phone": PhoneSettings.model_validate({"OMNI_TWILIO_AUTH_TOKEN": TOKEN}),
    })
    ctx = HttpContext(settings=settings, sink=EnvelopeProducer(settings),
                         metrics=AdapterMetrics(CollectorRegistry()))
    app = build_http_app(ctx, [install])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/phone/twilio/voice"
        params = call()
        sig = RequestValidator(TOKEN).compute_signature(url, params)
        async with aiohttp.ClientSession() as http, http.post(
            url, data=params, headers={"X-Twilio-Signature": sig}
        ) as resp:
            assert resp.status == 200
            assert "人工服务请按0" in await resp.text()
    finally:
        await runner.cleanup()


def test_bad_phone_yaml_names_file_and_line(tmp_path: Path) -> None:
    from omniroute.router.exceptions import ConfigError

    bad = tmp_path / "phone.yaml"
    bad.write_text('language: zh-CN\nmenu:\n  "1": {entry: order, label: 订单}\n'
                   '  "x1": {entry: bad, label: 坏}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"phone.yaml:4: menu.x1"):
        load_phone_config(bad)
