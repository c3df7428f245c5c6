#!/usr/bin/env python3
"""Task runner that needs nothing but Python: it creates .venv, installs, and runs.

    python3 dev.py demo     set up, then run the end-to-end demo on an embedded broker + Redis
    python3 dev.py test     set up, then run lint, type checks and the whole test suite
    python3 dev.py bench    set up, then run the router benchmark
    python3 dev.py setup    only create .venv and install omniroute with its dev extras
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".omniroute-installed"
SOURCES = ("omniroute", "router", "adapters", "skills", "sla")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, check=False)  # noqa: S603
    if result.returncode != 0:
        sys.exit(result.returncode)


def setup() -> None:
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(digest)


def main(argv: list[str]) -> None:
    task = argv[0] if argv else "help"
    rest = argv[1:]
    if task in {"help", "-h", "--help"}:
        print(__doc__)
        return
    setup()
    if task == "setup":
        return
    if task == "demo":
        run(BIN / "omniroute", "demo", *rest)
    elif task == "test":
        run(BIN / "ruff", "check", *SOURCES, "tests", "dev.py")
        run(BIN / "lint-imports")  # the layers: see [tool.importlinter] in pyproject.toml
        run(BIN / "mypy")
        run(PY, "-m", "pytest", *rest)
    elif task == "bench":
        run(BIN / "omniroute", "bench", *rest)
    elif task == "lint":
        run(BIN / "ruff", "check", *SOURCES, "tests", "dev.py")
        run(BIN / "lint-imports")
        run(BIN / "mypy")
    else:
        print(f"unknown task {task!r}\n{__doc__}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
