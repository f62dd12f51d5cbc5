"""The Ray backend: every step is one Ray task; mlspec stays the driver and the scheduler.

Where the cluster is comes from ``address`` (:func:`mlspec_ray.addresses.resolve_address`): ``""`` starts
a private local cluster for the apply, ``"auto"`` joins the one on this machine, ``"host:port"`` and
``"ray://host:port"`` join a running one. Nothing talks to Ray before a TCP probe with ``connect_timeout`` has succeeded,
because ``ray.init`` towards a dead or wrong address never returns; ``ray.init`` itself also runs under a
deadline, in a helper thread.

A task runs :func:`mlspec.runner.execute` inside a Ray worker with the worker's stdout and stderr (file
descriptors 1 and 2, so subprocesses of `cmd:` steps are captured too) redirected into a log file for its
duration, and returns ``(result dict, log text)``. Outputs go straight from the worker to the artifact
store; only the small result dict travels back. Ray retries nothing (``max_retries=0``): retries are the
executor's job. Timeouts are enforced here, on the driver: a watcher thread force-cancels the task
(``ray.cancel(force=True)`` kills its worker process and the worker's children) and the future resolves
as TIMED_OUT; :meth:`RayBackend.cancel_all` does the same for every running task.

Warm workers run many tasks; the runner re-imports the project's modules when their files changed, so a
task never runs a stale copy of the code (the conformance suite checks it).

Only the functions of :mod:`mlspec_ray.worker` run on the cluster; they are shipped by value, so
the cluster needs ``mlspec`` (for the runner) but not this package. ``ray`` is imported only inside
methods: mlspec loads this class on every command, and ``import ray`` costs about 0.4 s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from concurrent.futures import Future
from importlib import metadata, resources
from typing import Mapping

from mlspec.backends.api import Backend, Requirement, Task, TaskResult, TaskStatus
from mlspec_ray.addresses import Target, on_this_machine, probe, resolve_address
from mlspec_ray.checks import group_by_step, resource_issues
from mlspec_ray.errors import BackendError, one_line
from mlspec_ray.serve import RayServeServices
from mlspec_ray.worker import worker_functions

SETTINGS_SCHEMA = json.loads(resources.files("mlspec_ray").joinpath("settings.schema.json").read_text("utf-8"))

DEFAULT_CONNECT_TIMEOUT = 5.0
INIT_TIMEOUT = 60.0  # ray.init after the TCP probe succeeded (a cluster answers in about a second)
STOP_GRACE = 10.0  # a force-cancelled task that has not reported back by then is resolved anyway
IMPORT_CHECK_TIMEOUT = 120.0  # preflight's import check (a runtime_env with pip may install first)
CAPACITY_TTL = 5.0  # seconds to reuse ray.cluster_resources() for capacity()
LOG_LIMIT = 8 << 20  # keep at most the last 8 MiB of a step's log
DEFAULT_EXCLUDES = [".mlspec/", ".git/", "__pycache__/"]

logger = logging.getLogger(__name__)


def ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return "not installed"


class _Running:
    __slots__ = ("task", "ref", "future", "deadline", "reason", "stopped_at")

    def __init__(self, task: Task, future: Future, deadline: float | None):
        self.task, self.future, self.deadline = task, future, deadline
        self.ref = None
        self.reason = ""  # "timeout" or "cancel" once we stopped it
        self.stopped_at = 0.0


class RayBackend(RayServeServices, Backend):
    """Runs each step as a Ray task, and serves deployments on Ray Serve (:mod:`mlspec_ray.serve`); see the
    module documentation and backends/ray/README.md."""

    type = "ray"
    settings_schema = SETTINGS_SCHEMA
    #: set when a ray.init was abandoned: Ray's state in this process is then unusable
    _hung_init: str = ""
    #: Ray connects a process to one cluster: which one, and how many backends use the connection we made
    _session: dict = {"label": "", "users": 0}

    def __init__(self, settings: Mapping, context):
        super().__init__(settings, context)
        self._lock = threading.Condition()
        self._running: dict[str, _Running] = {}
        self._target: Target | None = None
        self._started = False
        self._connected = False  # this backend holds a reference on the Ray connection (see _session)
        self._closing = False
        self._remote = None
        self._watcher: threading.Thread | None = None
        self._capacity: tuple[float, int] | None = None

    # settings ----------------------------------------------------------------------------------------
    @property
    def connect_timeout(self) -> float:
        return float(self.settings.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)

    def target(self) -> Target:
        if self._target is None:
            self._target = resolve_address(self.settings.get("address") or "")
        return self._target

    def runtime_env(self, target: Target) -> dict | None:
        env = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
               for k, v in (self.settings.get("runtime_env") or {}).items()}
        if "working_dir" in env:
            wd = env["working_dir"]
            if "://" not in wd and not os.path.isabs(wd):
                env["working_dir"] = str(self.context.project_dir / wd)
        elif not on_this_machine(target):
            env["working_dir"] = str(self.context.project_dir)  # ship the project's code with the job
        if "working_dir" in env:
            env.setdefault("excludes", list(DEFAULT_EXCLUDES))
        return env or None

    @classmethod
    def describe(cls) -> dict:
        info = super().describe()
        try:
            version = metadata.version("mlspec-ray")
        except metadata.PackageNotFoundError:
            version = "?"
        info.update(package="mlspec-ray", version=version, ray=ray_version())
        return info

    # lifecycle ---------------------------------------------------------------------------------------
    def _reachable(self, target: Target) -> None:
        if target.kind != "private":
            why = probe(target.host, target.port, self.connect_timeout)
            if why:
                raise BackendError(why)

    def _connect(self, target: Target) -> bool:
        """Connect this process to the cluster (ray.init under a deadline), or share the connection that
        another Ray backend made to the same cluster; True when this backend holds a reference on it."""
        import ray

        if RayBackend._hung_init:
            raise BackendError(f"an earlier ray.init (towards {RayBackend._hung_init}) is still running in this "
                               "process; Ray cannot connect again until it ends", hint="run mlspec again")
        session = RayBackend._session
        if ray.is_initialized():
            if not session["users"]:
                return False  # connected by someone else (a notebook, a test): use it, never shut it down
            if session["label"] != target.label:
                raise BackendError(f"Ray connects one process to one cluster, and this one is connected to "
                                   f"{session['label']}: cannot also use {target.label}",
                                   hint="give the steps of both Ray backends one address")
            session["users"] += 1
            return True
        kwargs = dict(address=target.init_address, namespace=self.settings.get("namespace") or "mlspec",
                      runtime_env=self.runtime_env(target), log_to_driver=False, ignore_reinit_error=True,
                      logging_level=logging.WARNING)
        if target.kind == "private":
            kwargs.update(include_dashboard=False, num_cpus=self.settings.get("num_cpus"),
                          object_store_memory=self.settings.get("object_store_memory"))
        outcome: dict = {}

        def init():
            try:
                outcome["ok"] = ray.init(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        quiet = logging.getLogger("ray._private.worker")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        # ray.init replaces the handlers of SIGTERM (in Python when called on the main thread, and in C++:
        # Ray's core installs a crash handler that dumps and kills the process): put mlspec's back after it,
        # so that SIGTERM still means "cancel the running steps and save what finished".
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            if target.kind == "private":
                # In this thread: a private cluster started from a helper thread leaves a GCS client behind
                # after ray.shutdown() that ends the process a minute later; starting one cannot hang.
                init()
            else:
                # In a helper thread: ray.init cannot be interrupted when it hangs (a port that is open but
                # is not a Ray GCS, or token authentication on one side only).
                for attempt in (1, 2):
                    outcome.clear()
                    t = threading.Thread(target=init, name="mlspec-ray-init", daemon=True)
                    t.start()
                    t.join(INIT_TIMEOUT)
                    if t.is_alive():
                        RayBackend._hung_init = f"{target.label} since {time.strftime('%H:%M:%S')}"
                        hint = ("check that the port is the cluster's GCS port (`ray status` on the head shows "
                                "it) and that RAY_AUTH_MODE is the same here and on the cluster")
                        raise BackendError(f"the Ray cluster at {target.label} accepted a connection but did not "
                                           f"complete ray.init within {INIT_TIMEOUT:g}s", hint=hint)
                    # The Ray Client server sometimes fails to start the server of one client
                    # ("Initialization failure from server", after ~40 s); a second try connects.
                    if not (target.kind == "client" and isinstance(outcome.get("error"), ConnectionAbortedError)):
                        break
                    logger.warning("Ray Client connection to %s failed (%s); trying once more", target.label,
                                   outcome["error"])
        finally:
            quiet.setLevel(level)
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
        if "error" in outcome:
            exc = outcome["error"]
            first = (str(exc).strip().splitlines() or [""])[0]
            raise BackendError(f"cannot connect to the Ray cluster at {target.label}: {type(exc).__name__}: {first}",
                               hint="see the troubleshooting section of backends/ray/README.md")
        session.update(label=target.label, users=1)
        return True

    def _disconnect(self) -> None:
        session = RayBackend._session
        session["users"] = max(session["users"] - 1, 0)
        if session["users"] == 0:
            import ray

            session["label"] = ""
            ray.shutdown()

    def start(self) -> None:
        if self._started:
            return
        target = self.target()
        self._reachable(target)
        self._connected = self._connect(target)
        import ray

        run_step, _ = worker_functions()
        self._remote = ray.remote(max_retries=0)(run_step)
        self._closing = False
        self._watcher = threading.Thread(target=self._watch, name="mlspec-ray-watch", daemon=True)
        self._watcher.start()
        self._started = True

    def close(self) -> None:
        if not self._started:
            return
        with self._lock:
            leftover = [e for e in self._running.values() if not e.future.done()]
        if leftover:
            self._stop(leftover, "cancel")
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._connected:
            self._disconnect()
        self._started = self._connected = False
        self._remote = self._watcher = None
        self._capacity = None

    # running -----------------------------------------------------------------------------------------
    def capacity(self) -> int:
        now = time.monotonic()
        if self._capacity and now - self._capacity[0] < CAPACITY_TTL:
            return self._capacity[1]
        self.start()
        import ray

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._capacity = (now, cpus)
        return cpus

    @staticmethod
    def task_options(task: Task) -> dict:
        res = task.resources or {}
        opts: dict = {"num_cpus": float(res.get("cpus") or 1), "name": task.address}
        if float(res.get("gpus") or 0) > 0:
            opts["num_gpus"] = float(res["gpus"])
        if res.get("memory"):
            opts["memory"] = int(res["memory"])
        if res.get("custom"):
            opts["resources"] = {str(k): float(v) for k, v in res["custom"].items()}
        return opts

    def submit(self, task: Task) -> Future:
        self.start()
        future: Future = Future()
        future.set_running_or_notify_cancel()
        deadline = time.monotonic() + float(task.timeout) if task.timeout else None
        entry = _Running(task, future, deadline)
        try:
            ref = self._remote.options(**self.task_options(task)).remote(dict(task.payload), LOG_LIMIT)
        except Exception as exc:  # noqa: BLE001 - e.g. options Ray refuses: the step fails, mlspec goes on
            first = (str(exc).strip().splitlines() or [""])[0]
            future.set_result(TaskResult(TaskStatus.FAILED, error=f"Ray refused the task: {type(exc).__name__}: "
                                                                  f"{first}"))
            return future
        entry.ref = ref
        with self._lock:
            self._running[task.id] = entry
            if deadline is not None:
                self._lock.notify_all()
        ref.future().add_done_callback(lambda f, e=entry: self._finish(e, f))
        return future

    def _finish(self, entry: _Running, done: Future) -> None:
        """The task's ObjectRef resolved (a result, an error, or the error of being cancelled)."""
        try:
            result, log = done.result()
            if entry.reason and result.get("status") != "succeeded":
                res = self._stopped_result(entry, log)
            else:
                res = TaskResult.from_runner(result, log)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a result
            res = self._stopped_result(entry, "") if entry.reason else self._error_result(exc)
        self._resolve(entry, res)

    def _stopped_result(self, entry: _Running, log: str) -> TaskResult:
        if entry.reason == "timeout":
            t = float(entry.task.timeout or 0)
            return TaskResult(TaskStatus.TIMED_OUT, error=f"timed out after {t:g}s and was stopped", log=log,
                              duration=t)
        return TaskResult(TaskStatus.CANCELLED, error="cancelled", log=log)

    @staticmethod
    def _error_result(exc: BaseException) -> TaskResult:
        name = type(exc).__name__
        text = (str(exc).strip().splitlines() or [""])[0]
        if name == "TaskCancelledError":
            return TaskResult(TaskStatus.CANCELLED, error="the Ray task was cancelled outside mlspec")
        if name == "OutOfMemoryError":
            return TaskResult(TaskStatus.FAILED, error="Ray's memory monitor killed the step (the node ran out of "
                                                      "memory); give it more with resources.memory")
        if name in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError"):
            return TaskResult(TaskStatus.FAILED, error=f"the Ray worker running the step died ({name}): {text}")
        cause = getattr(exc, "cause", None)
        if cause is not None:  # RayTaskError: our wrapper failed on the worker (e.g. mlspec is not installed)
            return TaskResult(TaskStatus.FAILED, error=f"the step could not start on the Ray worker: "
                                                       f"{type(cause).__name__}: {cause}", log=str(exc))
        return TaskResult(TaskStatus.FAILED, error=f"Ray error: {name}: {text}", log=str(exc))

    def _resolve(self, entry: _Running, res: TaskResult) -> None:
        with self._lock:
            if self._running.get(entry.task.id) is entry:
                del self._running[entry.task.id]
            if entry.future.done():
                return
            entry.future.set_result(res)

    def _watch(self) -> None:
        """Stop tasks past their timeout; resolve stopped tasks whose worker never reported back."""
        while True:
            with self._lock:
                if self._closing:
                    return
                now = time.monotonic()
                due, stale, wake = [], [], None
                for e in self._running.values():
                    if e.future.done():
                        continue
                    if e.reason:
                        end = e.stopped_at + STOP_GRACE
                        if end <= now:
                            stale.append(e)
                        else:
                            wake = end if wake is None else min(wake, end)
                    elif e.deadline is not None:
                        if e.deadline <= now:
                            due.append(e)
                        else:
                            wake = e.deadline if wake is None else min(wake, e.deadline)
                if not due and not stale:
                    self._lock.wait(None if wake is None else max(wake - now, 0.01))
                    continue
            if due:
                self._stop(due, "timeout", wait=False)
            for e in stale:
                self._resolve(e, self._stopped_result(e, ""))

    def _stop(self, entries: list, reason: str, wait: bool = True) -> None:
        import ray

        now = time.monotonic()
        with self._lock:
            for e in entries:
                if not e.reason:
                    e.reason, e.stopped_at = reason, now
            self._lock.notify_all()
        for e in entries:
            try:
                ray.cancel(e.ref, force=True)
            except Exception as exc:  # noqa: BLE001 - finished meanwhile, or the cluster is gone
                logger.debug("ray.cancel(%s) failed: %s", e.task.address, exc)
        if wait:
            deadline = now + STOP_GRACE
            for e in entries:
                try:
                    e.future.result(timeout=max(deadline - time.monotonic(), 0))
                except Exception:  # noqa: BLE001 - resolved below
                    self._resolve(e, self._stopped_result(e, ""))

    def cancel_all(self) -> None:
        if not self._started:
            return
        with self._lock:
            entries = [e for e in self._running.values() if not e.future.done()]
        if entries:
            self._stop(entries, "cancel")

    # checks ------------------------------------------------------------------------------------------
    def preflight(self, requirements: list[Requirement]) -> list[str]:
        try:
            target = self.target()
            self._reachable(target)
        except BackendError as exc:
            return [one_line(exc)]
        problems = []
        url = self.context.artifacts_url
        if ("://" not in url or url.startswith("file://")) and not on_this_machine(target):
            problems.append(f"the artifact store {self.context.artifacts_url} is a local path, which a remote "
                            "cluster cannot reach: use a shared store (storage.artifacts: s3://...)")
        if target.kind == "private" and not self._started:
            return problems + self._preflight_private(requirements)
        started_here = not self._started
        try:
            self.start()
        except BackendError as exc:
            return problems + [one_line(exc)]
        try:
            problems += self._preflight_cluster(target, requirements)
        finally:
            if started_here:
                self.close()
        return problems

    def _preflight_cluster(self, target: Target, requirements: list[Requirement]) -> list[str]:
        import ray

        nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
        where = f"the Ray cluster at {target.label}"
        issues = []
        for r in requirements:
            issues += [(r.address, text) for text in resource_issues(r.resources, nodes, where)]
        problems = group_by_step(issues)
        modules = sorted({r.module for r in requirements if r.module})
        problems += self._check_imports(modules, where)
        return problems

    def _check_imports(self, modules: list, where: str) -> list[str]:
        import ray

        _, check_imports = worker_functions()
        payload = {"project_dir": str(self.context.project_dir),
                   "code_paths": list(self.context.code_paths or (str(self.context.project_dir),))}
        ref = ray.remote(num_cpus=0, max_retries=0)(check_imports).remote(modules, payload)
        try:
            answer = ray.get(ref, timeout=IMPORT_CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - GetTimeoutError, or the worker could not start
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
            first = (str(exc).strip().splitlines() or [""])[0]
            return [f"could not check on {where} that the steps' modules import ({type(exc).__name__}: {first})"]
        out = []
        for name, err in sorted(answer["problems"].items()):
            if name == "mlspec":
                out.append(f"mlspec is not importable on {where} ({err}): install it there (pip install mlspec, "
                           "or runtime_env.pip)")
            else:
                out.append(f"module '{name}' does not import on {where}: {err}")
        return out

    def _preflight_private(self, requirements: list[Requirement]) -> list[str]:
        """Checks for a private cluster without starting one: it would be this machine, so look here."""
        import importlib.util
        import sys

        cpus = int(self.settings.get("num_cpus") or os.cpu_count() or 1)
        node = {"CPU": float(cpus)}
        if shutil.which("nvidia-smi") is not None:
            node["GPU"] = float("inf")  # Ray would count them when it starts; do not guess here
        try:
            node["memory"] = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError):
            pass
        where = f"the private local Ray cluster ({cpus} CPUs)"
        issues = []
        for r in requirements:
            issues += [(r.address, text) for text in resource_issues(r.resources, [node], where)]
        problems = group_by_step(issues)
        old_path = list(sys.path)
        sys.path[:0] = [p for p in self.context.code_paths if p not in sys.path]
        try:
            for name in sorted({r.module for r in requirements if r.module}):
                try:
                    found = importlib.util.find_spec(name) is not None
                    err = "" if found else "no such module"
                except Exception as exc:  # noqa: BLE001 - a parent package failed to import
                    err = f"{type(exc).__name__}: {exc}".splitlines()[0]
                if err:
                    problems.append(f"module '{name}' does not import on {where}: {err}")
        finally:
            sys.path[:] = old_path
        return problems

    def health(self) -> str:
        try:
            target = self.target()
            self._reachable(target)
        except BackendError as exc:
            return f"unreachable: {exc.message}"
        if target.kind == "private" and not self._started:
            cpus = int(self.settings.get("num_cpus") or os.cpu_count() or 1)
            return f"ok: a private local Ray cluster of {cpus} CPUs starts when steps run (Ray {ray_version()})"
        started_here = not self._started
        try:
            self.start()
            import ray

            res = ray.cluster_resources()
            cpus, gpus = res.get("CPU", 0), res.get("GPU", 0)
            return f"ok: {cpus:g} CPUs, {gpus:g} GPUs at {target.label} (Ray {ray.__version__})"
        except BackendError as exc:
            return f"unreachable: {exc.message}"
        finally:
            if started_here:
                self.close()
