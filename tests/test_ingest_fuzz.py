"""Property tests for /v1/messages, the phone routes (Twilio, TCCC) and inbound SMTP.

Random and hostile input, unauthenticated and correctly authenticated (so that
parsing is reached), on the real broker and Redis. With the broker up there is
no 5xx at all (no 503 either) and no SMTP 451 (the catch-all for a bug); every
refusal is a specific 4xx in the route's JSON error form (SMTP: a specific
5xx/4xx reply); a well-formed message drawn among the hostile ones is accepted;
after the storm a good message is still accepted and reaches Kafka. The number
of examples is fixed and each example has a deadline (tests/fuzz_profile.py); each
test is bounded too (pytest timeout). The inputs of issue 11 that concern parsing
are pinned with ``@example``.
"""

from __future__ import annotations

import json
import smtplib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from omniroute.adapters.generic import install as generic_installer
from omniroute.adapters.generic.verify import fingerprint
from omniroute.adapters.http import build_http_app
from omniroute.adapters.phone import make_installer as phone_installer
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.conftest import TEST_TOKEN
from tests.fuzz_profile import fuzz_settings
from tests.helpers import consume, json_error
from tests.test_phone import CONFIG, PUBLIC, TCCC_AUTH, phone_settings
from tests.test_phone import TOKEN as TWILIO_TOKEN
from tests.test_smtp import MAILBOXES, Edge, build_edge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FUZZ = fuzz_settings(max_examples=100)
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
HMAC_SECRET = "fuzz-hmac-secret"
MAX_BODY = 8192
Client = TestClient[web.Request, web.Application]

# what each route may answer for bad input (reason -> status), nothing else
API_REASONS = {
    "empty": 400, "bad_json": 400, "invalid": 400, "batch_too_large": 413, "too_large": 413,
    "missing_auth": 401, "bad_token": 401, "bad_auth_header": 401, "stale_timestamp": 401,
    "bad_timestamp": 401, "bad_signature": 401, "replayed_signature": 409,
    "not_utf8": 400, "unsupported_media_type": 415,
}
TWILIO_REASONS = {
    "bad_content_type": 400, "bad_form": 400, "invalid": 400, "too_large": 413,
    "missing_signature": 401, "bad_signature": 401, "unknown_event": 404,
}
TCCC_REASONS = {"bad_json": 400, "invalid": 400, "too_large": 413, "bad_credentials": 401,
                "bad_auth_header": 401, "missing_auth": 401}


@pytest.fixture
async def http(topics_ready: Settings, aredis: Redis) -> AsyncIterator[tuple[Client, Settings]]:
    s = topics_ready.model_copy(update={
        "ingest_hmac_secret": SecretStr(HMAC_SECRET), "max_body_bytes": MAX_BODY,
        "max_batch_messages": 5,
    })
    producer = EnvelopeProducer(s)
    ctx = HttpContext(s, producer, AdapterMetrics(CollectorRegistry()), redis=aredis)
    app = build_http_app(ctx, [generic_installer, phone_installer(phone_settings(), CONFIG)])
    async with producer, TestClient(TestServer(app)) as client:
        yield client, s


# --- /v1/messages ---------------------------------------------------------------------------

safe_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
ident = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(
        max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["channel", "account", "channel_msg_id", "conversation_id", "customer", "text",
          "attachments", "entry", "order", "hints", "sent_at_ms", "messages", "x"]
field_value = st.one_of(
    any_json,
    st.sampled_from(["app", "wechat", "email", "phone", "fax", "", " ", "\u3000"]),
    st.fixed_dictionaries({"id": st.text(max_size=10)}, optional={
        "handle": st.text(max_size=10), "tier": st.sampled_from(["vip", "gold", ""]),
        "amount": st.one_of(st.floats(), st.integers()), "kind": st.text(max_size=6),
        "ref": st.text(max_size=6)}),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=400),
)
# a well-formed message: must be accepted wherever it is drawn
valid_message = st.fixed_dictionaries(
    {"channel_msg_id": ident, "customer": st.fixed_dictionaries({"id": ident}),
     "text": safe_text.filter(lambda t: bool(t.strip()))},
    optional={"channel": st.sampled_from(["app", "wechat", "email", "phone", "livestream"]),
              "account": ident, "hints": st.lists(st.text(max_size=10), max_size=3),
              "order": st.fixed_dictionaries({"id": ident, "amount": st.floats(0, 1e6)}),
              "sent_at_ms": st.integers(0, 2**53)},
)


def _dumps(value: object) -> bytes:
    # stdlib json: also writes lone surrogates, integers past 64 bits and Infinity
    return json.dumps(value).encode("utf-8", "surrogatepass")


api_bodies = st.one_of(
    st.binary(max_size=300),
    any_json.map(_dumps),
    st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=8).map(_dumps),
    st.lists(st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=6),
             max_size=7).map(lambda items: _dumps({"messages": items})),
    st.text(max_size=MAX_BODY + 200).map(lambda t: _dumps({"text": t})),
)


#: What an input must get: ``ACCEPT``, or an exact refusal (status, reason, a fragment of
#: its message); ``None`` for any answer the route may give.
Expect = tuple[int, str, str] | None
ACCEPT: Expect = (202, "", "")


@st.composite
def api_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], Expect]:
    """(body, headers, expected answer)."""
    good = draw(st.integers(0, 4)) == 0
    body = _dumps(draw(valid_message)) if good else draw(api_bodies)
    auth = draw(st.sampled_from(["bearer", "bearer", "hmac", "hmac_bad", "none", "junk"]))
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", ""]))}
    if auth == "bearer":
        headers.update(AUTH)
    elif auth.startswith("hmac"):
        ts = str(int(time.time()))
        key = HMAC_SECRET if auth == "hmac" else draw(st.text(max_size=8))
        mac = hmac_sha256(key.encode("utf-8", "surrogatepass"), ts.encode() + b"." + body)
        headers.update({"X-Omni-Timestamp": ts, "X-Omni-Signature": "sha256=" + mac})
    elif auth == "junk":
        printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                            max_size=30)
        headers.update({"Authorization": draw(printable),
                        "X-Omni-Timestamp": draw(printable), "X-Omni-Signature": draw(printable)})
    json_or_none = headers["Content-Type"] in ("application/json", "")  # text/plain: 415
    return body, headers, ACCEPT if good and auth in ("bearer", "hmac") and json_or_none else None


def hmac_sha256(key: bytes, data: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _issue11(body: str | bytes, expect: Expect, content_type: str = "application/json"
             ) -> tuple[bytes, dict[str, str], Expect]:
    raw = body.encode() if isinstance(body, str) else body
    return raw, {"Content-Type": content_type, **AUTH}, expect


_RUN = uuid.uuid4().hex[:12]  # explicit examples meet the same Redis again on a rerun
_MSG = '"customer": {"id": "c-fuzz"}, "text": "退款没到账"'


@FUZZ
@given(request=api_requests())
# issue 11, item 1: a JSON type where a list is expected
@example(request=_issue11(f'{{"channel_msg_id": "a-{_RUN}", {_MSG}, "attachments": true}}',
                          (400, "invalid", "attachments: Input should be a valid list")))
@example(request=_issue11(f'{{"channel_msg_id": "b-{_RUN}", {_MSG}, "attachments": 1.5}}',
                          (400, "invalid", "attachments: Input should be a valid list")))
# issue 11, item 11: NaN amounts, GBK bytes, a content type that is not JSON
@example(request=_issue11(f'{{"channel_msg_id": "n-{_RUN}", {_MSG}, '
                          '"order": {"id": "o1", "amount": NaN}}',
                          (400, "bad_json", "body is not valid JSON")))
@example(request=_issue11(f'{{"channel_msg_id": "s-{_RUN}", {_MSG}, '
                          '"order": {"id": "o1", "amount": "NaN"}}',
                          (400, "invalid", "order.amount: Input should be a finite number")))
@example(request=_issue11(f'{{"channel_msg_id": "g-{_RUN}", {_MSG}}}'.encode("gbk"),
                          (400, "not_utf8", "GBK and GB18030 are not accepted")))
@example(request=_issue11(f'{{"channel_msg_id": "t-{_RUN}", {_MSG}}}',
                          (415, "unsupported_media_type", "'text/plain' is not JSON"),
                          "text/plain"))
# issue 11, item 5: another channel's namespace claimed through the generic API
@example(request=_issue11(f'{{"channel": "wechat", "account": "demo", '
                          f'"channel_msg_id": "w-{_RUN}", {_MSG}}}', ACCEPT))
# issue 11, item 4: ID-shaped numbers (wrong check digit, 15 digits) and a landline
@example(request=_issue11(f'{{"channel_msg_id": "p-{_RUN}", "customer": {{"id": "c"}}, '
                          '"text": "身份证110105199001011234 旧证110105900101123 '
                          '电话010-62345678"}', ACCEPT))
async def test_v1_messages_fuzz(http: tuple[Client, Settings],
                                request: tuple[bytes, dict[str, str], Expect]) -> None:
    client, _ = http
    body, headers, expect = request
    resp = await client.post("/v1/messages", data=body, headers=headers)
    if expect is not None and expect != ACCEPT:  # a pinned refusal: exactly this one
        status, reason, fragment = expect
        assert resp.status == status, (resp.status, await resp.text(), body)
        assert await json_error(resp, API_REASONS) == reason
        assert fragment in (await resp.json())["message"], await resp.text()
        return
    if resp.status == 202:
        answer = await resp.json()
        assert answer["accepted"] == len(answer["ids"]) >= 1
        return
    # the same signed bytes drawn twice within a second: accepted the first time only
    replayed = resp.status == 409 and "X-Omni-Signature" in headers
    assert expect is None or replayed, (resp.status, await resp.text(), body)
    await json_error(resp, API_REASONS)


# --- Twilio ------------------------------------------------------------------------------------

TWILIO_FIELDS = ["CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "Digits",
                 "SpeechResult", "Confidence", "CallDuration", "x"]
form_value = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["CA" + "a" * 32, "+8613812345678", "anonymous", "no-answer", "completed",
                     "busy", "ringing", "1", "0#", "*", "", "inbound"]),
)
valid_gather = st.fixed_dictionaries({
    "CallSid": st.from_regex(r"\ACA[0-9a-f]{32}\Z"),
    "AccountSid": st.just("AC" + "0" * 32),
    "From": st.sampled_from(["+8613812345678", "+14155550100", "anonymous"]),
    "To": st.just("+864000000000"),
    "Digits": st.from_regex(r"\A[0-9*#]{1,4}\Z"),
})


@FUZZ
@given(event=st.sampled_from(["voice", "gather", "gather", "status", "status", "hangup", "%00"]),
       form=st.one_of(
           st.dictionaries(st.sampled_from(TWILIO_FIELDS), form_value, max_size=9).map(
               lambda f: (f, False)),
           valid_gather.map(lambda f: (f, True))),
       raw=st.one_of(st.none(), st.binary(max_size=300)),
       signed=st.sampled_from([True, True, True, False]),
       content_type=st.sampled_from(["application/x-www-form-urlencoded"] * 4
                                    + ["application/json", "text/plain"]))
async def test_twilio_fuzz(http: tuple[Client, Settings], event: str,
                           form: tuple[dict[str, str], bool], raw: bytes | None, signed: bool,
                           content_type: str) -> None:
    client, _ = http
    params, well_formed = form
    headers = {"Content-Type": content_type}
    if signed:  # signed with Twilio's own library, over the URL Twilio would call
        url = f"{PUBLIC}/phone/twilio/{event}"
        headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(
            url, params)
    data: Any = raw if raw is not None else params
    resp = await client.post(f"/phone/twilio/{event}", data=data, headers=headers)
    if resp.status == 200:
        assert resp.content_type == "application/xml"
        assert (await resp.text()).startswith("<?xml")
        return
    must_accept = (well_formed and signed and raw is None and event == "gather"
                   and content_type.startswith("application/x-www-form-urlencoded"))
    assert not must_accept, (resp.status, await resp.text(), params)
    if resp.status == 404 and event == "%00":
        return  # no such route: aiohttp's own 404
    await json_error(resp, TWILIO_REASONS)


# --- TCCC ----------------------------------------------------------------------------------------

CDR_FIELDS = ["SdkAppId", "SessionId", "Caller", "Callee", "Direction", "StartTimestamp",
              "EndStatusString", "EndStatus", "IVRKeyPressed", "x"]
cdr_value = st.one_of(
    any_json,
    st.sampled_from(["waitingGiveUp", "ok", "notAnswer", "008613812345678", "", "sess"]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
valid_cdr = st.fixed_dictionaries({
    "SdkAppId": st.integers(1, 2**31), "SessionId": st.from_regex(r"\A[A-Za-z0-9_\-.:]{1,64}\Z"),
    "Caller": st.sampled_from(["008613812345678", "13812345678", ""]),
    "Callee": st.just("4000000000"), "Direction": st.just(0),
    "StartTimestamp": st.integers(1_600_000_000, 1_900_000_000),
    "EndStatusString": st.sampled_from(["waitingGiveUp", "ok", "notAnswer"]),
    "IVRKeyPressed": st.lists(st.sampled_from(["1", "2", "0"]), max_size=2),
})


@FUZZ
@given(body=st.one_of(
           st.binary(max_size=300).map(lambda b: (b, False)),
           any_json.map(lambda v: (_dumps(v), False)),
           st.dictionaries(st.sampled_from(CDR_FIELDS), cdr_value, max_size=9).map(
               lambda d: (_dumps(d), False)),
           valid_cdr.map(lambda d: (_dumps(d), True))),
       auth=st.sampled_from([TCCC_AUTH, TCCC_AUTH, TCCC_AUTH, "", "Basic !!", "Bearer x"]),
       action=st.sampled_from(["cdr", "cdr", "cdr", "record", ""]),
       push_uuid=st.one_of(st.none(), st.text(
           alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)))
async def test_tccc_fuzz(http: tuple[Client, Settings], body: tuple[bytes, bool], auth: str,
                         action: str, push_uuid: str | None) -> None:
    client, _ = http
    raw, well_formed = body
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    if push_uuid is not None:
        headers["X-TCCC-PUSH-UUID"] = push_uuid
    resp = await client.post(f"/phone/tccc?action={action}&version=1", data=raw,
                             headers=headers)
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    answer = await resp.json()
    if resp.status == 200:
        assert answer["ErrCode"] == 0
        return
    assert not (well_formed and auth == TCCC_AUTH and action == "cdr"), (answer, raw)
    assert set(answer) == {"ErrCode", "ErrMsg"}, answer
    assert answer["ErrCode"] == resp.status
    reason = str(answer["ErrMsg"]).split(":", 1)[0]
    assert TCCC_REASONS.get(reason) == resp.status, (resp.status, answer)


async def test_http_routes_still_accept_good_messages_after_hostile_input(
    http: tuple[Client, Settings],
) -> None:
    client, s = http
    for body in (b"\x00\xff", b"{" * 5000, b'{"messages": [' + b"[]," * 2000 + b"[]]}"):
        for path in ("/v1/messages", "/phone/tccc?action=cdr", "/phone/twilio/gather"):
            resp = await client.post(path, data=body, headers=AUTH)
            assert 400 <= resp.status < 500, (path, resp.status)
    ok = await client.post("/v1/messages", headers=AUTH, json={
        "channel_msg_id": "after-fuzz", "customer": {"id": "c1"}, "text": "还在吗"})
    assert ok.status == 202, await ok.text()
    params = {"CallSid": "CA" + "f" * 32, "AccountSid": "AC" + "0" * 32,
              "From": "+8613812345678", "To": "+864000000000", "Digits": "1"}
    sig = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"{PUBLIC}/phone/twilio/gather", params)
    gather = await client.post("/phone/twilio/gather", data=params,
                               headers={"X-Twilio-Signature": sig})
    assert gather.status == 200, await gather.text()
    records = await consume(s.kafka_bootstrap, s.topic(topics.INBOUND), 2)
    api_conversation = f"bearer:{fingerprint(TEST_TOKEN)}:app:c1".encode()  # caller's namespace
    assert {r.key for r in records} >= {api_conversation, b"phone:CA" + b"f" * 32}


# --- SMTP ----------------------------------------------------------------------------------------

RCPTS = ["kefu@shop.example", "VIP@shop.example", "nobody@shop.example", "x@elsewhere.example",
         "no-domain", "@shop.example", "kefu@", "a\u00e9@shop.example"]
HEADERS = ["From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
           "Content-Type", "Content-Transfer-Encoding", "Auto-Submitted", "X-Other"]
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF,
                                             codec="utf-8"), max_size=60)
mail_bodies = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda hs, body: ("".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n" + body).encode(
            "utf-8"),
        st.lists(st.tuples(st.sampled_from(HEADERS), st.one_of(header_text, st.sampled_from([
            "multipart/mixed; boundary=b", 'text/plain; charset="klingon"', "base64",
            "quoted-printable", "auto-replied", "=?gb2312?B?1tA=?=", "<a@b>", "<>"]))),
            max_size=10),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=300)),
)
DATA_CODES = {250, 552, 554}
RCPT_CODES = {250, 452, 501, 550, 553, 554}


@pytest.fixture
async def smtp_edge(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    server, producer = await build_edge(topics_ready, aredis)
    async with producer, server:
        yield Edge(server, server._ctx)


def email_accounts(edge: Edge) -> set[str]:
    return {s.labels["account"] for m in edge.ctx.metrics.registry.collect() for s in m.samples
            if s.labels.get("channel") == "email" and "account" in s.labels}


def accepted_mail(edge: Edge) -> float:
    return sum(s.value for m in edge.ctx.metrics.registry.collect() for s in m.samples
               if s.name == "omni_adapter_accepted_total" and s.labels.get("channel") == "email")


@fuzz_settings(max_examples=60)
@given(raw=mail_bodies, rcpts=st.lists(st.sampled_from(RCPTS), min_size=1, max_size=5),
       sender=st.sampled_from(["buyer@example.com", "", "a@b", "x"]))
# issue 11, item 9: one mail to 20 addresses at our domain is at most one envelope, and
# the made-up addresses never become metric labels
@example(raw=f"From: a@example.com\r\nMessage-ID: <{_RUN}-20@x>\r\nSubject: s\r\n\r\nhi"
         .encode(), rcpts=["kefu@shop.example"] + [f"u{i}@shop.example" for i in range(19)],
         sender="buyer@example.com")
async def test_smtp_fuzz(smtp_edge: Edge, raw: bytes, rcpts: list[str], sender: str) -> None:
    def session(smtp: smtplib.SMTP) -> tuple[list[int], int | None]:
        smtp.mail(sender)
        codes = []
        for r in rcpts:  # raw bytes: smtplib itself refuses a non-ASCII address
            smtp.send(f"RCPT TO:<{r}>\r\n".encode())
            codes.append(smtp.getreply()[0])
        if 250 not in codes:
            smtp.rset()
            return codes, None
        wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        smtp.putcmd("data")
        code, _ = smtp.getreply()
        assert code == 354
        smtp.send(smtplib.quotedata(wire.decode("latin-1")).encode("latin-1") + b"\r\n.\r\n")
        return codes, smtp.getreply()[0]

    before = accepted_mail(smtp_edge)
    rcpt_codes, data_code = await smtp_edge.client(session)
    assert set(rcpt_codes) <= RCPT_CODES, rcpt_codes
    assert accepted_mail(smtp_edge) - before <= 1  # one envelope per message at most
    assert email_accounts(smtp_edge) <= {*MAILBOXES.split(","), "-"}
    assert data_code is None or data_code in DATA_CODES, data_code
    assert smtp_edge.metric("omni_adapter_rejected_total", channel="email", account="-",
                            reason="internal_error") == 0


async def test_smtp_still_accepts_good_mail_after_hostile_input(
    smtp_edge: Edge, topics_ready: Settings
) -> None:
    def refused(raw: bytes) -> Callable[[smtplib.SMTP], int]:
        def send(smtp: smtplib.SMTP) -> int:
            smtp.mail("a@example.com")
            smtp.rcpt("kefu@shop.example")
            return smtp.data(raw)[0]
        return send

    for raw in (b"\x00\xff\r\n\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
                b"From: =?x?Q?" + b"=" * 500 + b"?=\r\n\r\nx"):
        assert await smtp_edge.client(refused(raw)) in DATA_CODES

    def garbage(smtp: smtplib.SMTP) -> int:
        smtp.send(b"\x00\xff BOGUS\r\n")
        return smtp.getreply()[0]

    assert 500 <= await smtp_edge.client(garbage) < 600
    good = b"From: a@example.com\r\nMessage-ID: <good@x>\r\nSubject: ok\r\n\r\nstill here\r\n"
    assert await smtp_edge.send(good, ["kefu@shop.example"]) == {}
    records = await consume(topics_ready.kafka_bootstrap, topics_ready.topic(topics.INBOUND), 1)
    assert any(b"still here" in r.value for r in records)
