"""IMAP IDLE poller against a real Dovecot (Debian's dovecot-imapd) started per test.

Mail is put into the mailbox by an independent client (stdlib imaplib APPEND);
what the poller produces is read back from the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.adapters.email.imap import ImapPoller
from omniroute.embedded import free_port
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import EmailSettings, Settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("dovecot") is None,
        reason="needs a real IMAP server: Dovecot is not installed "
        "(apt-get install dovecot-imapd; the test starts it itself on a free loopback port)",
    ),
]

USER, PASSWORD = "kefu@shop.example", "imap-test-password"


class Dovecot:
    """A private Dovecot (IMAP only, plaintext on loopback) in a temp directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            # Dovecot refuses mail access as root: mail belongs to nobody.
            owner, group = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
            extra = ""
        else:
            owner = pwd.getpwuid(os.getuid()).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            extra = f"default_login_user = {owner}\ndefault_internal_user = {owner}\n"
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        shutil.chown(root / "mail", owner, group)
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
{extra}protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={owner} gid={group} home={root}/mail/%u
}}
""")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"dovecot exited: {err}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), 0.2
            ):
                return
            time.sleep(0.05)
        pytest.fail(f"dovecot did not listen on {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def client(self) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port)
        c.login(USER, PASSWORD)
        c.select("INBOX")
        return c

    def append(self, raw: bytes) -> None:
        c = self.client()
        try:
            typ, data = c.append("INBOX", None, None, raw.replace(b"\r\n", b"\n")
                                 .replace(b"\n", b"\r\n"))
            assert typ == "OK", data
        finally:
            c.logout()

    def unseen(self) -> list[bytes]:
        c = self.client()
        try:
            typ, data = c.uid("search", "UNSEEN")
            assert typ == "OK"
            uids: bytes = data[0]
            return uids.split()
        finally:
            c.logout()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    # Not pytest's tmp_path: its parents are 0700, and Dovecot's unprivileged
    # auth and mail processes must reach the user file and the maildir.
    with tempfile.TemporaryDirectory(prefix="omni-dovecot-") as tmp:
        Path(tmp).chmod(0o755)
        server = Dovecot(Path(tmp) / "dovecot")
        server.start()
        try:
            yield server
        finally:
            server.stop()


def imap_settings(server: Dovecot, **extra: Any) -> EmailSettings:
    return EmailSettings.model_validate({
        "OMNI_EMAIL_DOMAINS": "shop.example",
        "OMNI_IMAP_HOST": "127.0.0.1",
        "OMNI_IMAP_PORT": server.port,
        "OMNI_IMAP_SSL": False,
        "OMNI_IMAP_USER": USER,
        "OMNI_IMAP_PASSWORD": PASSWORD,
        "OMNI_IMAP_IDLE_S": 60,  # far longer than any wait below: only IDLE pushes count
        "OMNI_IMAP_BACKOFF_INITIAL_S": 0.1,
        "OMNI_IMAP_BACKOFF_MAX_S": 0.5,
        "OMNI_IMAP_TIMEOUT_S": 5,
        **extra,
    })


async def make_poller(settings: Settings, redis: Redis | None,
                      server: Dovecot, **extra: Any) -> tuple[ImapPoller, EnvelopeProducer]:
    producer = EnvelopeProducer(settings)
    ctx = HttpContext(settings=settings, sink=producer,
                         metrics=AdapterMetrics(CollectorRegistry()), redis=redis)
    return ImapPoller(ctx, imap_settings(server, **extra)), producer


@pytest.fixture
async def poller(topics_ready: Settings, aredis: Redis,
                 dovecot: Dovecot) -> AsyncIterator[ImapPoller]:
    p, producer = await make_poller(topics_ready, aredis, dovecot)
    async with producer, p:
        yield p


async def consume(settings: Settings, until: Callable[[list[Envelope]], bool],
                  timeout_s: float = 15.0) -> list[Envelope]:
    consumer = AIOKafkaConsumer(
        settings.topic(topics.INBOUND), bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    got: list[Envelope] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                got.extend(Envelope.from_json(r.value) for r in records)
            if until(got):
                return got
    finally:
        await consumer.stop()
    raise AssertionError(f"condition not met within {timeout_s} s; got {got!r}")


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


def mail(msg_id: str, body: str, charset: str = "utf-8") -> bytes:
    head = (f"From: buyer@example.com\r\nTo: {USER}\r\nSubject: order\r\n"
            f"Message-ID: <{msg_id}>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n")
    return head.encode() + body.encode("gb18030" if charset == "gb2312" else charset) + b"\r\n"


async def test_unseen_mail_is_produced_then_flagged_seen(
    dovecot: Dovecot, topics_ready: Settings, aredis: Redis
) -> None:
    dovecot.append(mail("pre1@example.com", "朱镕基的书还没到", "gb2312"))
    dovecot.append(mail("pre2@example.com", "second"))
    p, producer = await make_poller(topics_ready, aredis, dovecot)
    async with producer, p:
        got = await consume(topics_ready, lambda envs: len(envs) >= 2)
        await eventually(lambda: p.produced == 2)
        assert await asyncio.to_thread(dovecot.unseen) == []
    assert sorted(e.text for e in got) == ["order\n\nsecond", "order\n\n朱镕基的书还没到"]
    assert {e.account for e in got} == {USER}


async def test_idle_push_delivers_new_mail_without_waiting_for_a_poll(
    poller: ImapPoller, dovecot: Dovecot, topics_ready: Settings
) -> None:
    await asyncio.wait_for(poller.connected.wait(), 10)
    started = time.monotonic()
    await asyncio.to_thread(dovecot.append, mail("idle1@example.com", "idle push"))
    got = await consume(topics_ready, lambda envs: len(envs) >= 1)
    assert [e.channel_msg_id for e in got] == ["idle1@example.com"]
    assert time.monotonic() - started < 30  # the IDLE period is 60 s: this was a push


async def test_same_message_id_twice_is_produced_once_and_both_flagged(
    poller: ImapPoller, dovecot: Dovecot, topics_ready: Settings
) -> None:
    await asyncio.to_thread(dovecot.append, mail("dup@example.com", "one"))
    await asyncio.to_thread(dovecot.append, mail("dup@example.com", "one"))
    await asyncio.to_thread(dovecot.append, mail("last@example.com", "two"))
    await consume(topics_ready, lambda envs: any(e.channel_msg_id == "last@example.com"
                                                 for e in envs))
    await eventually(lambda: poller._ctx.metrics.registry.get_sample_value(
        "omni_adapter_duplicates_total", {"channel": "email", "account": USER}) == 1)
    await eventually(lambda: poller.produced == 2)
    assert await asyncio.to_thread(dovecot.unseen) == []


async def test_mail_stays_unseen_while_the_broker_is_down(
    settings: Settings, dovecot: Dovecot
) -> None:
    dead = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "produce_timeout_s": 0.5}
    )
    dovecot.append(mail("down@example.com", "broker down"))
    p, producer = await make_poller(dead, None, dovecot)
    async with p:
        await eventually(lambda: p.connects >= 2)  # produce failed -> backoff -> reconnect
        assert len(await asyncio.to_thread(dovecot.unseen)) == 1
    await producer.stop()


async def test_reconnects_after_the_server_restarts(
    dovecot: Dovecot, topics_ready: Settings, aredis: Redis
) -> None:
    # The IDLE period stays long (60 s): the mail appended right after the restart
    # must be found by the reconnect's search or announced to its IDLE (issue 11, 15).
    p, producer = await make_poller(topics_ready, aredis, dovecot)
    async with producer, p:
        await _reconnects(p, dovecot, topics_ready)


async def _reconnects(poller: ImapPoller, dovecot: Dovecot, topics_ready: Settings) -> None:
    await asyncio.wait_for(poller.connected.wait(), 10)
    await asyncio.to_thread(dovecot.stop)
    await eventually(lambda: not poller.connected.is_set())
    await asyncio.to_thread(dovecot.start)
    await asyncio.to_thread(dovecot.append, mail("after-restart@example.com", "back"))
    got = await consume(topics_ready, lambda envs: len(envs) >= 1)
    assert [e.channel_msg_id for e in got] == ["after-restart@example.com"]
    assert poller.connects >= 2


async def test_lifecycle_is_idempotent(settings: Settings, dovecot: Dovecot) -> None:
    p, producer = await make_poller(settings, None, dovecot)
    await p.start()
    await p.start()
    await asyncio.wait_for(p.connected.wait(), 10)
    await p.stop()
    await p.stop()
    assert not p.connected.is_set()
    await producer.stop()


@pytest.mark.parametrize("window", ["while_draining", "before_idle"])
async def test_mail_that_lands_between_search_and_idle_is_not_left_waiting(
    dovecot: Dovecot, topics_ready: Settings, aredis: Redis, window: str
) -> None:
    """Issue 11, item 15: a mail delivered after the UNSEEN search but before IDLE starts
    (while the poller fetches and flags the previous mail, or just before it sends IDLE)
    is produced at once, not when the IDLE period (here 600 s) ends."""
    p, producer = await make_poller(topics_ready, aredis, dovecot, OMNI_IMAP_IDLE_S=600)
    late = mail("late@example.com", "landed in the window")
    delivered = asyncio.Event()

    async def deliver_once() -> None:
        if not delivered.is_set():
            await asyncio.to_thread(dovecot.append, late)
            delivered.set()

    if window == "while_draining":
        dovecot.append(mail("first@example.com", "already there"))
        deliver_raw = p._deliver

        async def deliver(raw: bytes) -> int:
            n = await deliver_raw(raw)  # after this mail's FETCH, before its STORE
            await deliver_once()
            return n

        p._deliver = deliver  # type: ignore[method-assign]
    else:
        drain = p.drain

        async def drain_then_deliver(client: Any) -> int:
            n = await drain(client)  # the UNSEEN search is done; IDLE comes next
            await deliver_once()
            return n

        p.drain = drain_then_deliver  # type: ignore[method-assign]
    async with producer, p:
        got = await consume(topics_ready, lambda envs: any(
            e.channel_msg_id == "late@example.com" for e in envs), timeout_s=20)
    assert delivered.is_set()
    assert "late@example.com" in {e.channel_msg_id for e in got}


async def test_only_a_growing_folder_counts_as_new_mail(settings: Settings,
                                                       dovecot: Dovecot) -> None:
    """The size the server announces decides whether to search again before IDLE: a
    repeated count is no new mail (no search loop); after an expunge, the same count
    again is."""
    p, _ = await make_poller(settings, None, dovecot)
    p._on_size(b"EXISTS", 3)
    assert p._announced
    p._announced = False
    p._on_size(b"EXISTS", 3)
    assert not p._announced
    p._on_size(b"EXPUNGE", 2)
    p._on_size(b"EXISTS", 3)
    assert p._announced


HOSTILE_MAILS = [
    b"\r\n\r\njust a body, no headers",  # no header fields
    b"From: a@example.com\r\n\r\n",  # nothing to read
    b"Subject: no sender\r\n\r\nbody\r\n",
    b"From: a@b.example\r\nPrecedence: bu\xe9lk\r\nContent-Disposition: at\xe9tachment\r\n"
    b"Subject: \xff\xfe\r\n\r\n8-bit header fields\r\n",
    b"From: =?x?Q?" + b"=" * 500 + b"?=\r\nSubject: s\r\n\r\nx\r\n",
    b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    + b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * 60,
    b"From: a@example.com\r\nContent-Type: image/png\r\n\r\nonly an attachment\r\n",
]


async def test_hostile_mail_never_wedges_the_poller(
    dovecot: Dovecot, topics_ready: Settings, aredis: Redis
) -> None:
    """Issue 11's poison record, IMAP form: a message the parser cannot use must be
    flagged \\Seen and skipped, never crash the poller into a reconnect loop that
    leaves it (and every later mail) UNSEEN."""
    for raw in HOSTILE_MAILS:
        dovecot.append(raw)
    dovecot.append(mail("after-poison@example.com", "still delivered"))
    p, producer = await make_poller(topics_ready, aredis, dovecot)
    async with producer, p:
        got = await consume(topics_ready, lambda envs: any(
            e.channel_msg_id == "after-poison@example.com" for e in envs))
        deadline = time.monotonic() + 15  # the last \Seen follows the last produce
        while await asyncio.to_thread(dovecot.unseen):
            assert time.monotonic() < deadline, "mail left UNSEEN"
            await asyncio.sleep(0.1)
        assert p.connects == 1
    texts = {e.text for e in got}
    assert "order\n\nstill delivered" in texts
    assert "[image]" in texts  # the attachment-only mail
