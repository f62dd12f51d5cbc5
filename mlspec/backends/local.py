"""The local backend: steps run in worker processes, never in mlspec's own.

By default a pool of long-lived workers (``python -m mlspec.worker``, one per parallel slot) runs the
steps, saving the interpreter start-up and imports on every step; with ``fresh_process: true`` every step
gets a new interpreter (``python -m mlspec.runner``). Either way a crashing, leaking or hanging step cannot
take mlspec down: each worker runs in its own session (process group), a step's stdout/stderr go to its
log, and a timeout or Ctrl-C kills the worker's whole group (the pool replaces it).

No process outlives the apply that started it (mlspec.worker.guard): workers die with mlspec (also on
``kill -9``), together with everything their steps started, and a step's leftover processes are killed
when it ends. The backend's temp dir (``mlspec-local-PID-*``) carries the owner's pid, so that dirs left
by a killed mlspec are removed by the next one.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from mlspec.backends.api import Backend, Requirement, Task, TaskResult, TaskStatus

LOG_LIMIT = 8 << 20  # keep at most the last 8 MiB of a step's log
CHECKED = b'{"checked": true}'  # a worker's last line after a step check (mlspec.worker)


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


TMP_PREFIX = "mlspec-local-"


def _worker_env(env: dict) -> dict:
    """The env of one worker process: a token of its own that every process its steps start inherits."""
    from mlspec.worker import TOKEN_VAR

    return dict(env, **{TOKEN_VAR: os.urandom(8).hex()})


def sweep_stale_tmp(tmp_root: str | None = None) -> list[str]:
    """Remove ``mlspec-local-PID-*`` dirs of this user whose owning process is gone (a killed mlspec)."""
    from mlspec.procs import process_alive  # zombie-aware, and right where there is no /proc

    removed = []
    root = tmp_root or tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(TMP_PREFIX):
            continue
        pid, sep, _ = e.name[len(TMP_PREFIX):].partition("-")
        if not sep or not pid.isdigit() or int(pid) == os.getpid():
            continue  # not ours to judge (e.g. made by an older mlspec, which put no pid in the name)
        try:
            if not e.is_dir(follow_symlinks=False) or e.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not process_alive(int(pid)):
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.path)
    return removed


def read_log(path: Path) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size > LOG_LIMIT:
                fh.seek(size - LOG_LIMIT)
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class _Worker:
    """One pooled worker process and the pipe its results come back on."""

    def __init__(self, python: str, cwd: str, env: dict):
        r, w = os.pipe()
        self.proc = subprocess.Popen([python, "-m", "mlspec.worker", str(w), str(os.getpid())],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(w,), cwd=cwd, env=_worker_env(env), start_new_session=True)
        os.close(w)
        self.results = r
        self._buf = b""

    def send(self, msg: dict) -> None:
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def line(self, timeout: float | None) -> bytes | None:
        """The next line the worker wrote, or None on timeout; raises EOFError when the worker died."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ready, _, _ = select.select([self.results], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.results, 1 << 16)
            if not chunk:
                raise EOFError
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def receive(self, timeout: float | None) -> dict | None:
        """The result, or None on timeout; raises EOFError when the worker died."""
        line = self.line(timeout)
        return None if line is None else json.loads(line)

    def kill(self) -> None:
        _kill_group(self.proc, grace=1.0)
        self.close()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.results >= 0:
            try:
                os.close(self.results)
            except OSError:
                pass
            self.results = -1
        if self.proc.poll() is None:
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc, grace=0.5)


class LocalBackend(Backend):
    type = "local"
    settings_schema = json.loads(resources.files("mlspec.schemas").joinpath("backend-local.schema.json").read_text())

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self._procs: dict[str, subprocess.Popen] = {}
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._busy: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        sweep_stale_tmp()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))

    def capacity(self) -> int:
        return int(self.settings.get("max_workers") or os.cpu_count() or 1)

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(self.capacity(), 1) * 2, thread_name_prefix="mlspec-local")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        while True:
            try:
                w = self._idle.get_nowait()
            except queue.Empty:
                break
            w.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def submit(self, task: Task) -> Future:
        self.start()
        if self.settings.get("fresh_process"):
            return self._pool.submit(self._run_fresh, task)
        return self._pool.submit(self._run_pooled, task)

    def _env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _worker(self) -> _Worker:
        """An idle worker of the pool, or a new one."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return _Worker(self.settings.get("python") or sys.executable, str(self.context.project_dir),
                               self._env())
            if worker.proc.poll() is None:
                return worker
            worker.close()

    def step_check(self, request: dict, timeout: float):
        """Answer a step check (:func:`mlspec.stepcheck.answer`) in a worker of the pool, which then stays for
        the steps: the apply's first worker imports the steps' modules once, for the check and for the steps,
        instead of a check process doing it first. Returns what ``mlspec.stepcheck._run_once`` returns:
        (answer lines, what the imports printed, timed out, exit code): a worker that a module ends is
        gone (its exit code), one that hangs past ``timeout`` is killed with everything it started."""
        workdir = Path(tempfile.mkdtemp(prefix="c-", dir=self._tmp))
        log_path = workdir / "log.txt"
        try:
            worker = self._worker()
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return f"could not be checked: cannot start {self.settings.get('python') or sys.executable}: " \
                   f"{exc.strerror or exc}"
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        kept = False
        try:
            worker.send({"check": request, "log": str(log_path)})
            while True:
                line = worker.line(max(deadline - time.monotonic(), 0.0))
                if line is None:  # it hangs: killed, and its sentinel kills what its imports started
                    worker.kill()
                    return b"\n".join(out), read_log(log_path).encode(), True, worker.proc.returncode
                if line == CHECKED:
                    self._idle.put(worker)
                    kept = True
                    return b"\n".join(out), read_log(log_path).encode(), False, 0
                out.append(line)
        except (EOFError, OSError):  # a module ended the process (BrokenPipeError is an OSError)
            code = worker.proc.wait()
            return b"\n".join(out), read_log(log_path).encode(), False, code
        finally:
            if not kept:  # dead, timed out, or interrupted (Ctrl-C): never back in the pool
                worker.kill()
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_pooled(self, task: Task) -> TaskResult:
        if self._cancelled.is_set():
            return TaskResult(TaskStatus.CANCELLED, error="cancelled before it started")
        workdir = Path(tempfile.mkdtemp(prefix="t-", dir=self._tmp))
        log_path = workdir / "log.txt"
        worker = self._worker()
        with self._lock:
            self._busy[task.id] = worker
        keep = False
        try:
            try:
                worker.send({"task": dict(task.payload), "log": str(log_path), "workdir": str(workdir)})
                result = worker.receive(task.timeout)
            except (EOFError, BrokenPipeError, OSError, ValueError):
                code = worker.proc.wait()
                log_text = read_log(log_path)
                if self._cancelled.is_set():
                    return TaskResult(TaskStatus.CANCELLED, error="cancelled", log=log_text)
                tail = "\n".join(log_text.strip().splitlines()[-5:])
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                return TaskResult(TaskStatus.FAILED, error=f"the step process {how}" + (f": {tail}" if tail else ""),
                                  log=log_text)
            if result is None:
                worker.kill()
                return TaskResult(TaskStatus.TIMED_OUT, error=f"timed out after {task.timeout:g}s and was killed",
                                  log=read_log(log_path), duration=float(task.timeout or 0))
            keep = not self._cancelled.is_set()
            return TaskResult.from_runner(result, read_log(log_path))
        finally:
            with self._lock:
                self._busy.pop(task.id, None)
            if keep:
                self._idle.put(worker)
            elif worker.proc.poll() is None:
                worker.kill()
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_fresh(self, task: Task) -> TaskResult:
        workdir = Path(tempfile.mkdtemp(prefix="t-", dir=self._tmp))
        result_path = workdir / "result.json"
        log_path = workdir / "log.txt"
        python = self.settings.get("python") or sys.executable
        env = self._env()
        env.update({k: str(v) for k, v in (task.payload.get("env") or {}).items()})
        try:
            if self._cancelled.is_set():
                return TaskResult(TaskStatus.CANCELLED, error="cancelled before it started")
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([python, "-m", "mlspec.runner", str(result_path), str(os.getpid())],
                                        stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=str(self.context.project_dir), env=_worker_env(env),
                                        start_new_session=True)
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
            workers = list(self._busy.values())
        for p in procs:
            _kill_group(p, grace=1.0)
        for w in workers:
            _kill_group(w.proc, grace=1.0)

    def preflight(self, requirements: list[Requirement]) -> list[str]:
        problems = []
        checked: dict[str, str] = {}
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
            if r.module:
                if r.module not in checked:  # one check per module, not per step (50,000 steps share a few)
                    checked[r.module] = self._module_problem(r.module)
                problem = checked[r.module]
                if problem:
                    problems.append(f"{r.address}: {problem}")
            if r.resources.get("custom"):
                problems.append(f"{r.address} asks for custom resources {sorted(r.resources['custom'])}, which the "
                                "local backend does not have")
        return problems

    def _module_problem(self, module: str) -> str:
        """'' when the step module can be imported here; found without running it when it is the project's."""
        parts = module.split(".")
        for root in self.context.code_paths or (str(self.context.project_dir),):
            base = Path(root).joinpath(*parts)
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                return ""
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return ""
        return (f"module '{module}' is neither in the project ({', '.join(self.context.code_paths) or 'its dir'}) "
                "nor installed: fix `run:` or install it")

    def health(self) -> str:
        return f"ok: {self.capacity()} parallel steps on {os.cpu_count()} CPUs"

    # services: a supervisor process per deployment (mlspec.backends.local_service) ----------------------
    supports_services = True

    def deploy_service(self, service):
        from mlspec.backends import local_service

        return local_service.deploy(self.context.project_dir, service, self.settings.get("python"))

    def update_service(self, record, service):
        from mlspec.backends import local_service

        return local_service.update(self.context.project_dir, record, service, self.settings.get("python"))

    def service_status(self, record):
        from mlspec.backends import local_service

        return local_service.status(record)

    def remove_service(self, record) -> None:
        from mlspec.backends import local_service

        local_service.remove(record)
