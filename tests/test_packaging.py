"""The installed artefact: build the wheel, install it into a clean virtual environment
beside distributions that own the old generic top-level names, and run the console script.

The test stays on loopback: the clean environment gets no package index. Our wheel and
two stub distributions (``router`` and ``adapters``, built here) are installed into it
without dependencies; the third-party dependencies are made visible read-only from the
development environment's site-packages, appended after the clean one's own (so they
can never shadow what the clean environment installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, input=stdin, capture_output=True,
        text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(project: Path, out: Path) -> Path:
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, project)
    (wheel,) = [w for w in out.glob("*.whl")]
    return wheel


def _stub_project(where: Path, name: str) -> Path:
    """A distribution named ``name`` that owns the top-level package ``name``."""
    project = where / f"stub-{name}"
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text(f'OWNER = "stub-{name}"\n')
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{name}"
        version = "9.9.9"

        [tool.hatch.build.targets.wheel]
        packages = ["{name}"]
        """))
    return project


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel as ``python -m build`` makes it by default: from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    (wheel,) = [w for w in out.glob("*.whl")]
    return wheel


def test_the_wheel_built_from_the_sdist_equals_the_direct_one(
    wheel: Path, tmp_path: Path
) -> None:
    """The sdist carries every real folder: a wheel built from it has every module."""
    direct = _build_wheel(ROOT, tmp_path)
    with zipfile.ZipFile(wheel) as via_sdist, zipfile.ZipFile(direct) as straight:
        names = sorted(n for n in via_sdist.namelist() if ".dist-info/" not in n)
        assert names == sorted(n for n in straight.namelist() if ".dist-info/" not in n)
    for module in ("router/worker.py", "skills/tagger.py", "sla/worker.py",
                   "adapters/http.py", "config/taxonomy.yaml"):
        assert f"omniroute/{module}" in names


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """bin/ of a new virtual environment holding omniroute and the stub distributions."""
    base = tmp_path_factory.mktemp("venv")
    env_dir = base / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    stubs = [_build_wheel(_stub_project(base, name), base / f"dist-{name}")
             for name in ("router", "adapters")]
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run(py, "-m", "pip", "install", "--no-deps", "--quiet", *stubs, env=offline)
    _run(py, "-m", "pip", "install", "--no-deps", "--quiet", wheel, env=offline)
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    # dependencies only: a plain directory entry, so the development environment's .pth
    # files (its editable checkout among them) are not processed
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin"


def _clean_env_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OMNI_"))}


def test_wheel_holds_only_the_omniroute_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"omniroute", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}"
                    ".dist-info"}, tops
    for module in ("omniroute/cli.py", "omniroute/router/models.py",
                   "omniroute/adapters/wechat/adapter.py", "omniroute/skills/tagger.py",
                   "omniroute/sla/worker.py", "omniroute/config/routing.yaml",
                   "omniroute/config/taxonomy.yaml", "omniroute/data/messages.csv"):
        assert module in names, module
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "omniroute = omniroute.cli:main" in entry_points


def test_installs_beside_distributions_owning_the_old_names(clean_env: Path) -> None:
    out = _run(clean_env / "python", "-I", "-c", textwrap.dedent("""\
        import adapters, router
        import omniroute.adapters.wechat, omniroute.router.models, omniroute.sla.worker
        from omniroute.router.settings import default_config_dir
        print(router.OWNER, adapters.OWNER)
        print(omniroute.router.models.__file__)
        print(default_config_dir())
        """), cwd=clean_env.parent, env=_clean_env_vars()).stdout.split("\n")
    assert out[0] == "stub-router stub-adapters"
    assert str(clean_env.parent) in out[1]  # ours, from the clean environment
    assert out[2].endswith(os.path.join("omniroute", "config"))
    assert (Path(out[2]) / "routing.yaml").is_file()


def test_console_script_runs_from_the_wheel(clean_env: Path, tmp_path: Path) -> None:
    env = _clean_env_vars()
    assert "Usage" in _run(clean_env / "omniroute", "--help", cwd=tmp_path, env=env).stdout
    demo = _run(clean_env / "omniroute", "demo", "--help", cwd=tmp_path, env=env).stdout
    assert "--messages" in demo
    lines = "外卖送了两个小时还没到\n饭里有头发，吃完拉肚子\n我要去12315投诉你们\n"
    result = _run(clean_env / "omniroute", "classify", "-", cwd=tmp_path, env=env, stdin=lines)
    decisions = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(decisions) == 3
    import orjson

    tags = [{t["id"].split(".")[0] for t in orjson.loads(d)["tags"]} for d in decisions]
    assert "logistics" in tags[0]
    assert "food_safety" in tags[1]
    assert "legal" in tags[2]


_DEPENDENCY_CHECK = """\
import importlib.metadata as md, re, sys
import omniroute.cli, omniroute.node, omniroute.classify, omniroute.router.worker
import omniroute.sla.worker, omniroute.sla.service, omniroute.adapters.http
import omniroute.adapters.email.smtp, omniroute.adapters.wechat.adapter
from omniroute.classify import *  # noqa: F403
def name(req):
    return re.split(r"[ ;<>=!~\\[(]", req, maxsplit=1)[0].lower().replace("_", "-")
def closure(dist):
    seen, todo = set(), [dist]
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            reqs = md.requires(d) or []
        except md.PackageNotFoundError:
            continue
        todo += [name(r) for r in reqs if "extra ==" not in r]
    return seen
allowed = closure("omniroute")
owners = md.packages_distributions()
stdlib = set(sys.stdlib_module_names)
missing = set()
for mod in list(sys.modules):
    top = mod.split(".")[0]
    if top in stdlib or top.startswith("_") or top == "omniroute":
        continue
    dists = {d.lower().replace("_", "-") for d in owners.get(top, [])}
    if dists and not dists & allowed:
        missing.add(f"{top} ({', '.join(sorted(dists))})")
print("\\n".join(sorted(missing)))
"""


def test_every_module_the_runtime_imports_is_a_declared_dependency(clean_env: Path) -> None:
    """The clean environment borrows the development environment's packages, so an
    import of a package that the wheel does not require would pass the tests above:
    every third-party module the runtime loads must come from the Requires-Dist
    closure of the wheel (without extras)."""
    out = _run(clean_env / "python", "-I", "-c", _DEPENDENCY_CHECK,
               cwd=clean_env.parent, env=_clean_env_vars()).stdout.strip()
    assert out == "", f"imported but not declared as runtime dependencies:\n{out}"
