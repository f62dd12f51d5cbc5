"""A private Docker engine for tests, benchmarks and CI: ``dockerd`` started here, stopped by its pid.

There is no init system on a CI machine and the host's engine (if any) is not ours to use, so
:class:`LocalDockerd` starts ``dockerd`` with its own data root, exec root, pid file and socket under a
short temporary directory (socket paths over 107 bytes fail), without a bridge and without touching the
firewall (``--bridge=none --iptables=false --ip6tables=false``: containers use ``network_mode`` ``host``
or ``none``), and stops it with SIGTERM to the process it started. Only the standard library is used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

INSTALL_HINT = "install the Docker engine from the distribution's packages: apt-get install -y docker.io"


class DockerdMissing(RuntimeError):
    """There is no dockerd binary on this machine."""


def _answers(sock_path: str) -> bool:
    """Whether the engine answers ``GET /_ping`` on its unix socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(sock_path)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.") and True
    except OSError:
        return False
    finally:
        s.close()


def _mounts_under(root: str) -> list[str]:
    """Mount points below ``root`` (from /proc/mounts; none where there is no such file)."""
    prefix = root.rstrip("/") + "/"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            points = [line.split()[1] for line in fh if len(line.split()) > 1]
    except OSError:
        return []
    return [p.replace("\\040", " ") for p in points if p.startswith(prefix)]


class LocalDockerd:
    """``dockerd`` in its own session, with everything it writes under one temporary directory."""

    def __init__(self, dockerd: str | None = None, startup_timeout: float = 60.0):
        self.binary = dockerd or shutil.which("dockerd") or ""
        self.startup_timeout = startup_timeout
        self.dir = ""
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> str:
        return os.path.join(self.dir, "docker.sock")

    @property
    def url(self) -> str:
        """The engine URL, as DOCKER_HOST takes it."""
        return f"unix://{self.socket_path}"

    def start(self) -> "LocalDockerd":
        if not self.binary:
            raise DockerdMissing(f"dockerd is not installed, so the Docker tests cannot run: {INSTALL_HINT}")
        self.dir = tempfile.mkdtemp(prefix="d", dir="/tmp")
        log = open(os.path.join(self.dir, "dockerd.log"), "wb")
        args = [self.binary, "--iptables=false", "--ip6tables=false", "--bridge=none",
                f"--data-root={self.dir}/root", f"--exec-root={self.dir}/exec", f"--pidfile={self.dir}/dockerd.pid",
                "-H", self.url, "--log-level=warn"]
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"dockerd exited with code {self.proc.returncode} at start-up:\n{tail}")
            if os.path.exists(self.socket_path) and _answers(self.socket_path):
                return self
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"dockerd did not answer on {self.socket_path} within {self.startup_timeout:g}s:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.dir, "dockerd.log"), "rb") as fh:
                return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the dockerd we started (it stops its containers and containerd), then remove its dir."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir:
            # dockerd can leave mounts of its own under its dirs (exec/netns/default): unmount them, deepest
            # first, so that nothing it made survives; then remove the dir without crossing into a mount
            for target in sorted(_mounts_under(self.dir), reverse=True):
                subprocess.run(["umount", target], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(["rm", "-rf", "--one-file-system", self.dir], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.dir = ""

    def __enter__(self) -> "LocalDockerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
