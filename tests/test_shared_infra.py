"""The pieces written once for every package: backoff and retry, the start/stop
lifecycle, text clipping, the validation-error formatter and the /readyz cache."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field, ValidationError

from omniroute.adapters.text import clip
from omniroute.router import format_validation_error
from omniroute.router.http import Readiness
from omniroute.router.lifecycle import Lifecycle
from omniroute.router.retry import Backoff, retrying


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    with pytest.raises(ValueError, match="initial_s <= max_s"):
        Backoff(2.0, 1.0)


async def test_retrying_retries_the_expected_failures_only() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert await retrying(flaky, (OSError,), "flaky", backoff=Backoff(0.001, 0.002)) == "ok"
    assert len(calls) == 3

    async def broken() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await retrying(broken, (OSError,), "broken", backoff=Backoff(0.001, 0.002))


async def test_retrying_gives_up_when_stopped() -> None:
    stop = asyncio.Event()
    attempts = 0

    async def down() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            stop.set()  # a stop request arrives while the step keeps failing
        raise ConnectionError("down")

    assert await retrying(down, (OSError,), "down", backoff=Backoff(0.001, 0.002),
                          stop=stop) is None
    assert attempts == 2


class _Resource(Lifecycle):
    def __init__(self, fail_starts: int = 0) -> None:
        self.fail_starts = fail_starts
        self.starts = self.stops = 0
        self.held = False

    async def _start(self) -> None:
        self.starts += 1
        self.held = True  # acquired before the failure: _stop must release it
        if self.fail_starts:
            self.fail_starts -= 1
            raise ConnectionError("refused")

    async def _stop(self) -> None:
        self.stops += 1
        self.held = False


async def test_lifecycle_start_and_stop_are_idempotent() -> None:
    r = _Resource()
    await r.stop()  # never started: nothing to release
    assert r.stops == 0
    await asyncio.gather(r.start(), r.start())
    await r.start()
    assert (r.starts, r.running) == (1, True)
    await r.stop()
    await r.stop()
    assert (r.stops, r.running, r.held) == (1, False, False)
    async with r as same:
        assert same is r
        assert r.running
    assert (r.starts, r.stops, r.running) == (2, 2, False)


async def test_a_failed_start_releases_and_can_be_retried() -> None:
    r = _Resource(fail_starts=1)
    with pytest.raises(ConnectionError):
        await r.start()
    assert (r.running, r.held, r.stops) == (False, False, 1)
    await r.start()
    assert (r.running, r.held) == (True, True)


def test_clip_keeps_short_text_and_marks_a_cut() -> None:
    assert clip("短消息", 5) == "短消息"
    assert clip("12345", 5) == "12345"
    assert clip("123456", 5) == "1234…"
    assert len(clip("x" * 30_000)) == 20_000


class _Account(BaseModel):
    app_id: str = Field(min_length=1)
    token: str
    port: int = 0


def _error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Account.model_validate(data)
    return info.value


def test_formatter_names_key_path_message_and_value() -> None:
    exc = _error({"app_id": "", "token": "hunter2", "port": "eighty"})
    text = format_validation_error(exc, prefix="channels.yaml: wechat.")
    lines = text.splitlines()
    assert lines[0].startswith("channels.yaml: wechat.app_id: String should have at least 1")
    assert lines[0].endswith("(got '')")
    assert lines[1].startswith("channels.yaml: wechat.port: Input should be a valid integer")
    assert "(got 'eighty')" in lines[1]


def test_formatter_hides_secrets_limits_and_can_omit_values() -> None:
    exc = _error({"app_id": 1, "token": 12345678, "port": "x"})
    hidden = format_validation_error(exc, hide=("TOKEN",), sep="; ", limit=2)
    assert "12345678" not in hidden
    assert "token: Input should be a valid string (got <secret>)" in hidden
    assert hidden.endswith("; and 1 more")
    bare = format_validation_error(exc, prefix="messages[1].", show_input=False, sep="; ")
    assert bare.split("; ")[0] == "messages[1].app_id: Input should be a valid string"
    assert "got" not in bare


class _Counting:
    """A readiness check that counts its calls and fails while ``down`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def __call__(self) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)  # a real round trip: concurrent probes overlap it
        if self.down:
            raise ConnectionError("refused")


async def test_readiness_checks_once_per_cache_period_under_a_burst() -> None:
    check = _Counting()
    ready = Readiness({"redis": check}, cache_s=3600.0)
    # a concurrent burst waits for the one check in flight, then a sequential one
    results = await asyncio.gather(*(ready.status() for _ in range(50)))
    results += [await ready.status() for _ in range(50)]
    assert check.calls == 1
    assert {code for code, _ in results} == {200}
    # the cached answer stands even when the dependency goes away within the period
    check.down = True
    assert (await ready.status())[0] == 200
    assert check.calls == 1


async def test_readiness_checks_again_after_the_cache_period() -> None:
    check = _Counting()
    ready = Readiness({"redis": check}, cache_s=0.2)
    assert await ready.status() == (200, {"status": "ready"})
    assert check.calls == 1
    check.down = True
    await asyncio.sleep(0.3)  # past the period: the next probe asks again
    code, body = await ready.status()
    assert check.calls == 2
    assert (code, body) == (503, {"status": "unavailable", "problems": ["redis: refused"]})
    check.down = False
    await asyncio.sleep(0.3)
    assert (await ready.status())[0] == 200
    assert check.calls == 3
