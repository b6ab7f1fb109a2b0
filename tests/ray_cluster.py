"""A real two-node Ray cluster on 127.0.0.1 for the tests marked ``ray``.

``ray start --head --block`` and ``ray start --address ... --block`` run as child
processes in sessions of their own, each node with two logical CPUs (Ray Data needs
headroom beside an actor pool: with one per node it never scheduled a read), a small
object store and ports of its own (several clusters can run on one machine at once:
nothing here uses Ray's fixed default ports or ``ray stop``, which would stop every
cluster of the machine).
:meth:`RayCluster.stop` kills both process groups and every process left whose command
line names the cluster's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["RayCluster"]

_OBJECT_STORE_BYTES = 400 * 2**20

# Runs detached beside the cluster: when the test process dies without stopping the
# cluster (killed by a timeout, say), it kills the nodes' process groups and every
# process that names the cluster's temp folder or address, so no cluster is orphaned.
_WATCHDOG = """
import os, pathlib, shutil, signal, sys, time
parent, temp_dir, address = int(sys.argv[1]), sys.argv[2], sys.argv[3]
groups = [int(arg) for arg in sys.argv[4:]]
while os.path.isdir(temp_dir):
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
else:
    sys.exit(0)
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
marks = (temp_dir.encode(), address.encode())
for entry in pathlib.Path("/proc").iterdir():
    if not entry.name.isdigit() or int(entry.name) == os.getpid():
        continue
    try:
        cmdline = (entry / "cmdline").read_bytes()
    except OSError:
        continue
    if any(mark in cmdline for mark in marks):
        try:
            os.kill(int(entry.name), signal.SIGKILL)
        except ProcessLookupError:
            pass
shutil.rmtree(temp_dir, ignore_errors=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """Start with :meth:`start`, connect with ``ray.init(address=cluster.address)``."""

    def __init__(self) -> None:
        # short: Ray's unix sockets live under it (108 bytes for a socket path)
        self.temp_dir = tempfile.mkdtemp(prefix="myr-", dir="/tmp")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _node_ports(self) -> list[str]:
        return [
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
        ]

    def _spawn(self, args: list[str], log: str) -> None:
        # RAY_AUTH_MODE: with ~/.ray/auth_token present (any ray.init() that started a local
        # cluster writes it) `ray start` turns token auth on and the tests' driver is refused
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ADDRESS": "",
            "RAY_AUTH_MODE": "disabled",
        }
        env.pop("RAY_ADDRESS")
        out = open(Path(self.temp_dir) / log, "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [_ray_bin(), "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out.close()
        self._procs.append(proc)

    def _wait_nodes(self, count: int, timeout_s: float) -> None:
        import ray  # the tests that use a cluster need ray; the rest of the suite does not

        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Ray node exited early: {self.logs()}")
            try:
                ray.init(address=self.address, log_to_driver=False, namespace="modelyard-tests")
                try:
                    alive = [node for node in ray.nodes() if node["Alive"]]
                finally:
                    ray.shutdown()
                if len(alive) >= count:
                    return
                last = f"{len(alive)} of {count} nodes alive"
            except Exception as exc:  # not up yet: retry until the deadline
                last = exc
            time.sleep(0.5)
        raise RuntimeError(
            f"the Ray cluster did not come up in {timeout_s} s ({last}): {self.logs()}"
        )

    def start(self, timeout_s: float = 90.0) -> RayCluster:
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()  # a node that came up is not left behind
            raise

    def _start(self, timeout_s: float) -> RayCluster:
        common = [
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            f"--object-store-memory={_OBJECT_STORE_BYTES}",
        ]
        self._spawn(
            [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                *common,
                *self._node_ports(),
            ],
            "head.log",
        )
        self._wait_nodes(1, timeout_s)
        self._spawn([f"--address={self.address}", *common, *self._node_ports()], "worker.log")
        self._wait_nodes(2, timeout_s)
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(os.getpid()),
                self.temp_dir,
                self.address,
                *(str(proc.pid) for proc in self._procs),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def logs(self) -> str:
        parts = []
        for name in ("head.log", "worker.log"):
            path = Path(self.temp_dir) / name
            if path.is_file():
                parts.append(f"{name}: {path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        self._kill_strays()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self._watchdog is not None:  # it exits within a second of the folder's removal
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait(timeout=10)

    def _kill_strays(self) -> None:
        """Kill what is left of this cluster (processes that name its temp folder or port)."""
        marks = (self.temp_dir.encode(), f"127.0.0.1:{self.port}".encode())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
