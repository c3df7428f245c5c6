"""The import contracts of pyproject.toml: complete, and able to fail.

`lint-imports` runs in the README's test command; these tests make sure its contract
for the composition root names every module of it, and that a forbidden arrow really
breaks the check (run on a copy of the sources with one such import added).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _contract(name: str) -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == name]
    return contract


def test_every_composition_root_module_is_forbidden_to_the_packages() -> None:
    contract = _contract("nothing imports the composition root")
    modules = {f"omniroute.{p.stem}" for p in (ROOT / "omniroute").glob("*.py")
               if p.stem != "__init__"}
    assert set(contract["forbidden_modules"]) == modules
    assert set(contract["source_modules"]) == {
        f"omniroute.{d}" for d in ("router", "adapters", "skills", "sla")
    }


def test_lint_imports_fails_on_a_new_arrow_into_the_root(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    for name in ("omniroute", "router", "adapters", "skills", "sla", "config"):
        shutil.copytree(ROOT / name, copy / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(lint), "--no-cache"], cwd=copy, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    clean = run()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    calendar = copy / "sla" / "calendar.py"
    calendar.write_text(calendar.read_text(encoding="utf-8")
                        + "\nfrom ..rehearse import load_scenario  # noqa\n", encoding="utf-8")
    broken = run()
    assert broken.returncode != 0
    assert "nothing imports the composition root BROKEN" in broken.stdout


def test_the_channel_edge_does_not_load_the_decision_logic() -> None:
    """Adapters import the contracts in router, which build on skills' vocabulary; the
    tagger (its automaton, OpenCC) and the routing rules stay unloaded."""
    code = (
        "import sys\n"
        "import omniroute.adapters.http, omniroute.adapters.wechat.adapter\n"
        "import omniroute.adapters.email.smtp, omniroute.adapters.douyin.adapter\n"
        "heavy = ('ahocorasick', 'opencc', 'omniroute.skills.tagger',\n"
        "         'omniroute.skills.config', 'omniroute.skills.rules', 'omniroute.sla')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=Path("/")).stdout.strip()
    assert out == "[]"
