"""The backend interface: the one module backends import from mlspec.

A backend runs :class:`Task` objects (a step call or command with its inputs, outputs, params,
resources and timeout) and returns :class:`TaskResult` futures; it reports capacity, checks at plan time
that it can run what the plan needs (:meth:`Backend.preflight`), and cancels everything on Ctrl-C.
Backends register in the ``mlspec.backends`` entry-point group and receive their settings (the spec's
`backend:` mapping, checked against :attr:`Backend.settings_schema`).

Since API version 2 a backend may also serve models (deployments): :attr:`Backend.supports_services` and
four calls on a long-running :class:`Service` (``deploy_service``, ``service_status``, ``update_service``,
``remove_service``). The backend returns a plain JSON record of what it started (pids, a port, ...); mlspec
keeps it in the deployment's state record and hands it back on the next call. docs/backends.md
("Services") describes the contract; mlspec.testing.ServiceConformance checks it.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlspec.core.frozen import fast_init
from mlspec.errors import MlspecError

API_VERSION = 2
#: 1: tasks (steps). 2: services for deployments (Backend.supports_services, deploy_service, service_status,
#: update_service, remove_service; Service, ServiceStatus). A backend of API 1 has supports_services False.
#: the runner's task payload (mlspec.runner). A worker refuses a payload of another format, naming both mlspec
#: versions: a backend whose environment (a container image, a Ray cluster) has another mlspec fails clearly.
#: 2: inputs carry load_args, a declared format, or a gather (one entry per matrix instance); `output_formats`
#: the outputs' declared formats, `output_opts` their project paths and types (a runner of 1 would ignore them).
TASK_FORMAT_VERSION = 2


class BackendError(MlspecError):
    """A backend cannot do what was asked (its cluster is unreachable, a setting is wrong): a user error that
    the CLI prints as one line with its hint (exit code 1), never as a crash. Raise it from start()."""

    def __init__(self, message: str, *, hint: str = ""):
        super().__init__(message, hint=hint)


class TaskStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    CANCELLED = "cancelled"

    @property
    def ok(self) -> bool:
        return self is TaskStatus.SUCCEEDED


@dataclass(frozen=True)
class Task:
    """One execution of one step instance. ``payload`` is the runner's task dict (see mlspec.runner)."""

    id: str
    address: str
    payload: Mapping
    resources: Mapping = field(default_factory=lambda: {"cpus": 1, "gpus": 0, "memory": None, "custom": {}})
    timeout: float | None = None

    def slots(self, capacity: int) -> int:
        """How many of a backend's CPU slots this task occupies."""
        return self.slots_for(self.resources.get("cpus"), capacity)

    @staticmethod
    def slots_for(cpus, capacity: int) -> int:
        import math

        return max(1, min(capacity, math.ceil(float(cpus or 1))))


@dataclass
class TaskResult:
    status: TaskStatus
    outputs: dict = field(default_factory=dict)  # name -> {"hash", "size", "format"}
    metrics: dict = field(default_factory=dict)
    error: str = ""
    log: str = ""
    duration: float = 0.0

    @classmethod
    def from_runner(cls, result: Mapping, log: str = "") -> "TaskResult":
        return cls(TaskStatus(result["status"]), dict(result.get("outputs") or {}), dict(result.get("metrics") or {}),
                   result.get("error", ""), log, float(result.get("duration", 0.0)))


@fast_init
@dataclass(frozen=True)
class Requirement:
    """What the plan needs from a backend, checked by preflight before anything runs."""

    address: str
    resources: Mapping
    module: str = ""  # the `run:` module, to import in the target environment
    reads: tuple = ()  # dataset addresses (data residency)


@dataclass(frozen=True)
class Service:
    """A prediction service a deployment asks a backend to run: one model version, on a port, N replicas.

    ``config`` is the prediction worker's configuration (mlspec.serve.worker ``--config``; never a secret) and
    ``env`` the environment variables it reads secrets from (the bearer token, the store's options): a
    backend passes ``env`` to the processes it starts and never writes it anywhere."""

    address: str  # deployment.NAME
    name: str
    workspace: str
    model: str
    version: int
    config: Mapping
    port: int | None = None  # None: any free port (the record says which)
    replicas: int = 1
    drain_seconds: float = 10.0
    ready_timeout: float = 300.0  # seconds a replica may take to load and answer ready
    env: Mapping = field(default_factory=dict, repr=False)


@dataclass
class ServiceStatus:
    """What a backend observes of a service it started (``service_status``)."""

    state: str  # running | degraded (fewer replicas ready than asked) | unhealthy | gone
    version: int | None = None  # the model version the replicas serve (None: none answers)
    port: int | None = None
    replicas: list = field(default_factory=list)  # [{"pid", "version", "started"}]
    detail: str = ""  # one line for a person: what was seen

    STATES = ("running", "degraded", "unhealthy", "gone")

    def to_dict(self) -> dict:
        return {"state": self.state, "version": self.version, "port": self.port, "replicas": list(self.replicas),
                "detail": self.detail}


@dataclass(frozen=True)
class Context:
    """Where the project and its stores are, as the backend needs them."""

    project_dir: Path
    artifacts_url: str
    artifacts_options: Mapping = field(default_factory=dict)
    code_paths: tuple = ()


class Backend:
    """Base class with the shared defaults; a backend overrides what it does differently."""

    type: str = ""
    #: JSON Schema (dict) of the backend's settings, or None to accept any mapping
    settings_schema: Mapping | None = None

    def __init__(self, settings: Mapping, context: Context):
        self.settings = dict(settings)
        self.context = context

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect or start what is needed; called once before the first submit."""

    def close(self) -> None:
        """Release everything started by :meth:`start`."""

    # running -------------------------------------------------------------------------------------
    def capacity(self) -> int:
        """How many CPU slots run at once (the default --parallelism)."""
        return 1

    def submit(self, task: Task) -> "Future[TaskResult]":
        raise TypeError(f"backend '{self.type}' does not implement submit()")

    def cancel_all(self) -> None:
        """Stop every running task (Ctrl-C); their futures resolve as CANCELLED."""

    # checks --------------------------------------------------------------------------------------
    def preflight(self, requirements: list[Requirement]) -> list[str]:
        """Problems that would stop the plan's steps from running here, as one-line messages."""
        return []

    def health(self) -> str:
        """A one-line description of the backend's state ("ok: 2 CPUs", "unreachable: ...")."""
        return "ok"

    # services (API 2) -----------------------------------------------------------------------------
    #: True when the backend implements the four service calls below (deployments may choose it)
    supports_services: bool = False

    def deploy_service(self, service: Service) -> dict:
        """Start ``service`` and return once every replica is ready; the record (plain JSON) of what was
        started. Raise BackendError when it cannot start (the port is taken, the model does not load)."""
        raise BackendError(f"backend '{self.type}' cannot serve models (deployment {service.address})",
                           hint="serve it on a backend that can: `backend: local` on the deployment")

    def update_service(self, record: Mapping, service: Service) -> dict:
        """Roll ``service`` out over the running one (the record of the last call): new replicas start, become
        ready and take traffic before the old ones drain and stop, so no request fails. The new record."""
        raise BackendError(f"backend '{self.type}' cannot serve models (deployment {service.address})")

    def service_status(self, record: Mapping) -> ServiceStatus:
        """Observe a service from its record: processes alive, replicas ready, the version they serve."""
        return ServiceStatus("gone", detail=f"backend '{self.type}' cannot serve models")

    def remove_service(self, record: Mapping) -> None:
        """Stop a service (drained), leaving no process and no open port. Removing a gone service is no error."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"type": cls.type, "api_version": API_VERSION, "services": bool(cls.supports_services)}
