"""The Spec: frozen, plain data built from a validated, composed spec. No I/O, no OmegaConf."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlspec import SPEC_FORMAT_VERSION
from mlspec.core.frozen import fast_init
from mlspec.gcpause import paused
from mlspec.sensitive import Sensitivity, mask
from mlspec.sensitive import find as find_sensitive
from mlspec.units import parse_duration, parse_size


class Secret(str):
    """A secret string: behaves like its value for the step, prints as ``(sensitive)``."""

    def __repr__(self) -> str:  # never leak through logs or reprs
        return "'(sensitive)'"

    __str__ = str.__str__


@dataclass(frozen=True)
class Storage:
    state: str = ".mlspec/state"
    artifacts: str = ".mlspec/artifacts"
    workspace: str = "default"
    options: Mapping = field(default_factory=dict)
    link: tuple = ("reflink", "copy")  # how outputs with a path are put in the project, tried in order
    lock_lease: str | float | None = None  # the lease of a lock on an object store (mlspec.lock); None: 60 s


@dataclass(frozen=True)
class BackendConfig:
    name: str  # "default" for the top-level backend, else the key in `backends` or the type
    type: str
    location: str = "local"
    settings: Mapping = field(default_factory=dict)  # everything else, checked by the plugin


@dataclass(frozen=True)
class Dataset:
    name: str
    uri: str
    format: str = "auto"
    description: str = ""
    residency: tuple = ()
    options: Mapping = field(default_factory=dict)
    contract: Mapping | None = None

    @property
    def address(self) -> str:
        return f"dataset.{self.name}"


@fast_init
@dataclass(frozen=True)
class Resources:
    cpus: float = 1
    gpus: float = 0
    memory: int | None = None
    custom: Mapping = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cpus": self.cpus, "gpus": self.gpus, "memory": self.memory, "custom": dict(self.custom)}


@dataclass(frozen=True)
class Plot:
    """How `mlspec plots` draws one step output (`steps.NAME.plots.OUTPUT`)."""

    output: str
    x: str = ""  # "" : `step`, or the row number
    y: tuple = ()  # (): every numeric column but x
    template: str = "line"  # line | scatter | bar
    title: str = ""


@fast_init
@dataclass(frozen=True)
class Dep:
    """A ``deps:`` entry: a project-relative file or directory, or named keys of a YAML/JSON/TOML file."""

    path: str
    keys: tuple = ()  # dotted key paths ("featurize.max_features"); empty: the whole file's content


def _deps(entries) -> tuple:
    return tuple(Dep(d["path"], tuple(d["keys"])) if isinstance(d, dict) else Dep(d) for d in entries or ())


@fast_init
@dataclass(frozen=True)
class Step:
    name: str
    run: str = ""
    cmd: str = ""
    description: str = ""
    inputs: Mapping = field(default_factory=dict)  # input name -> address text
    outputs: tuple = ()
    deps: tuple = ()  # of Dep
    params: Mapping = field(default_factory=dict)
    secret_params: frozenset = frozenset()
    metrics: tuple = ()
    resources: Resources = field(default_factory=Resources)
    retries: int = 0
    backoff: float = 1.0
    timeout: float | None = None
    backend: str = ""
    matrix: Mapping = field(default_factory=dict)
    env: Mapping = field(default_factory=dict)
    cache: bool = True
    external_paths: tuple = ()  # absolute dirs outside the project that outputs may come from
    output_opts: Mapping = field(default_factory=dict)  # output name -> OutputOpts (only outputs that declare any)
    input_opts: Mapping = field(default_factory=dict)  # input name -> {"format", "load_args"} (only when declared)
    fan_out: bool = True  # fan out with matrix upstreams; False gathers them
    image: str = ""  # container image the step runs in (backends that run images); its digest joins the fingerprint

    def output_path(self, name: str) -> str:
        """The project path an output is materialised at ('' when it has none)."""
        o = self.output_opts.get(name)
        return o.path if o else ""
    plots: Mapping = field(default_factory=dict)  # output name -> Plot

    @property
    def address(self) -> str:
        return f"step.{self.name}"


@fast_init
@dataclass(frozen=True)
class OutputOpts:
    """How one output is kept, from ``outputs: {NAME: {path, type, format, save_args}}``."""

    path: str = ""  # project-relative, no trailing slash; '' when the output lives only in the store
    type: str = "file"  # "file" or "dir"
    format: str = ""  # '' chooses from the returned value
    save_args: Mapping = field(default_factory=dict)
    contract: Mapping | None = None  # checked when the step finishes (mlspec.contracts)

    def to_dict(self) -> dict:
        return {"path": self.path, "type": self.type, "format": self.format, "save_args": dict(self.save_args)}


def output_opts(decl) -> tuple[tuple, dict]:
    """(names, {name: OutputOpts}) from the list or mapping form of ``outputs:``."""
    if not isinstance(decl, dict):  # (a dict check: typing's Mapping check costs 3 us, twice per step)
        return tuple(decl or ()), {}
    opts = {}
    for name, o in decl.items():
        if isinstance(o, str):
            o = {"path": o}
        if not o:
            continue
        path = str(o.get("path") or "")
        kind = o.get("type") or ("dir" if path.endswith("/") else "file")
        opts[name] = OutputOpts(path.rstrip("/"), kind, str(o.get("format") or ""), dict(o.get("save_args") or {}),
                                o.get("contract") or None)
    return tuple(decl), opts


def input_opts(decl) -> tuple[dict, dict]:
    """({name: address}, {name: {format, load_args}}) from ``inputs:`` (address strings or ``{from, ...}``)."""
    addresses, opts = {}, {}
    for name, v in (decl or {}).items():
        if isinstance(v, dict):
            addresses[name] = v["from"]
            o = {k: v[k] for k in ("format", "load_args") if k in v}
            if o:
                opts[name] = o
        else:
            addresses[name] = v
    return addresses, opts


@dataclass(frozen=True)
class Model:
    name: str
    source: str
    metrics: str = ""
    gates: Mapping = field(default_factory=dict)
    select: Mapping = field(default_factory=dict)
    promote: Mapping = field(default_factory=dict)
    description: str = ""
    on_fail: str = "fail"  # a candidate that fails a gate: fail the apply (exit 1), or keep going with a warning
    pin: Mapping = field(default_factory=dict)  # alias -> version the spec holds it on (desired state)


@dataclass(frozen=True)
class Deployment:
    name: str
    model: str
    backend: str = ""
    port: int | None = None
    replicas: int = 1
    health: Mapping = field(default_factory=dict)
    description: str = ""
    token: "Secret | None" = field(default=None, repr=False)  # the bearer token (a secret; never stored)
    drain: float = 10.0  # seconds a replica being replaced may take to finish its requests
    log: Mapping | None = field(default_factory=dict)  # request log settings; None: no request log
    limits: Mapping = field(default_factory=dict)  # max_body_bytes
    ready_timeout: float = 300.0  # seconds a replica may take to load and answer ready

    @property
    def model_name(self) -> str:
        return self.model.split("@", 1)[0]

    @property
    def model_ref(self) -> str:
        """The alias (``production``) or the version number (``"3"``) after the ``@``."""
        return self.model.split("@", 1)[1]


@dataclass(frozen=True)
class Monitor:
    name: str
    deployment: str
    reference: str
    method: str = "auto"
    threshold: float | None = None  # None: the method's default (mlspec.drift.DEFAULT_THRESHOLD)
    features: tuple = ()
    schedule: str = ""
    window: int | str | None = None  # newest N rows, or a duration ("24h")
    description: str = ""
    target: str = ""  # the reference's label column: prediction drift
    labels: Mapping = field(default_factory=dict)  # {from, key, target}: performance


@dataclass(frozen=True)
class Trigger:
    name: str
    schedule: str = ""
    dataset: str = ""
    monitor: str = ""
    apply: tuple = ()
    description: str = ""
    cooldown: str | float = ""  # a duration: inside it, a trigger whose condition holds does not fire


@dataclass(frozen=True)
class Spec:
    project: str
    project_dir: Path
    spec_file: Path
    spec_version: int = SPEC_FORMAT_VERSION
    description: str = ""
    storage: Storage = field(default_factory=Storage)
    backend: BackendConfig = field(default_factory=lambda: BackendConfig("default", "local"))
    backends: Mapping = field(default_factory=dict)
    secret_names: tuple = ()
    datasets: Mapping = field(default_factory=dict)
    steps: Mapping = field(default_factory=dict)
    models: Mapping = field(default_factory=dict)
    deployments: Mapping = field(default_factory=dict)
    monitors: Mapping = field(default_factory=dict)
    triggers: Mapping = field(default_factory=dict)
    digest: str = ""
    config: Mapping = field(default_factory=dict)  # resolved spec as data, secrets masked
    choices: Mapping = field(default_factory=dict)
    sensitive: Sensitivity = field(default_factory=Sensitivity, repr=False, compare=False)
    extensions: Mapping = field(default_factory=dict)  # top-level x-* sections, for resource-kind plugins
    policies: Mapping = field(default_factory=dict)  # policy name -> its settings (mlspec.policies)

    def backend_for(self, step: Step) -> BackendConfig:
        """The backend a step runs on: its own `backend:` (a name in `backends` or a type) or the default."""
        if not step.backend:
            return self.backend
        if step.backend in self.backends:
            return self.backends[step.backend]
        if step.backend == self.backend.type:
            return self.backend
        return BackendConfig(step.backend, step.backend)



def _backend(name: str, data: Mapping) -> BackendConfig:
    settings = {k: v for k, v in data.items() if k not in ("type", "location")}
    return BackendConfig(name, str(data.get("type", "local")), str(data.get("location", "local")), settings)


def _deployment(name: str, d: Mapping) -> Deployment:
    log = d.get("log", True)
    if log is False:
        log_settings = None
    else:
        log = log if isinstance(log, dict) else {}
        log_settings = {"max_bytes": parse_size(log["max_bytes"]) if log.get("max_bytes") is not None else 64 << 20,
                        "flush_rows": int(log.get("flush_rows", 1000)),
                        "flush_seconds": parse_duration(log["flush_seconds"]) if log.get("flush_seconds") is not None
                        else 2.0}
    limits = d.get("limits") or {}
    return Deployment(name, d["model"], d.get("backend", ""), d.get("port"), int(d.get("replicas", 1)),
                      dict(d.get("health") or {}), d.get("description", ""),
                      Secret(str(d["token"])) if d.get("token") is not None else None,
                      parse_duration(d["drain"]) if d.get("drain") is not None else 10.0, log_settings,
                      {"max_body_bytes": parse_size(limits["max_body_bytes"]) if limits.get("max_body_bytes")
                       is not None else 1 << 20},
                      parse_duration(d["ready_timeout"]) if d.get("ready_timeout") is not None else 300.0)


def _plot(output: str, p: Mapping) -> Plot:
    y = p.get("y") or ()
    return Plot(output, p.get("x", ""), (y,) if isinstance(y, str) else tuple(y), p.get("template", "line"),
                p.get("title", ""))


_NO_SECRETS: frozenset = frozenset()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


@paused
def build_spec(data: Mapping, *, project_dir: Path, spec_file: Path, sensitive: Sensitivity | None = None,
               choices: Mapping | None = None, canonical: bytes | None = None) -> Spec:
    """Build the frozen Spec from validated plain data (schema and semantic checks already passed)."""
    import xxhash

    sensitive = sensitive if sensitive is not None else find_sensitive(data)
    secret_paths = sensitive.paths
    masked = mask(dict(data), sensitive)
    digest = xxhash.xxh3_128_hexdigest(canonical if canonical is not None else _canonical(masked))
    st = data.get("storage") or {}
    storage = Storage(st.get("state", ".mlspec/state"), st.get("artifacts", ".mlspec/artifacts"),
                      st.get("workspace", "default"), dict(st.get("options") or {}),
                      tuple(st.get("link") or ("reflink", "copy")), st.get("lock_lease"))
    steps = {}
    no_secret_params = not any(len(p) > 2 and p[0] == "steps" and p[2] == "params" for p in secret_paths)
    default_resources = Resources(1.0, 0.0, None, {})  # shared by the steps that ask for nothing (frozen, read only)
    for name, s in (data.get("steps") or {}).items():
        # the steps of a large spec mostly use a few keys: the others cost a lookup, not a conversion
        params, secret_params = {}, set()
        for k, v in (s.get("params") or {}).items():
            if isinstance(v, dict) and set(v) == {"value", "secret"} and v.get("secret") is True:
                params[k] = Secret(str(v["value"]))
                secret_params.add(k)
            elif not no_secret_params and isinstance(v, str) and ("steps", name, "params", k) in secret_paths:
                params[k] = Secret(v)
                secret_params.add(k)
            else:
                params[k] = v
        res = s.get("resources")
        retries = s.get("retries", 0)
        backoff = 1.0
        if isinstance(retries, dict):
            backoff = float(retries.get("backoff", 1.0))
            retries = int(retries.get("count", 0))
        outs, oopts = output_opts(s.get("outputs"))
        ins, iopts = input_opts(s.get("inputs"))
        deps, matrix, env, plots, timeout = (s.get("deps"), s.get("matrix"), s.get("env"), s.get("plots"),
                                             s.get("timeout"))
        steps[name] = Step(
            name=name, run=s.get("run", ""), cmd=s.get("cmd", ""), description=s.get("description", ""),
            inputs=ins, outputs=outs, output_opts=oopts, input_opts=iopts, fan_out=bool(s.get("fan_out", True)),
            deps=_deps(deps) if deps else (), params=params,
            secret_params=frozenset(secret_params) if secret_params else _NO_SECRETS,
            metrics=tuple(s.get("metrics") or ()),
            resources=Resources(float(res.get("cpus", 1)), float(res.get("gpus", 0)),
                                parse_size(res["memory"]) if res.get("memory") is not None else None,
                                dict(res.get("custom") or {})) if res else default_resources,
            retries=int(retries), backoff=backoff,
            timeout=parse_duration(timeout) if timeout is not None else None,
            backend=s.get("backend", ""), matrix={k: list(v) for k, v in matrix.items()} if matrix else {},
            env={k: str(v) for k, v in env.items()} if env else {}, cache=bool(s.get("cache", True)),
            external_paths=tuple(s.get("external_paths") or ()), image=str(s.get("image") or ""),
            plots={o: _plot(o, p or {}) for o, p in plots.items()} if plots else {})
    datasets = {n: Dataset(n, d["uri"], d.get("format", "auto"), d.get("description", ""),
                           tuple(d.get("residency") or ()), dict(d.get("options") or {}), d.get("contract"))
                for n, d in (data.get("datasets") or {}).items()}
    models = {n: Model(n, m["from"], m.get("metrics", ""), dict(m.get("gates") or {}), dict(m.get("select") or {}),
                       dict(m.get("promote") or {}), m.get("description", ""), m.get("on_fail", "fail"),
                       {str(a): int(v) for a, v in (m.get("pin") or {}).items()})
              for n, m in (data.get("models") or {}).items()}
    deployments = {n: _deployment(n, d) for n, d in (data.get("deployments") or {}).items()}
    monitors = {n: Monitor(n, m["deployment"], m["reference"], m.get("method", "auto"),
                           float(m["threshold"]) if m.get("threshold") is not None else None,
                           tuple(m.get("features") or ()), m.get("schedule", ""), m.get("window"),
                           m.get("description", ""), m.get("target", ""), dict(m.get("labels") or {}))
                for n, m in (data.get("monitors") or {}).items()}
    triggers = {n: Trigger(n, t.get("schedule", ""), t.get("dataset", ""), t.get("monitor", ""),
                           tuple(t.get("apply") or ()), t.get("description", ""),
                           t.get("cooldown", ""))
                for n, t in (data.get("triggers") or {}).items()}
    return Spec(
        project=data["project"], project_dir=project_dir, spec_file=spec_file,
        spec_version=int(data.get("spec_version", SPEC_FORMAT_VERSION)), description=data.get("description", ""),
        storage=storage, backend=_backend("default", data.get("backend") or {"type": "local"}),
        backends={n: _backend(n, b) for n, b in (data.get("backends") or {}).items()},
        secret_names=tuple(sorted((data.get("secrets") or {}).keys())),
        datasets=datasets, steps=steps, models=models, deployments=deployments, monitors=monitors,
        triggers=triggers, digest=digest, config=masked, choices=dict(choices or {}), sensitive=sensitive,
        extensions={k: v for k, v in data.items() if isinstance(k, str) and k.startswith("x-")},
        policies=dict(data.get("policies") or {}))
