"""A real single-node Ray cluster for tests and benchmarks: `ray start --head --block` in its own session.

It never runs `ray stop` (which kills every Ray process on the machine, other people's too): it sends
SIGTERM to its own head process, then SIGKILL to whatever of its process group is left, and the head gets
SIGTERM when the process that started it dies. Every port it chooses is free when chosen, so that several
clusters (parallel test sessions) can share a machine; the temp dir is short, because Ray's socket paths
must fit in 107 bytes. Token authentication (on by default since Ray 2.5x) is turned off for the cluster and for
this process's clients through ``RAY_AUTH_MODE=disabled``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port(low: int = 0, high: int = 0) -> int:
    """A TCP port nobody listens on now (in [low, high] when given)."""
    candidates = range(low, high + 1) if low else [0]
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in {low}-{high}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM it when this process dies (a killed test run leaks no cluster)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class LocalRayCluster:
    """``with LocalRayCluster(num_cpus=2) as c: ... c.address ...``"""

    def __init__(self, num_cpus: int = 2, object_store_memory: int = 300_000_000, ray: str | None = None):
        self.num_cpus, self.object_store_memory = num_cpus, object_store_memory
        self.ray = ray or str(Path(sys.executable).with_name("ray"))
        self.proc: subprocess.Popen | None = None
        self.temp_dir = ""
        self.port = self.client_port = 0
        self.log_path = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def command(self) -> list[str]:
        return [self.ray, "start", "--head", "--block", f"--num-cpus={self.num_cpus}", "--include-dashboard=false",
                "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                f"--object-store-memory={self.object_store_memory}", "--disable-usage-stats",
                # fixed defaults that would collide with another cluster on this machine
                f"--ray-client-server-port={self.client_port}",
                f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]

    def start(self, timeout: float = 90.0) -> "LocalRayCluster":
        os.environ["RAY_AUTH_MODE"] = "disabled"  # for the clients in this process
        self.temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")
        self.port = free_port()
        self.client_port = free_port(9000, 10001)  # Ray Client server: must stay below the worker ports
        env = dict(os.environ, RAY_AUTH_MODE="disabled")
        env.pop("RAY_ADDRESS", None)
        # Ray's processes read the bytecode the venv already has: with a PYTHONPYCACHEPREFIX that is empty (or
        # not writable) every agent and worker compiles Ray from source, and on a loaded machine the raylet
        # aborts after 15 s waiting for its agents' port files
        env.pop("PYTHONPYCACHEPREFIX", None)
        self.log_path = self.temp_dir + ".log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, stdin=subprocess.DEVNULL,
                                         preexec_fn=_stop_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()  # read before stop() removes the log
                self.stop()
                raise RuntimeError(f"ray start exited with code {self.proc.returncode}: {tail}")
            if self._ready() and port_open("127.0.0.1", self.port) and port_open("127.0.0.1", self.client_port):
                return self  # the Ray Client server comes up a few seconds after the rest
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"the Ray head did not come up within {timeout:g}s: {tail}")

    def _ready(self) -> bool:
        """`ray start --block` prints this once every head process is up."""
        try:
            return b"Ray runtime started" in Path(self.log_path).read_bytes()
        except OSError:
            return False

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM to the head process only: it stops its children in about 2 s. SIGTERM to the whole
            # group at once makes `ray start --block` wait forever for children that are already stopping.
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        # the head's children (raylet, workers) are in the same session: make sure none outlives it
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
