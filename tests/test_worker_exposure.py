"""The router worker's web server binds the configured host only, serves our pages only,
and keeps its data folder out of the directory it was started in (issue 11, item 8)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from omniroute.router.app import create_worker_app
from omniroute.router.settings import Settings
from tests.servers import stop_worker, wait_for, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(120)]
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel writes them) listening on ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == LISTEN:
                    found.add(address)
    return found


def test_app_settings_bind_host_no_faust_pages_data_dir(settings: Settings,
                                                       tmp_path: Path) -> None:
    s = settings.model_copy(update={"worker_data_dir": tmp_path / "state"})
    app, _ = create_worker_app(s)
    assert app.conf.web_bind == s.http_host == "127.0.0.1"
    assert not app.conf.web_tables_enabled
    assert not app.conf.web_router_enabled
    assert Path(app.conf.datadir).parent == tmp_path / "state"
    assert Path(app.conf.datadir).is_absolute()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_worker_listens_on_loopback_only_without_faust_pages_or_cwd_data(
    topics_ready: Settings, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data = tmp_path / "data"
    env = worker_env(topics_ready, OMNI_HTTP_HOST="127.0.0.1", OMNI_WORKER_DATA_DIR=str(data))
    port = int(env["OMNI_WORKER_WEB_PORT"])
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniroute", "worker", "--loglevel", "warning"],
            env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(f"{base}/readyz") == 200, 60, proc, log, "/readyz 200")
        # loopback only: 0100007F is 127.0.0.1; 00000000 (or :: in tcp6) would be every interface
        assert _listening_addresses(port) == {"0100007F"}
        assert _status(f"{base}/metrics") == 200
        for page in ("/table", "/table/", "/router", "/router/", "/graph/", "/assignment/"):
            assert _status(f"{base}{page}") == 404, page
        assert list(cwd.iterdir()) == []
        assert (data / f"{topics_ready.consumer_group}-worker-data").is_dir()
    finally:
        code = stop_worker(proc)
    assert code == 0, log.read_text()[-3000:]
    assert list(cwd.iterdir()) == []
