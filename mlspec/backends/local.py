"""The local backend: each step in a subprocess of its own (``python -m mlspec.runner``).

A crashing, leaking or hanging step cannot take mlspec down: it runs in its own session (process group),
its stdout/stderr go to a log file, a timeout or Ctrl-C kills the whole group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from mlspec.backends.api import Backend, Requirement, Task, TaskResult, TaskStatus

LOG_LIMIT = 8 << 20  # keep at most the last 8 MiB of a step's log


def _kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


def read_log(path: Path) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size > LOG_LIMIT:
                fh.seek(size - LOG_LIMIT)
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class LocalBackend(Backend):
    type = "local"
    settings_schema = json.loads(resources.files("mlspec.schemas").joinpath("backend-local.schema.json").read_text())

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="mlspec-local-"))

    def capacity(self) -> int:
        return int(self.settings.get("max_workers") or os.cpu_count() or 1)

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(self.capacity(), 1) * 2, thread_name_prefix="mlspec-local")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def submit(self, task: Task) -> Future:
        self.start()
        return self._pool.submit(self._run, task)

    def _run(self, task: Task) -> TaskResult:
        workdir = Path(tempfile.mkdtemp(prefix="t-", dir=self._tmp))
        result_path = workdir / "result.json"
        log_path = workdir / "log.txt"
        python = self.settings.get("python") or sys.executable
        env = dict(os.environ)
        env.update({k: str(v) for k, v in (task.payload.get("env") or {}).items()})
        env["PYTHONUNBUFFERED"] = "1"
        try:
            if self._cancelled.is_set():
                return TaskResult(TaskStatus.CANCELLED, error="cancelled before it started")
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([python, "-m", "mlspec.runner", str(result_path)], stdin=subprocess.PIPE,
                                        stdout=log, stderr=subprocess.STDOUT, cwd=str(self.context.project_dir),
                                        env=env, start_new_session=True)
                with self._lock:
                    self._procs[task.id] = proc
                try:
                    proc.stdin.write(json.dumps(task.payload).encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                try:
                    proc.wait(timeout=task.timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    return TaskResult(TaskStatus.TIMED_OUT, error=f"timed out after {task.timeout:g}s and was killed",
                                      log=read_log(log_path), duration=float(task.timeout or 0))
                finally:
                    with self._lock:
                        self._procs.pop(task.id, None)
            log_text = read_log(log_path)
            if self._cancelled.is_set() and proc.returncode != 0:
                return TaskResult(TaskStatus.CANCELLED, error="cancelled", log=log_text)
            if result_path.is_file():
                return TaskResult.from_runner(json.loads(result_path.read_text()), log_text)
            tail = "\n".join(log_text.strip().splitlines()[-5:])
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with code {proc.returncode}"
            return TaskResult(TaskStatus.FAILED, error=f"the step process {how}" + (f": {tail}" if tail else ""),
                              log=log_text)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def cancel_all(self) -> None:
        self._cancelled.set()
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            _kill_group(p, grace=1.0)

    def preflight(self, requirements: list[Requirement]) -> list[str]:
        problems = []
        cpus = os.cpu_count() or 1
        has_gpu = shutil.which("nvidia-smi") is not None
        for r in requirements:
            if float(r.resources.get("gpus") or 0) > 0 and not has_gpu:
                problems.append(f"{r.address} asks for {r.resources['gpus']:g} GPU(s); this machine has none "
                                "(no nvidia-smi): run it on a backend with GPUs (steps.NAME.backend)")
            if float(r.resources.get("cpus") or 1) > cpus:
                problems.append(f"{r.address} asks for {r.resources['cpus']:g} CPUs; this machine has {cpus}")
            mem = r.resources.get("memory")
            if mem:
                try:
                    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                except (ValueError, OSError):
                    total = 0
                if total and int(mem) > total:
                    problems.append(f"{r.address} asks for {int(mem) / 2**30:.1f} GiB of memory; this machine has "
                                    f"{total / 2**30:.1f} GiB")
            if r.resources.get("custom"):
                problems.append(f"{r.address} asks for custom resources {sorted(r.resources['custom'])}, which the "
                                "local backend does not have")
        return problems

    def health(self) -> str:
        return f"ok: {self.capacity()} parallel steps on {os.cpu_count()} CPUs"
