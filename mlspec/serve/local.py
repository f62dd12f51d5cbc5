"""Start a worker process and wait for its ready line (tests, benchmarks, standalone use).

The deployment supervisor does the same with its own socket and several workers; this is the smallest
correct way: a pipe for ``--status-fd``, the first JSON line read from it, the process stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field


class WorkerFailed(Exception):
    """The worker reported a failure (or died) before it was ready; its text is the worker's error."""


@dataclass
class Worker:
    proc: subprocess.Popen
    ready: dict
    port: int
    started: float
    stderr_path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def seconds_to_ready(self) -> float:
        return self.ready.get("_wall", 0.0)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain) and wait; returns the exit code (kills after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_worker(config_path: str, *, port: int | None = 0, fd: int | None = None, env: dict | None = None,
                 stderr=None, timeout: float = 180.0, python: str | None = None) -> Worker:
    """Spawn ``python -m mlspec.serve.worker`` on ``port`` (0: any free port) or an inherited socket ``fd``,
    and return once it is ready; WorkerFailed with its error otherwise."""
    r, w = os.pipe()
    cmd = [python or sys.executable, "-m", "mlspec.serve.worker", "--config", str(config_path),
           "--status-fd", str(w)]
    cmd += ["--fd", str(fd)] if fd is not None else ["--host", "127.0.0.1", "--port", str(port or 0)]
    pass_fds = (w,) + ((fd,) if fd is not None else ())
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, pass_fds=pass_fds, env=env, stderr=stderr, stdout=subprocess.DEVNULL)
    os.close(w)
    buf = b""
    try:
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                raise WorkerFailed(f"the worker was not ready within {timeout:.0f} s")
            ready, _, _ = select.select([r], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(r, 65536)
                if not chunk:  # the worker closed the pipe: it exited
                    break
                buf += chunk
            elif proc.poll() is not None and not buf:
                break
    finally:
        os.close(r)
    line = buf.split(b"\n", 1)[0]
    try:
        event = json.loads(line) if line else {}
    except ValueError:
        event = {}
    if event.get("event") != "ready":
        proc.wait(30)
        raise WorkerFailed(event.get("error") or f"the worker exited with code {proc.returncode} before it was "
                                                 "ready")
    event["_wall"] = time.perf_counter() - t0
    return Worker(proc, event, int(event["port"]), t0)
