"""The Docker backend: every step instance runs in a container of its own, removed when it ends.

mlspec stays the driver and the scheduler; the engine (``host``: DOCKER_HOST by default) runs one container
per task: ``python -c RUNNER`` (:data:`RUNNER`), which reads the task payload on stdin (so a step's secrets
never appear in ``docker inspect`` or on disk), runs :func:`mlspec.runner.execute`, and writes its result
after a per-task marker at the end of its output. The backend attaches to the container before starting it
and reads its stdout and stderr as they come (the step's log), so there is no result file to share with the
container and an engine on another machine works the same.

Where the code and data are: on an engine on this machine the project, a local artifact store, datasets
outside the project and ``external_paths`` are bind-mounted at their own paths (nothing in the payload has
to change); with ``workdir`` the project comes from the image, and the payload's project paths are remapped
there (as the Ray backend does for a shipped working dir). Images: see :mod:`mlspec_docker.images`.

Limits: ``resources.cpus`` -> ``nano_cpus``, ``resources.memory`` -> the memory limit (swap included, so
the limit is real), ``resources.gpus`` -> a GPU device request. A container the kernel killed at its memory
limit is reported as such. Timeouts and Ctrl-C kill the container; every container is removed when its step
ends (success, failure, timeout, cancel), and containers left by a killed mlspec are removed by the next one.

The Docker SDK is imported only inside methods: mlspec loads this class on every command.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata, resources
from pathlib import Path
from typing import Mapping

from mlspec.backends.api import Backend, BackendError, Requirement, Task, TaskResult, TaskStatus

SETTINGS_SCHEMA = json.loads(resources.files("mlspec_docker").joinpath("settings.schema.json").read_text("utf-8"))

DEFAULT_CONNECT_TIMEOUT = 5.0
API_TIMEOUT = 120.0  # any single engine call other than waiting for a container
LOG_LIMIT = 8 << 20  # keep at most the last 8 MiB of a step's log
CHECK_TIMEOUT = 120.0
LABEL_APPLY = "mlspec.apply"  # one value per backend instance: lists this apply's containers
LABEL_OWNER = "mlspec.owner"  # HOSTNAME:PID of the mlspec process: containers of a dead one are swept

#: what runs in each container: the task arrives on stdin, the result goes out after the marker
RUNNER = r"""
import json, os, sys
task = json.loads(sys.stdin.buffer.read())
marker = os.environ.pop("MLSPEC_RESULT_MARKER")
from mlspec import worker
worker._prctl(worker._PR_SET_CHILD_SUBREAPER, 1)
from mlspec.runner import execute
os.environ.update({k: str(v) for k, v in (task.get("env") or {}).items()})
result = execute(task, os.path.join(os.environ.get("TMPDIR") or "/tmp", "mlspec-task"))
try:
    worker.kill_leftovers()
except OSError:
    pass
sys.stdout.flush()
sys.stderr.flush()
os.write(2, ("\n" + marker + json.dumps(result) + "\n").encode())
"""

#: the preflight check: mlspec's version and task format in the image, and which step modules import
CHECK = r"""
import importlib, json, platform, sys
out = {"python": platform.python_version(), "problems": {}}
try:
    import mlspec
    from mlspec.backends.api import TASK_FORMAT_VERSION
    out["mlspec"], out["format"] = mlspec.__version__, TASK_FORMAT_VERSION
except Exception as exc:
    out["mlspec_error"] = f"{type(exc).__name__}: {exc}"
args = json.loads(sys.argv[1])
sys.path[:0] = args["code_paths"]
for name in args["modules"]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        out["problems"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
print("@@mlspec-check@@" + json.dumps(out))
"""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n % 2**20 == 0 or n < 2**30 else f"{n / 2**30:.1f} GiB"


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (str(text).strip().splitlines() or [""])[0]


def _is_local_url(url: str) -> bool:
    if not url or url.startswith(("unix://", "npipe://")):
        return True
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("localhost", "127.0.0.1", "::1", "[::1]", socket.gethostname()) or host.startswith("127.")


def _collapse(paths) -> list[str]:
    """The given absolute directories, without those inside another one of them."""
    out: list[str] = []
    for p in sorted({os.path.normpath(p) for p in paths if p and os.path.isabs(p)}):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


class _Running:
    __slots__ = ("task", "container", "reason", "sock", "marker")

    def __init__(self, task: Task, marker: str = ""):
        self.task, self.container, self.reason, self.sock, self.marker = task, "", "", None, marker


class DockerBackend(Backend):
    """Runs each step in its own container; see the module documentation and backends/docker/README.md."""

    type = "docker"
    settings_schema = SETTINGS_SCHEMA

    def __init__(self, settings: Mapping, context):
        super().__init__(settings, context)
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._cancelled = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._remover: ThreadPoolExecutor | None = None
        self._removals: list = []
        self._client = None
        self._image = ""  # the default image of the steps, once resolved
        self._images: dict[str, str] = {}  # pinned image -> checked
        self._capacity = 0
        self._info: dict | None = None
        self.apply_label = f"{os.getpid()}-{os.urandom(6).hex()}"

    # settings ----------------------------------------------------------------------------------------
    @property
    def engine_url(self) -> str:
        return self.settings.get("host") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def engine_local(self) -> bool:
        return _is_local_url(self.engine_url)

    @property
    def host_environment(self) -> bool:
        """No image and no build: the steps run with this machine's /usr, Python and mlspec, mounted."""
        return not self.settings.get("image") and not self.settings.get("build")

    @property
    def python(self) -> str:
        return self.settings.get("python") or (sys.executable if self.host_environment else "python3")

    @property
    def connect_timeout(self) -> float:
        return float(self.settings.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)

    @classmethod
    def describe(cls) -> dict:
        info = super().describe()
        info.update(package="mlspec-docker", version=_version("mlspec-docker"), docker_sdk=_version("docker"))
        return info

    # the engine ----------------------------------------------------------------------------------------
    def client(self):
        """The SDK client, connected (a ping within connect_timeout) or BackendError."""
        if self._client is not None:
            return self._client
        import docker

        url = self.engine_url
        hint = "start it (dockerd, or the Docker service), or point backend.host or DOCKER_HOST at a running engine"
        if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
            raise BackendError(f"cannot reach the Docker engine at {url}: there is no socket at that path", hint=hint)
        try:
            client = docker.DockerClient(base_url=url, timeout=self.connect_timeout, version="1.41")
            client.ping()
        except Exception as exc:  # noqa: BLE001 - DockerException, connection errors, bad URLs
            text = _first_line(exc)
            for known in ("Connection refused", "timed out", "Permission denied", "Name or service not known"):
                if known.lower() in text.lower():
                    text = known.lower()
                    break
            raise BackendError(f"cannot reach the Docker engine at {url}: {text}", hint=hint) from None
        client.api.timeout = API_TIMEOUT
        self._client = client
        return client

    def info(self) -> dict:
        if self._info is None:
            self._info = self.client().info()
        return self._info

    def image(self) -> str:
        """The default image of the steps: found or pulled, built, or the host root (see mlspec_docker.images)."""
        if self._image:
            return self._image
        from mlspec_docker import images

        client = self.client()
        if self.settings.get("image"):
            images.ensure_image(client, self.settings["image"], self.settings.get("pull") or "missing",
                                self.engine_url)
            self._image = self.settings["image"]
        elif self.settings.get("build"):
            self._image = images.ensure_built(client, Path(self.context.project_dir), dict(self.settings["build"]),
                                              self.python, self.settings.get("network_mode") or "host")
        else:
            if not self.engine_local:
                raise BackendError(f"the Docker engine at {self.engine_url} is on another machine, which cannot "
                                   "mount this machine's Python", hint="set backend.image or backend.build")
            self._image = images.ensure_host_root(client)
        return self._image

    def resolve_image(self, name: str) -> str:
        """The id (``sha256:...``) of an image a step pins, pulled if needed (plan time: it joins the step's
        fingerprint); BackendError naming the image when it is missing and cannot be pulled."""
        from mlspec_docker import images

        return images.ensure_image(self.client(), name, self.settings.get("pull") or "missing", self.engine_url)

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._pool is not None:
            return
        self.client()
        self._sweep_dead_owners()
        self.image()
        self._cancelled.clear()
        self._pool = ThreadPoolExecutor(max_workers=max(self.capacity(), 1) * 2, thread_name_prefix="mlspec-docker")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._remover is not None:
            self._remover.shutdown(wait=True)
            self._remover, self._removals = None, []
        if self._client is not None:
            self._remove_labelled({f"{LABEL_APPLY}={self.apply_label}"})
            self._client.close()
            self._client = None
        self._info = None

    def _remove_labelled(self, labels: set) -> int:
        try:
            found = self._client.api.containers(all=True, quiet=True, filters={"label": sorted(labels)})
        except Exception:  # noqa: BLE001 - the engine is gone: nothing to remove there
            return 0
        for c in found:
            self._remove(c["Id"])
        return len(found)

    def _sweep_dead_owners(self) -> None:
        """Remove containers started by an mlspec process of this machine that is gone (killed with -9)."""
        from mlspec.procs import process_alive

        host = socket.gethostname()
        try:
            found = self._client.api.containers(all=True, filters={"label": LABEL_OWNER})
        except Exception:  # noqa: BLE001
            return
        for c in found:
            owner = (c.get("Labels") or {}).get(LABEL_OWNER, "")
            h, _, pid = owner.rpartition(":")
            if h == host and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
                self._remove(c["Id"])

    def _remove_later(self, container: str) -> None:
        """Remove a finished container in the background (the next step need not wait); close() waits."""
        with self._lock:
            if self._remover is None:
                self._remover = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlspec-docker-rm")
            self._removals.append(self._remover.submit(self._remove, container))

    def _remove(self, container: str) -> None:
        try:
            self._client.api.remove_container(container, force=True, v=True)
        except Exception:  # noqa: BLE001 - already gone (or the engine is): nothing to do
            pass

    # running -----------------------------------------------------------------------------------------
    def capacity(self) -> int:
        if not self._capacity:
            self._capacity = int(self.settings.get("max_parallel") or self.info().get("NCPU") or 1)
        return self._capacity

    def submit(self, task: Task) -> Future:
        self.start()
        return self._pool.submit(self._run, task)

    def container_payload(self, payload: Mapping) -> dict:
        """The task as the container sees it: project paths remapped to ``workdir`` when the image holds the
        project, unchanged when the project is mounted at its own path."""
        payload = dict(payload)
        payload.pop("image", None)
        workdir = self.settings.get("workdir")
        if not workdir:
            return payload
        project = str(payload["project_dir"]).rstrip("/")

        def remap(p: str) -> str:
            return workdir.rstrip("/") + p[len(project):] if p == project or p.startswith(project + "/") else p

        payload["project_dir"] = workdir
        payload["code_paths"] = [remap(p) for p in payload.get("code_paths") or []]
        payload["inputs"] = {k: (dict(v, path=remap(v["path"])) if isinstance(v, dict) and v.get("path") else v)
                             for k, v in (payload.get("inputs") or {}).items()}
        return payload

    def binds(self, payload: Mapping) -> dict:
        """Bind mounts of one task's container: {source: {"bind": target, "mode": "ro"|"rw"}}."""
        binds: dict = {}

        def add(src: str, target: str | None = None, mode: str = "rw"):
            src = os.path.normpath(src)
            target = target or src
            old = binds.get(src)
            if old and old["bind"] == target and old["mode"] == "rw":
                return
            binds[src] = {"bind": target, "mode": mode}

        if self.engine_local:
            if self.host_environment:
                add("/usr", mode="ro")
                import mlspec

                roots = [sys.base_prefix, sys.prefix, str(Path(mlspec.__file__).resolve().parent.parent)]
                roots += [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)]
                roots += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if os.path.isdir(p)]
                for root in _collapse(r for r in roots if not r.startswith("/usr/")):
                    add(root, mode="ro")
                if os.path.isdir("/etc/ssl/certs"):
                    add("/etc/ssl/certs", mode="ro")

            if not self.settings.get("workdir"):
                add(str(payload["project_dir"]))
            url = (payload.get("artifacts") or {}).get("url") or ""
            if url and ("://" not in url or url.startswith("file://")):
                path = url[len("file://"):] if url.startswith("file://") else url
                os.makedirs(path, exist_ok=True)  # made here, so that it is not made by the engine as root
                add(os.path.realpath(path))
            project = str(payload["project_dir"]).rstrip("/") + "/"
            for spec in (payload.get("inputs") or {}).values():
                p = spec.get("path") if isinstance(spec, dict) else None
                if p and p.startswith("file://"):
                    p = p[len("file://"):]
                if p and os.path.isabs(p) and not p.startswith(project) and os.path.exists(p):
                    add(os.path.dirname(os.path.realpath(p)) if os.path.isfile(p) else os.path.realpath(p), mode="ro")
            for p in payload.get("external_paths") or ():
                if os.path.isabs(p) and os.path.isdir(p):
                    add(p)
        for m in self.settings.get("mounts") or ():
            if isinstance(m, str):
                src, target, *mode = m.split(":")
                binds[src] = {"bind": target, "mode": mode[0] if mode else "rw"}
            else:
                binds[m["source"]] = {"bind": m["target"], "mode": "ro" if m.get("read_only") else "rw"}
        return binds

    def host_config(self, task: Task, payload: Mapping) -> dict:
        import docker.types

        res = task.resources or {}
        kwargs: dict = {"binds": self.binds(payload), "network_mode": self.settings.get("network_mode") or "host",
                        "nano_cpus": int(float(res.get("cpus") or 1) * 1e9)}
        if self.settings.get("pid_mode") == "host":
            kwargs["pid_mode"] = "host"
        if res.get("memory"):
            kwargs["mem_limit"] = int(res["memory"])
            kwargs["memswap_limit"] = int(res["memory"])  # no swap beyond the limit: the limit is the limit
        gpus = float(res.get("gpus") or 0)
        if gpus > 0:
            have = self.settings.get("gpus")
            if isinstance(have, list):
                kwargs["device_requests"] = [docker.types.DeviceRequest(device_ids=have[:int(gpus + 0.999)],
                                                                        capabilities=[["gpu"]])]
            else:
                kwargs["device_requests"] = [docker.types.DeviceRequest(count=int(gpus + 0.999), capabilities=[["gpu"]])]
        return self.client().api.create_host_config(**kwargs)

    def environment(self, marker: str) -> dict:
        env = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp",
               "MLSPEC_RESULT_MARKER": marker}
        if self.host_environment:
            import mlspec

            paths = [str(Path(mlspec.__file__).resolve().parent.parent)]
            paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
            env["PYTHONPATH"] = os.pathsep.join(paths)

            if os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):
                env.setdefault("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        env.update({k: str(v) for k, v in (self.settings.get("env") or {}).items()})
        return env

    def _image_for(self, task: Task) -> str:
        pinned = task.payload.get("image") or ""
        if not pinned:
            return self.image()
        if pinned not in self._images:
            self._images[pinned] = self.resolve_image(pinned)
        return pinned

    def _run(self, task: Task) -> TaskResult:
        if self._cancelled.is_set():
            return TaskResult(TaskStatus.CANCELLED, error="cancelled before it started")
        import docker.errors

        api = self.client().api
        marker = f"@@mlspec-result-{os.urandom(8).hex()}@@"
        entry = _Running(task, marker)
        started = time.monotonic()
        try:
            payload = self.container_payload(task.payload)
            image = self._image_for(task)
            user = self.settings.get("user") or f"{os.getuid()}:{os.getgid()}"
            labels = {LABEL_APPLY: self.apply_label, LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}",
                      "mlspec.step": task.address}
            created = api.create_container(image, command=[self.python, "-c", RUNNER], stdin_open=True,
                                           detach=False, environment=self.environment(marker), labels=labels,
                                           user=user, working_dir=payload["project_dir"],
                                           host_config=self.host_config(task, payload))
        except BackendError as exc:
            return TaskResult(TaskStatus.FAILED, error=exc.message + (f" ({exc.hint})" if exc.hint else ""))
        except docker.errors.DockerException as exc:
            return TaskResult(TaskStatus.FAILED, error=f"the Docker engine refused the step's container: "
                                                       f"{_first_line(exc)}")
        entry.container = created["Id"]
        with self._lock:
            self._running[task.id] = entry
        timer = None
        raw = None
        result = None
        try:
            if self._cancelled.is_set():
                entry.reason = "cancel"
                return TaskResult(TaskStatus.CANCELLED, error="cancelled before it started")
            sock = api.attach_socket(entry.container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            raw = getattr(sock, "_sock", sock)
            raw.settimeout(None)
            entry.sock = sock
            api.start(entry.container)
            if task.timeout:
                timer = threading.Timer(float(task.timeout), self._stop, (entry, "timeout"))
                timer.daemon = True
                timer.start()
            try:
                raw.sendall(json.dumps(payload).encode())
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the container ended already (killed): its output and state say why
            log = _read_frames(raw)
            result = _result_of(log, marker)
            if result is not None and result.get("status") == "succeeded" and not entry.reason:
                code, state = 0, {}  # the step reported success: its exit code and state add nothing
            else:
                code = api.wait(entry.container, timeout=60)["StatusCode"]
                # why it failed (OOMKilled) is in its state
                state = api.inspect_container(entry.container)["State"] if code != 0 or result is None else {}
        except docker.errors.DockerException as exc:
            if entry.reason:
                return self._stopped(entry, "")
            return TaskResult(TaskStatus.FAILED, error=f"the step's container failed to run: {_first_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - a broken connection to the engine
            if entry.reason:
                return self._stopped(entry, "")
            return TaskResult(TaskStatus.FAILED, error=f"lost the step's container: {type(exc).__name__}: "
                                                       f"{_first_line(exc)}")
        finally:
            if timer is not None:
                timer.cancel()
            if raw is not None:
                try:
                    entry.sock.close()
                except Exception:  # noqa: BLE001
                    pass
            with self._lock:
                self._running.pop(task.id, None)
            if entry.reason or result is None or result.get("status") != "succeeded":
                self._remove(entry.container)  # before the result: a stopped or failed step leaves nothing
            else:
                self._remove_later(entry.container)
        return self._result(entry, log, result, code, state, time.monotonic() - started)

    def _result(self, entry: _Running, raw_log: bytes, result: dict | None, code: int, state: Mapping,
                took: float) -> TaskResult:
        at = raw_log.rfind(b"\n" + entry.marker.encode())
        if at >= 0:
            raw_log = raw_log[:at]
        log = raw_log[-LOG_LIMIT:].decode("utf-8", "replace")
        if entry.reason:
            return self._stopped(entry, log)
        if state.get("OOMKilled"):
            limit = int((entry.task.resources or {}).get("memory") or 0)
            what = f"memory limit {_mib(limit)} exceeded" if limit else "out of memory"
            error = (f"killed: {what} (exit code {code}); give the step more memory with resources.memory")
            if result and result.get("error"):
                error += f"; the step reported: {result['error']}"
            return TaskResult(TaskStatus.FAILED, error=error, log=log, duration=took)
        if result is not None:
            return TaskResult.from_runner(result, log)
        tail = "\n".join(log.strip().splitlines()[-5:])
        how = "was killed (SIGKILL)" if code == 137 else f"exited with code {code}"
        error = f"the step's container {how} before the step reported a result"
        if "No module named 'mlspec'" in log:
            error += ": mlspec is not installed in the image (install the same mlspec version there, or use " \
                     "backend.build)"
        elif tail:
            error += f": {tail}"
        return TaskResult(TaskStatus.FAILED, error=error, log=log, duration=took)

    def _stopped(self, entry: _Running, log: str) -> TaskResult:
        if entry.reason == "timeout":
            t = float(entry.task.timeout or 0)
            return TaskResult(TaskStatus.TIMED_OUT, error=f"timed out after {t:g}s; its container was killed",
                              log=log, duration=t)
        return TaskResult(TaskStatus.CANCELLED, error="cancelled; its container was killed", log=log)

    def _stop(self, entry: _Running, reason: str) -> None:
        if not entry.reason:
            entry.reason = reason
        try:
            self._client.api.kill(entry.container)
        except Exception:  # noqa: BLE001 - it ended meanwhile
            pass

    def cancel_all(self) -> None:
        self._cancelled.set()
        with self._lock:
            entries = list(self._running.values())
        stoppers = [threading.Thread(target=self._stop, args=(e, "cancel"), daemon=True) for e in entries]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(30)

    # checks ------------------------------------------------------------------------------------------
    def preflight(self, requirements: list[Requirement]) -> list[str]:
        try:
            info = self.info()
        except BackendError as exc:
            return [exc.message + (f" ({exc.hint})" if exc.hint else "")]
        where = f"the Docker engine at {self.engine_url}"
        problems = []
        url = self.context.artifacts_url
        if ("://" not in url or url.startswith("file://")) and not self.engine_local:
            problems.append(f"the artifact store {url} is a local path, which {where} (another machine) cannot "
                            "mount: use a shared store (storage.artifacts: s3://...)")
        cpus, mem = int(info.get("NCPU") or 1), int(info.get("MemTotal") or 0)
        for r in requirements:
            res = r.resources or {}
            if float(res.get("cpus") or 1) > cpus:
                problems.append(f"{r.address} asks for {float(res['cpus']):g} CPUs; {where} has {cpus}")
            if res.get("memory") and mem and int(res["memory"]) > mem:
                problems.append(f"{r.address} asks for {_mib(int(res['memory']))} of memory; {where} has "
                                f"{_mib(mem)}")
            if float(res.get("gpus") or 0) > 0 and not self.settings.get("gpus"):
                problems.append(f"{r.address} asks for {float(res['gpus']):g} GPU(s); backend.gpus declares none "
                                "for this engine (set backend.gpus: all where the NVIDIA container toolkit is "
                                "installed)")
            if res.get("custom"):
                problems.append(f"{r.address} asks for custom resources {sorted(res['custom'])}, which the docker "
                                "backend does not have")
        try:
            image = self.image()
        except BackendError as exc:
            return problems + [exc.message + (f" ({exc.hint})" if exc.hint else "")]
        modules = sorted({r.module for r in requirements if r.module})
        return problems + self.check_image(image, modules)

    def check_image(self, image: str, modules: list) -> list[str]:
        """Run the check in a container of the image: its mlspec version and task format match this mlspec's,
        and the steps' modules import there."""
        import docker.errors
        from mlspec import __version__
        from mlspec.backends.api import TASK_FORMAT_VERSION

        api = self.client().api
        payload = self.container_payload({"project_dir": str(self.context.project_dir), "artifacts": {},
                                          "code_paths": list(self.context.code_paths
                                                             or (str(self.context.project_dir),))})
        task = Task("preflight", "preflight", payload, {"cpus": 1})
        args = json.dumps({"code_paths": payload["code_paths"], "modules": modules})
        cid = ""
        try:
            cid = api.create_container(image, command=[self.python, "-c", CHECK, args], environment=self.environment(""),
                                       labels={LABEL_APPLY: self.apply_label,
                                               LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}"},
                                       user=self.settings.get("user") or f"{os.getuid()}:{os.getgid()}",
                                       working_dir=payload["project_dir"], host_config=self.host_config(task, payload))["Id"]
            api.start(cid)
            code = api.wait(cid, timeout=CHECK_TIMEOUT)["StatusCode"]
            out = api.logs(cid, stdout=True, stderr=True).decode("utf-8", "replace")
        except docker.errors.DockerException as exc:
            return [f"could not run the image {image} on the Docker engine at {self.engine_url}: {_first_line(exc)}"]
        except Exception as exc:  # noqa: BLE001 - a wait that timed out
            return [f"the check container of image {image} did not finish within {CHECK_TIMEOUT:g}s "
                    f"({type(exc).__name__})"]
        finally:
            if cid:
                self._remove(cid)
        tag = "@@mlspec-check@@"
        if tag not in out:
            tail = " | ".join(out.strip().splitlines()[-3:])
            return [f"the image {image} cannot run `{self.python}` (exit code {code}): {tail or 'no output'} "
                    "(it needs Python and mlspec; see backends/docker/README.md, Images)"]
        found = json.loads(out[out.rindex(tag) + len(tag):].splitlines()[0])
        if "mlspec_error" in found:
            return [f"mlspec does not import in the image {image} ({found['mlspec_error']}): install mlspec "
                    f"{__version__} there, or let mlspec build the image (backend.build)"]
        problems = []
        if found.get("format") != TASK_FORMAT_VERSION:
            problems.append(f"the image {image} has mlspec {found.get('mlspec')} (task format {found.get('format')}), "
                            f"but this mlspec is {__version__} (task format {TASK_FORMAT_VERSION}): rebuild the image "
                            f"with mlspec {__version__}")
        for name, err in sorted(found["problems"].items()):
            problems.append(f"module '{name}' does not import in the image {image}: {err}")
        return problems

    # services: deployments in containers (mlspec_docker.service) ------------------------------------
    supports_services = True

    def _services(self):
        from mlspec_docker.service import DockerServices

        return DockerServices(self)

    def deploy_service(self, service):
        return self._services().deploy(service)

    def update_service(self, record, service):
        return self._services().update(record, service)

    def service_status(self, record):
        return self._services().status(record)

    def remove_service(self, record) -> None:
        self._services().remove(record)

    def health(self) -> str:
        try:
            info = self.info()
        except BackendError as exc:
            return f"unreachable: {exc.message}"
        what = self.settings.get("image") or ("the project's image (build)" if self.settings.get("build")
                                             else "this machine's Python (host environment)")
        return (f"ok: Docker {info.get('ServerVersion', '?')} at {self.engine_url}, {info.get('NCPU', '?')} CPUs; "
                f"steps run in {what}")


def _result_of(raw_log: bytes, marker: str) -> dict | None:
    """The runner's result dict, written after the marker at the end of the output; None if it is not there."""
    at = raw_log.rfind(b"\n" + marker.encode())
    if at < 0:
        return None
    line = raw_log[at + 1 + len(marker):].split(b"\n", 1)[0]
    try:
        result = json.loads(line)
    except ValueError:
        return None
    return result if isinstance(result, dict) and "status" in result else None


def _read_exact(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _read_frames(sock) -> bytes:
    """The container's stdout and stderr, interleaved as written, until it ends (the engine's multiplexed
    attach stream: an 8-byte header with the stream and the length, then the bytes). Keeps the last part
    when a step writes more than twice LOG_LIMIT."""
    out = bytearray()
    while True:
        header = _read_exact(sock, 8)
        if len(header) < 8:
            break
        _stream, size = struct.unpack(">BxxxL", header)
        data = _read_exact(sock, size)
        out += data
        if len(out) > 2 * LOG_LIMIT:
            del out[:len(out) - LOG_LIMIT]
        if len(data) < size:
            break
    return bytes(out)
