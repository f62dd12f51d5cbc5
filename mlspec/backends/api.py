"""The backend interface: the one module backends import from mlspec.

A backend runs :class:`Task` objects (a step call or command with its inputs, outputs, params,
resources and timeout) and returns :class:`TaskResult` futures; it reports capacity, checks at plan time
that it can run what the plan needs (:meth:`Backend.preflight`), and cancels everything on Ctrl-C.
Backends register in the ``mlspec.backends`` entry-point group and receive their settings (the spec's
`backend:` mapping, checked against :attr:`Backend.settings_schema`). Later releases add deployments
(prediction services) to this interface.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlspec.errors import MlspecError

API_VERSION = 1
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


@dataclass(frozen=True)
class Requirement:
    """What the plan needs from a backend, checked by preflight before anything runs."""

    address: str
    resources: Mapping
    module: str = ""  # the `run:` module, to import in the target environment
    reads: tuple = ()  # dataset addresses (data residency)


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

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"type": cls.type, "api_version": API_VERSION}
