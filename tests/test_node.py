"""The composed HTTP/SMTP process (``omniroute serve``) on a real broker and Redis."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from omniroute.embedded import free_port
from omniroute.node import http_ingest
from omniroute.router import topics
from omniroute.router.models import Envelope
from omniroute.router.settings import EmailSettings, Settings
from tests.conftest import TEST_TOKEN
from tests.helpers import consume

pytestmark = pytest.mark.integration


async def test_serve_composes_http_and_smtp(topics_ready: Settings) -> None:
    smtp_port = free_port()
    email = EmailSettings.model_validate(
        {"OMNI_EMAIL_DOMAINS": "kefu.example.com", "OMNI_EMAIL_MAILBOXES": "help@kefu.example.com",
         "OMNI_SMTP_PORT": smtp_port}
    )
    settings = topics_ready.model_copy(update={"http_port": free_port(), "email": email})
    async with http_ingest(settings, CollectorRegistry()), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{settings.http_port}"
        async with http.post(
            f"{base}/v1/messages",
            json={"channel_msg_id": "n1", "customer": {"id": "c"}, "text": "退款没到账"},
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        ) as resp:
            assert resp.status == 202
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200

        mail = EmailMessage()
        mail["From"] = "buyer@example.org"
        mail["To"] = "help@kefu.example.com"
        mail["Subject"] = "退货"
        mail["Message-ID"] = "<n2@example.org>"
        mail.set_content("我要退货，东西坏了")

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
                client.send_message(mail)

        await asyncio.to_thread(send)
        records = await consume(settings.kafka_bootstrap, settings.topic(topics.INBOUND), 2)
    channels = sorted(Envelope.from_json(r.value).channel.value for r in records)
    assert channels == ["app", "email"]
