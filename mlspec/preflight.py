"""Preflight: before anything runs, check that every backend the plan uses can run its steps.

For each backend with work in the plan: the plugin is installed and loads; its settings pass the JSON
Schema it ships; and its own checks pass (the cluster answers within a timeout, the artifact store is
reachable from it, modules import there, the requested resources exist). And for every Python step the
plan may run, that its function exists and takes the step's inputs and params (mlspec.stepcheck).
"""

from __future__ import annotations

from mlspec.backends.api import Backend, Context, Requirement
from mlspec.backends.registry import load_backend_class
from mlspec.errors import MlspecError
from mlspec.load import code_paths
from mlspec.core.types import Action
from mlspec.spec import BackendConfig


def backend_context(project) -> Context:
    spec = project.spec
    return Context(project_dir=spec.project_dir, artifacts_url=project.artifacts.url,
                   artifacts_options=dict(spec.storage.options), code_paths=tuple(code_paths(spec.project_dir)))


def settings_of(cfg: BackendConfig) -> dict:
    return {"type": cfg.type, "location": cfg.location, **dict(cfg.settings)}


def _settings_pass(schema, settings: dict) -> bool:
    """Whether settings pass the backend's schema, by the compiled check (no jsonschema import)."""
    from mlspec.schema import data_check

    check = data_check(schema)
    try:
        return bool(check is not None and check(settings))
    except RecursionError:
        return False


def make_backend(project, cfg: BackendConfig) -> Backend:
    cls = load_backend_class(cfg.type)
    settings = settings_of(cfg)
    schema = getattr(cls, "settings_schema", None)
    if schema and not _settings_pass(schema, settings):
        from jsonschema import Draft202012Validator

        errors = sorted(Draft202012Validator(schema).iter_errors(settings), key=lambda e: list(e.absolute_path))
        if errors:
            where = "backend" if cfg.name == "default" else f"backends.{cfg.name}"
            lines = []
            for e in errors:
                path = ".".join([where] + [str(p) for p in e.absolute_path])
                lines.append(f"{path}: {e.message}")
            raise MlspecError(f"invalid settings for the {cfg.type} backend:\n  " + "\n  ".join(lines),
                              hint="see docs/backends.md for its settings" if cfg.type == "local"
                              else f"see backends/{cfg.type}/README.md for its settings")
    return cls(settings, backend_context(project))


def active_steps(plan) -> set:
    """Addresses of the step instances the plan will (or may) run."""
    return {c.address for c in plan.changes if c.kind == "step" and c.action not in (Action.NOOP, Action.DELETE)}


def requirements_by_backend(project, instances, plan, checked: frozenset = frozenset(),
                            active: set | None = None) -> dict:
    """Backend config name -> (config, [Requirement]) for the steps the plan will (or may) run. A step in
    ``checked`` on a local backend has had its module imported by the step check already (which says
    more), so the backend is not asked again."""
    spec = project.spec
    active = active_steps(plan) if active is None else active
    out: dict = {}
    per_step: dict = {}  # step name -> (its backend's list, module, resources): 50,000 instances, few steps alike
    resources: dict = {}  # id(Resources) -> dict (steps that ask for nothing share one Resources)
    for inst in instances:
        if inst.address not in active:
            continue
        step = inst.step
        known = per_step.get(step.name)
        if known is None:
            cfg = spec.backend_for(step)
            entry = out.get(cfg.name)
            if entry is None:
                entry = out[cfg.name] = (cfg, [])
            module = step.run.partition(":")[0] if step.run else ""
            if cfg.type == "local" and step.name in checked:
                module = ""
            res = resources.get(id(step.resources))
            if res is None:
                res = resources[id(step.resources)] = step.resources.to_dict()
            known = per_step[step.name] = (entry[1], module, res)
        reqs, module, res = known
        reads = tuple(r.resource for r in inst.inputs if r.kind == "dataset") if inst.inputs else ()
        reqs.append(Requirement(inst.address, res, module, reads))
    return out


def step_calls(project, instances, plan, active: set | None = None) -> list:
    """How the runner will call the Python steps the plan will (or may) run: one StepCall for the steps
    alike in run target, argument names, backend and code (matrix instances of a step always are), so
    that 50,000 generated steps sharing one function are one check."""
    active = active_steps(plan) if active is None else active
    if not active:
        return []
    from mlspec.stepcheck import StepCall

    spec = project.spec
    code = plan.facts.get("code") or {}
    backends: dict = {}  # step.backend -> (type, python)
    groups: dict = {}
    seen: set = set()
    fkeys: dict = {}  # id(code facts) -> its items: steps of one function share one facts mapping
    for inst in instances:
        step = inst.step
        if not step.run or step.name in seen or inst.address not in active:
            continue
        seen.add(step.name)
        where = backends.get(step.backend)
        if where is None:
            cfg = spec.backend_for(step)
            where = backends[step.backend] = (cfg.type, str(cfg.settings.get("python") or "") if cfg.type == "local"
                                              else "")
        facts = code.get(step.name) or {}
        fkey = fkeys.get(id(facts))
        if fkey is None:
            fkey = fkeys[id(facts)] = tuple(facts.items())
        key = (step.run, where, tuple(step.inputs), tuple(step.params), tuple(step.matrix), fkey)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (facts, [])
        group[1].append(step.name)
    calls = []
    for (run, (btype, python), inputs, params, matrix, _), (facts, names) in groups.items():
        module, _, function = run.partition(":")
        calls.append(StepCall(tuple(names), module, function, inputs, params, matrix, btype, python, facts))
    return calls


def check_steps(project, calls: list, keep: dict | None = None) -> list:
    """The step check's findings (mlspec.stepcheck) for these calls; cached by code, no process when
    nothing changed. With ``keep`` (an apply), a local backend's worker does the check and stays there, for
    the steps (mlspec.backends.local.LocalBackend.step_check)."""
    if not calls:
        return []
    from mlspec.stepcheck import check

    spec = project.spec
    runners = _local_runners(project, calls, keep) if keep is not None else None
    return check(spec.project_dir, code_paths(spec.project_dir), calls,
                 spec.project_dir / ".mlspec" / "cache" / "stepcheck.json", runners=runners)


def _local_runners(project, calls: list, keep: dict) -> dict:
    """{"": the step check of the pooled local backend that runs steps of these calls in this interpreter}."""
    spec = project.spec
    for call in calls:
        if call.backend != "local" or call.python:
            continue
        cfg = spec.backend_for(spec.steps[call.steps[0]])
        if cfg.settings.get("fresh_process"):
            continue
        backend = keep.get(cfg.name)
        if backend is None:
            try:
                backend = keep[cfg.name] = make_backend(project, cfg)
            except MlspecError:
                return {}  # run_preflight says what is wrong with it
        check = getattr(backend, "step_check", None)
        return {"": check} if check else {}
    return {}


def run_preflight(project, instances, plan, keep: dict | None = None, checked: frozenset = frozenset(),
                  active: set | None = None) -> list[str]:
    """Problems found, one line each. With ``keep``, the backends stay open there for the apply that follows
    (a cluster connection is made once, not twice). ``checked``: steps the step check imported."""
    problems: list[str] = []
    for name, (cfg, reqs) in sorted(requirements_by_backend(project, instances, plan, checked, active).items()):
        try:
            backend = (keep or {}).get(name)  # made for the step check, if it made one
            if backend is None:
                backend = make_backend(project, cfg)
        except MlspecError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
            continue
        label = cfg.type if name == "default" else f"{name} ({cfg.type})"
        try:
            problems.extend(f"backend {label}: {p}" for p in backend.preflight(reqs))
        finally:
            if keep is None:
                backend.close()
            else:
                keep[name] = backend
    return problems
