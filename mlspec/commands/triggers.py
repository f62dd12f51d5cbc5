"""`mlspec triggers check [NAME ...] [--now TIME]`: which triggers fire now, and why (mlspec.triggers).

Reads the spec, the state and what each trigger watches (a dataset's content, a monitor's statistic); writes
nothing. `mlspec reconcile` acts on the same decisions.
"""

from __future__ import annotations

from mlspec.console import Console
from mlspec.errors import MlspecError, did_you_mean
from mlspec.project import Project
from mlspec.views.formats import emit, markdown_table, text_table

EXIT_FIRED = 2  # --detailed-exitcode: at least one trigger fires


def run(args, console: Console) -> int:
    project = Project.open(args.project_dir, args.file, args.overrides)
    return _check(args, console, project)


def observers(project: Project, now: float):
    """The callables mlspec.triggers.evaluate reads the world through: a dataset's current content hash and a
    monitor's evaluation (mlspec.monitoring, imported only when a monitor trigger asks)."""
    from mlspec.fingerprint import dataset_fact

    spec = project.spec

    def dataset_hash(address: str) -> str:
        ds = spec.datasets[address.split(".", 1)[1]]
        return dataset_fact(spec, ds, project.cache)["hash"]

    def monitor(name: str):
        try:
            from mlspec import monitoring
        except ImportError:
            raise MlspecError("monitors are not evaluated by this mlspec build") from None
        return monitoring.evaluate_for_trigger(project, name, now)

    return dataset_hash, monitor


def decisions(project: Project, now: float, names: tuple = (), state=None):
    from mlspec.triggers import evaluate

    spec = project.spec
    unknown = [n for n in names if n not in spec.triggers]
    if unknown:
        n = unknown[0]
        raise MlspecError(f"no trigger '{n}' in the spec{did_you_mean(n, sorted(spec.triggers)) or ''}",
                          hint="list them with `mlspec triggers check`")
    state = state if state is not None else project.read_state()
    dataset_hash, monitor = observers(project, now)
    out = evaluate(spec, state, now, dataset_hash=dataset_hash, monitor=monitor, names=tuple(names))
    project.cache.save()
    return out


def _check(args, console: Console, project: Project) -> int:
    from mlspec.triggers import parse_now, when

    now = parse_now(args.now)
    ds = decisions(project, now, tuple(args.names))
    data = {"now": now, "clock": "--now" if args.now else "system", "workspace": project.store.ws,
            "triggers": [d.to_dict() for d in ds]}
    headers = ["trigger", "on", "fires", "why", "last fired", "applies"]

    def cells(d):
        state = "yes" if d["fired"] else ("error" if d["error"] else "cooldown" if d["cooling_until"] else "no")
        return [d["name"], d["on"], state, d["why"], when(d["last_fired"]),
                ", ".join(d["targets"]) or "(everything)"]

    def text(d):
        clock = f"Clock: {when(d['now'])} ({'given by --now' if d['clock'] == '--now' else 'system clock'})"
        if not d["triggers"]:
            return f"No triggers in the spec.\n{clock}"
        fired = sum(1 for t in d["triggers"] if t["fired"])
        return "\n".join([text_table(headers, [cells(t) for t in d["triggers"]]), "",
                          f"{fired} of {len(d['triggers'])} trigger(s) fire. {clock}"])

    def markdown(d):
        return markdown_table(headers, [cells(t) for t in d["triggers"]]) if d["triggers"] else text(d)

    emit(console, args.format, data, text=text, markdown=markdown)
    if args.detailed_exitcode and any(d.fired for d in ds):
        return EXIT_FIRED
    return 0
