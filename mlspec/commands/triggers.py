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
        return monitor_verdict(project, name)

    return dataset_hash, monitor


def monitor_verdict(project: Project, name: str) -> dict:
    """A monitor evaluated now (mlspec.monitoring, the same report `mlspec monitor` prints) as a trigger reads
    it: data drift is breached when the share of drifted features reaches the report's drift share; a quality
    monitor (``accuracy``) when the metric on the labelled logged predictions is below its threshold."""
    import dataclasses

    from mlspec.monitoring import evaluate
    from mlspec.triggers import QUALITY_METHODS

    mon = project.spec.monitors[name]
    if mon.method in QUALITY_METHODS:
        if mon.threshold is None or not mon.labels:
            raise MlspecError(f"monitor '{name}' ({mon.method}) needs a `threshold` and `labels` to be evaluated",
                              hint="docs/monitoring.md: quality monitors")
        report = evaluate(project, dataclasses.replace(mon, method="auto", threshold=None))
        perf = report.get("performance") or {}
        value = perf.get(mon.method)
        if value is None:
            raise MlspecError(f"monitor '{name}': no {mon.method} on the logged predictions "
                              f"({perf.get('note') or 'the labels give ' + ', '.join(k for k in perf if k in ('accuracy', 'mae', 'rmse'))})")
        return {"value": value, "threshold": mon.threshold, "breached": value < mon.threshold,
                "detail": f"{perf.get('rows_labelled', 0)} labelled rows"}
    report = evaluate(project, mon)
    drifted, k = report["drifted_features"], len(report["features"])
    detail = f"{len(drifted)} of {k} features drifted" + (f" ({', '.join(drifted[:6])})" if drifted else "")
    return {"value": report["share_drifted"], "threshold": report["drift_share"], "breached": report["dataset_drift"],
            "detail": detail}


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
