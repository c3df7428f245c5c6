"""The omniroute command line: classify, config check, customers import, schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis
from typer.testing import CliRunner

from omniroute.cli import app
from omniroute.router.keys import Keys
from omniroute.router.settings import Settings

MINI = Path(__file__).parent / "data" / "mini"
runner = CliRunner()


def _decisions(output: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


def test_classify_text_lines_from_stdin() -> None:
    result = runner.invoke(app, ["classify", "-", "-c", str(MINI)],
                           input="外卖还没到\n\n饭菜变质了\n")
    assert result.exit_code == 0, result.output
    out = _decisions(result.stdout)
    assert [d["skill_group"] for d in out] == ["logistics", "food_safety"]
    assert out[0]["tags"][0]["id"] == "logistics.delay"  # type: ignore[index]


def test_classify_csv_with_extra_columns(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("source,text,tier,amount\nx,退款没到账,vip,\ny,\"外卖还没到, 急\",,250\n",
                   encoding="utf-8")
    result = runner.invoke(app, ["classify", str(src), "-c", str(MINI), "--with-text"])
    assert result.exit_code == 0, result.output
    out = _decisions(result.stdout)
    assert [o["text"] for o in out] == ["退款没到账", "外卖还没到, 急"]
    assert out[0]["decision"]["skill_group"] == "vip"  # type: ignore[index]
    reasons = out[1]["decision"]["priority"]["reasons"]  # type: ignore[index]
    assert any("order amount 250" in r for r in reasons)


def test_classify_jsonl_and_a_bad_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "我被打了", "channel": "phone"}\n{"text": 3}\n', encoding="utf-8")
    result = runner.invoke(app, ["classify", str(src), "-c", str(MINI)])
    assert result.exit_code == 2
    assert _decisions(result.stdout)[0]["skill_group"] == "emergency"
    assert "line 2: expected an object with a string 'text' field" in result.stderr


def test_classify_refuses_a_bad_format_and_a_missing_file() -> None:
    bad = runner.invoke(app, ["classify", "-", "--format", "xml"], input="x\n")
    assert bad.exit_code == 2
    assert "--format must be one of" in bad.stderr
    missing = runner.invoke(app, ["classify", "/nonexistent/file.csv"])
    assert missing.exit_code == 2
    assert "cannot read /nonexistent/file.csv" in missing.stderr


def test_config_check_reports_ok_and_errors(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["config", "check", str(MINI)])
    assert ok.exit_code == 0
    assert "OK version=mini-1+" in ok.stdout
    broken = tmp_path / "cfg"
    broken.mkdir()
    for f in MINI.iterdir():
        broken.joinpath(f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    routing = broken / "routing.yaml"
    routing.write_text(routing.read_text(encoding="utf-8").replace("target: vip,", "target: vipp,"),
                       encoding="utf-8")
    bad = runner.invoke(app, ["config", "check", str(broken)])
    assert bad.exit_code == 2
    assert "unknown group 'vipp'" in bad.stderr


@pytest.mark.integration
def test_customers_import_loads_tiers(
    tmp_path: Path, settings: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("OMNI_REDIS_PREFIX", settings.redis_prefix)
    src = tmp_path / "tiers.csv"
    src.write_text("customer_id,tier\nc1,VIP\nc2,gold\n", encoding="utf-8")
    result = runner.invoke(app, ["customers", "import", str(src)])
    assert result.exit_code == 0, result.output
    key = Keys(settings.redis_prefix).customer_tiers()
    try:
        assert sync_redis.hgetall(key) == {b"c1": b"vip", b"c2": b"gold"}
        src.write_text("customer_id,tier\nc3,\n", encoding="utf-8")
        bad = runner.invoke(app, ["customers", "import", str(src)])
        assert bad.exit_code == 2
        assert "tiers.csv:2: empty customer_id or tier" in bad.stderr
    finally:
        sync_redis.delete(key)


def test_console_script_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "omniroute", "schema", "decision"],
                            capture_output=True, check=True, timeout=60)
    assert orjson.loads(result.stdout)["title"] == "Decision"


def test_a_bad_environment_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_HTTP_PORT", "eighty")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "invalid environment setting OMNI_HTTP_PORT" in result.stderr
    assert "'eighty'" in result.stderr
