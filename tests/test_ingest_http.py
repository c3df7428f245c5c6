"""POST /v1/messages on a real broker: auth, limits, validation, 503 when Kafka is down."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Sequence

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from omniroute.adapters.generic.verify import sign
from omniroute.adapters.http import build_http_app
from omniroute.embedded import free_port
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.conftest import TEST_TOKEN
from tests.helpers import consume

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def message(n: int, **extra: object) -> dict[str, object]:
    return {"channel_msg_id": f"m{n}", "customer": {"id": f"c{n}"}, "text": "订单还没到", **extra}


async def _client(settings: Settings) -> tuple[TestClient, CollectorRegistry, EnvelopeProducer]:
    registry = CollectorRegistry()
    producer = EnvelopeProducer(settings)
    ctx = HttpContext(settings, producer, AdapterMetrics(registry))
    client = TestClient(TestServer(build_http_app(ctx)))
    await client.start_server()
    return client, registry, producer


@pytest.fixture
async def http(topics_ready: Settings) -> AsyncIterator[tuple[TestClient, CollectorRegistry]]:
    settings = topics_ready.model_copy(
        update={"ingest_hmac_secret": SecretStr("hmac-secret"), "max_body_bytes": 4096,
                "max_batch_messages": 5}
    )
    client, registry, producer = await _client(settings)
    yield client, registry
    await client.close()
    await producer.stop()


async def test_batch_is_produced_before_the_202(topics_ready: Settings) -> None:
    """The 202 must not leave before the broker acknowledged: hold the produce and look."""
    settings = topics_ready.model_copy(update={"max_batch_messages": 5})
    registry = CollectorRegistry()
    producer = EnvelopeProducer(settings)
    sink = _GatedSink(producer)
    client = TestClient(TestServer(build_http_app(
        HttpContext(settings, sink, AdapterMetrics(registry)))))
    await client.start_server()
    try:
        body = {"messages": [message(1, order={"id": "o1", "amount": 250}), message(2)]}
        posting = asyncio.create_task(client.post("/v1/messages", json=body, headers=AUTH))
        await asyncio.wait_for(sink.entered.wait(), 5)
        # the produce is held: a handler that answered first (or produced in the
        # background) would have its 202 on the wire by now
        done, _ = await asyncio.wait({posting}, timeout=1.0)
        assert not done, "answered while the produce was still waiting for the broker"
        assert not sink.acked.is_set()
        sink.gate.set()
        resp = await asyncio.wait_for(posting, 10)
        assert sink.acked.is_set()  # the broker's acks came before the answer
        assert resp.status == 202, await resp.text()
        ids = (await resp.json())["ids"]
        records = await consume(settings.kafka_bootstrap, settings.topic(topics.INBOUND), 2)
        envs = [Envelope.from_json(r.value) for r in records]
        assert sorted(e.id for e in envs) == sorted(ids)
        assert {e.order.amount for e in envs if e.order} == {250.0}
        assert all(r.key == e.conversation_id.encode() for r, e in zip(records, envs, strict=True))
        # a retry of the same channel message gets the same id (the router dedupes on it)
        again = await client.post("/v1/messages", json=message(1), headers=AUTH)
        assert (await again.json())["ids"] == [ids[0]]
    finally:
        await client.close()
        await producer.stop()
    assert registry.get_sample_value(
        "omni_adapter_accepted_total", {"channel": "app", "account": "default"}
    ) == 3


async def test_hmac_signed_request_is_accepted(http: tuple[TestClient, CollectorRegistry]) -> None:
    client, _ = http
    body = orjson.dumps(message(3))
    ts = int(time.time())
    headers = {"X-Omni-Timestamp": str(ts), "X-Omni-Signature": sign("hmac-secret", ts, body),
               "Content-Type": "application/json"}
    resp = await client.post("/v1/messages", data=body, headers=headers)
    assert resp.status == 202, await resp.text()


def _stdlib_signature(secret: bytes, signed: bytes) -> str:
    """The README's signature form, built with the standard library only."""
    return "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


async def test_signature_built_from_the_documented_format_is_accepted(
    http: tuple[TestClient, CollectorRegistry], topics_ready: Settings
) -> None:
    """README: X-Omni-Signature is sha256=<hex HMAC-SHA256 of "<ts>.<body>">."""
    client, _ = http
    body = orjson.dumps(message(13))
    ts = str(int(time.time()))
    good = _stdlib_signature(b"hmac-secret", ts.encode() + b"." + body)
    resp = await client.post("/v1/messages", data=body, headers={
        "X-Omni-Timestamp": ts, "X-Omni-Signature": good, "Content-Type": "application/json"})
    assert resp.status == 202, await resp.text()
    (record,) = await consume(topics_ready.kafka_bootstrap, topics_ready.topic(topics.INBOUND), 1)
    assert Envelope.from_json(record.value).id == (await resp.json())["ids"][0]
    # anything but exactly "<ts>.<body>" under the secret is refused
    for wrong in (
        _stdlib_signature(b"hmac-secret", body),
        _stdlib_signature(b"hmac-secret", ts.encode() + body),
        _stdlib_signature(b"hmac-secret", body + b"." + ts.encode()),
        _stdlib_signature(b"other-secret", ts.encode() + b"." + body),
        good.removeprefix("sha256="),
    ):
        refused = await client.post("/v1/messages", data=body, headers={
            "X-Omni-Timestamp": ts, "X-Omni-Signature": wrong,
            "Content-Type": "application/json"})
        assert refused.status == 401, wrong
        assert (await refused.json())["error"] == "bad_signature"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_auth"),
        ({"Authorization": "Bearer wrong"}, "bad_token"),
        ({"Authorization": "Basic abc"}, "bad_auth_header"),
        ({"X-Omni-Timestamp": "0", "X-Omni-Signature": "sha256=00"}, "stale_timestamp"),
        ({"X-Omni-Timestamp": "now", "X-Omni-Signature": "sha256=00"}, "bad_timestamp"),
        ({"X-Omni-Timestamp": "{ts}", "X-Omni-Signature": "sha256=00"}, "bad_signature"),
    ],
)
async def test_unauthenticated_requests_get_401_with_a_reason(
    http: tuple[TestClient, CollectorRegistry], headers: dict[str, str], reason: str
) -> None:
    client, registry = http
    headers = {k: v.replace("{ts}", str(int(time.time()))) for k, v in headers.items()}
    resp = await client.post("/v1/messages", json=message(4), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"] == reason
    assert registry.get_sample_value(
        "omni_adapter_rejected_total", {"channel": "api", "account": "-", "reason": reason}
    ) == 1


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty body"),
        (orjson.dumps({"customer": {"id": "c"}, "text": "x"}), 400,
         "channel_msg_id: Field required"),
        (orjson.dumps(message(5, channel="fax")), 400, "channel: Input should be"),
        (orjson.dumps({"messages": [message(6), message(7, order={"id": "o", "amount": -1})]}),
         400, "messages[1].order.amount"),
        (orjson.dumps(message(8, text="   ")), 400, "empty text"),
        (orjson.dumps(message(9, surprise=1)), 400, "surprise: Extra inputs"),
        (orjson.dumps({"messages": [message(i) for i in range(6)]}), 413, "limit is 5"),
        (orjson.dumps(message(10, text="长" * 3000)), 413, "the limit is 4096"),
    ],
)
async def test_invalid_bodies_get_a_specific_error(
    http: tuple[TestClient, CollectorRegistry], body: bytes, status: int, needle: str
) -> None:
    client, _ = http
    resp = await client.post(
        "/v1/messages", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert resp.status == status, await resp.text()
    assert needle in (await resp.json())["message"]


async def test_unreachable_broker_answers_503_so_the_caller_retries(settings: Settings) -> None:
    down = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "produce_timeout_s": 1.0}
    )
    client, registry, producer = await _client(down)
    try:
        resp = await client.post("/v1/messages", json=message(11), headers=AUTH)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()
        await producer.stop()
    assert registry.get_sample_value(
        "omni_adapter_rejected_total",
        {"channel": "api", "account": "-", "reason": "broker_unavailable"},
    ) == 1


async def test_metrics_endpoint_serves_the_injected_registry(
    http: tuple[TestClient, CollectorRegistry],
) -> None:
    client, _ = http
    await client.post("/v1/messages", json=message(12), headers=AUTH)
    text = await (await client.get("/metrics")).text()
    assert 'omni_adapter_accepted_total{account="default",channel="app"} 1.0' in text


class _GatedSink:
    """The real producer behind a gate, to hold requests in flight."""

    def __init__(self, producer: EnvelopeProducer) -> None:
        self.producer = producer
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.acked = asyncio.Event()

    async def send_envelopes(self, envelopes: Sequence[Envelope], *,
                             timeout_s: float | None = None) -> None:
        self.entered.set()
        await self.gate.wait()
        await self.producer.send_envelopes(envelopes, timeout_s=timeout_s)
        self.acked.set()

    async def send_records(self, topic: str, records: Sequence[tuple[bytes, bytes]], *,
                           timeout_s: float | None = None) -> None:
        await self.producer.send_records(topic, records, timeout_s=timeout_s)


async def test_back_pressure_refuses_past_the_in_flight_limit(topics_ready: Settings) -> None:
    settings = topics_ready.model_copy(update={"max_in_flight": 1})
    registry = CollectorRegistry()
    producer = EnvelopeProducer(settings)
    sink = _GatedSink(producer)
    client = TestClient(TestServer(build_http_app(
        HttpContext(settings, sink, AdapterMetrics(registry)))))
    await client.start_server()
    try:
        first = asyncio.create_task(client.post("/v1/messages", json=message(20), headers=AUTH))
        await asyncio.wait_for(sink.entered.wait(), 5)
        second = await client.post("/v1/messages", json=message(21), headers=AUTH)
        assert second.status == 429
        assert second.headers["Retry-After"] == "1"
        assert (await client.get("/healthz")).status == 200  # probes are never refused
        sink.gate.set()
        assert (await first).status == 202
        assert (await client.post("/v1/messages", json=message(21), headers=AUTH)).status == 202
    finally:
        await client.close()
        await producer.stop()
    assert registry.get_sample_value(
        "omni_adapter_rejected_total", {"channel": "http", "account": "-", "reason": "overloaded"}
    ) == 1
