"""One settings tree: read from the environment once (``Settings()``), every variable
declared once, passed down; no module of the packages reads the environment itself.
One error root: every exception class of the project derives from ``OmniError``."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

import omniroute
from omniroute.cli import app
from omniroute.router.exceptions import OmniError
from omniroute.router.settings import (
    AgentApiSettings,
    ConsoleSettings,
    EmailSettings,
    PhoneSettings,
    Settings,
    SlaServiceSettings,
)
from omniroute.sla import SlaWorker

ROOT = Path(__file__).resolve().parent.parent
SECTIONS: dict[str, type[BaseModel]] = {
    "email": EmailSettings, "phone": PhoneSettings, "agent_api": AgentApiSettings,
    "sla": SlaServiceSettings,
}


def _aliases(model: type[BaseModel]) -> list[str]:
    return [f.alias for name, f in model.model_fields.items()
            if f.alias and name not in SECTIONS and name != "environ"]


def test_every_variable_is_declared_once() -> None:
    names = _aliases(Settings) + [a for m in SECTIONS.values() for a in _aliases(m)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated == []
    assert "OMNI_AGENT_LIVE_TTL_S" in names
    assert "OMNI_CUSTOMER_ID_SALT" in names
    assert "OMNI_TANSU_LOG" in names


def _code_files() -> list[Path]:
    """The packages' modules and the composition root's (not its links to the packages)."""
    files = [p for package in ("router", "adapters", "sla", "skills")
             for p in sorted((ROOT / package).rglob("*.py"))]
    return files + sorted((ROOT / "omniroute").glob("*.py"))


def test_every_variable_the_code_names_is_declared() -> None:
    declared = set(_aliases(Settings) + [a for m in SECTIONS.values() for a in _aliases(m)])
    declared |= set(_aliases(ConsoleSettings))
    named = {(p.relative_to(ROOT).as_posix(), n) for p in _code_files()
             for n in re.findall(r"\bOMNI_[A-Z0-9_]*[A-Z0-9]\b", p.read_text(encoding="utf-8"))}
    assert sorted((f, n) for f, n in named if n not in declared) == []


def test_a_child_process_environment_carries_these_settings(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI_GROUP_INSTANCE_ID", "pod-0")
    monkeypatch.setenv("OMNI_SMTP_PORT", "2626")  # a section's: passed through as read
    monkeypatch.setenv("SOME_PATH", "/opt/x")
    base = Settings()
    settings = base.model_copy(update={
        "kafka_bootstrap": "127.0.0.1:1", "http_port": 9999, "fast_rebalance": True,
        "hmac_window_s": 12.5, "group_instance_id": None, "tansu_log": "debug",
        "ingest_tokens": (SecretStr("t1"), SecretStr("t2")),
        "customer_id_salt": SecretStr("pepper"), "config_dir": ROOT / "config",
    })
    monkeypatch.setenv("OMNI_HTTP_PORT", "1")  # changed after the start: not read again
    env = settings.child_environ({"OMNI_AGENT_TOKENS": '["a1"]'})
    assert (env["SOME_PATH"], env["OMNI_SMTP_PORT"], env["OMNI_AGENT_TOKENS"]) == (
        "/opt/x", "2626", '["a1"]')
    assert "OMNI_GROUP_INSTANCE_ID" not in env  # unset in the tree: not inherited
    assert env["OMNI_HTTP_PORT"] == "9999"
    for name in list(os.environ):  # the child: exactly this environment
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = Settings()
    roots = [n for n in Settings.model_fields if n not in SECTIONS and n not in (
        "console", "environ")]
    assert {n: getattr(child, n) for n in roots} == {n: getattr(settings, n) for n in roots}
    assert child.email.smtp_port == 2626


def test_settings_reads_the_whole_tree_from_the_environment(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI_HTTP_PORT", "9090")
    monkeypatch.setenv("OMNI_EMAIL_DOMAINS", "Kefu.Example.com, help.example.com")
    monkeypatch.setenv("OMNI_SMTP_PORT", "2626")
    monkeypatch.setenv("OMNI_TWILIO_AUTH_TOKEN", "tw-secret")
    monkeypatch.setenv("OMNI_AGENT_TOKENS", '["a1", "a2"]')
    monkeypatch.setenv("OMNI_AGENT_LIVE_TTL_S", "30")
    monkeypatch.setenv("OMNI_SLA_TICK_S", "0.5")
    monkeypatch.setenv("OMNI_CUSTOMER_ID_SALT", "pepper")
    monkeypatch.setenv("OMNI_WECHAT_SHOP_TOKEN", "named-by-channels-yaml")
    monkeypatch.setenv("EMAIL", "someone@example.org")  # unrelated variables named like a section
    s = Settings()
    assert s.http_port == 9090
    assert s.email.domains == ("kefu.example.com", "help.example.com")
    assert s.email.smtp_port == 2626
    assert s.phone.twilio_auth_token is not None
    assert s.phone.twilio_auth_token.get_secret_value() == "tw-secret"
    assert [t.get_secret_value() for t in s.agent_api.agent_tokens] == ["a1", "a2"]
    assert (s.agent_api.agent_live_ttl_s, s.sla.tick_s) == (30.0, 0.5)
    assert s.customer_id_salt.get_secret_value() == "pepper"
    assert s.environ["OMNI_WECHAT_SHOP_TOKEN"] == "named-by-channels-yaml"
    # read once: a later change of the environment does not reach these settings
    monkeypatch.setenv("OMNI_SMTP_PORT", "2727")
    assert s.email.smtp_port == 2626
    # secrets and the environment snapshot stay out of logs
    assert "tw-secret" not in repr(s)
    assert "named-by-channels-yaml" not in repr(s)
    assert "environ" not in s.model_dump()


def test_the_sla_worker_takes_its_section_and_the_agents_liveness(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI_AGENT_LIVE_TTL_S", "45")
    monkeypatch.setenv("OMNI_SLA_TICK_S", "2")
    worker = SlaWorker(Settings(), CollectorRegistry())
    assert (worker.agent_live_ttl_s, worker.tick_s) == (45.0, 2.0)


def test_a_bad_section_variable_is_named_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_SMTP_PORT", "twenty-five")
    monkeypatch.setenv("OMNI_IMAP_PORT", "0")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "invalid environment setting email.OMNI_SMTP_PORT" in result.stderr
    assert "'twenty-five'" in result.stderr


def test_a_bad_secret_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_AGENT_TOKENS", "not-json-s3cr3t")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "OMNI_AGENT_TOKENS" in result.stderr
    assert "s3cr3t" not in result.stderr


def test_no_module_reads_the_environment_itself() -> None:
    offenders = []
    for path in _code_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel == "router/settings.py":
            continue
        if re.search(r"\bos\.(environ|getenv)\b|\bBaseSettings\b", text):
            offenders.append(rel)
    assert offenders == []


def test_every_error_the_project_defines_derives_from_the_one_root() -> None:
    defined, strays = 0, []
    for info in pkgutil.walk_packages(omniroute.__path__, "omniroute."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                defined += 1
                if not issubclass(obj, OmniError):
                    strays.append(f"{module.__name__}.{name}")
    assert strays == []
    assert defined > 20  # the walk reached the packages behind the namespace links
