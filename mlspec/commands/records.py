"""Commands over what applies recorded: logs, runs, lineage, metrics, artifacts."""

from __future__ import annotations

import json
import time

from mlspec.addresses import parse_address
from mlspec.console import Console
from mlspec.errors import MlspecError, did_you_mean
from mlspec.project import Project
from mlspec.runs import RunStore
from mlspec.state import json_safe


def _project(args) -> Project:
    return Project.open(args.project_dir, args.file, args.overrides)


def recorded(project: Project, address: str) -> dict:
    st = project.read_state()
    if address not in st.resources:
        raise MlspecError(f"no recorded {address}{did_you_mean(address, st.resources)}",
                          hint="it has not been applied yet, or see `mlspec state list`")
    return st.resources[address]


def run_logs(args, console: Console) -> int:
    """The log of the step's most recent attempt: a failed run's log too, not only the recorded success."""
    project = _project(args)
    runs = RunStore(project.runs_loc)
    for rid in reversed(runs.ids()[-50:]):
        rec = runs.get(rid)  # a damaged record is skipped: it is history only
        step = ((rec or {}).get("steps") or {}).get(args.address)
        if step and step.get("status") in ("ran", "failed", "restored", "cancelled"):
            if step.get("log"):
                console.error(f"Log of {args.address} from run {rid} ({step['status']}):")
                console.print(project.artifacts.read_bytes(step["log"]).decode("utf-8", "replace"), end="")
            else:
                console.print(f"{args.address} printed nothing in its last run ({rid}, {step['status']}).")
            return 0
    rec = recorded(project, args.address)
    if not rec.get("log"):
        console.print(f"{args.address} printed nothing in its last run.")
        return 0
    console.print(project.artifacts.read_bytes(rec["log"]).decode("utf-8", "replace"), end="")
    return 0


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def run_runs(args, console: Console) -> int:
    project = _project(args)
    runs = RunStore(project.runs_loc)
    if args.runs_command == "show":
        rec = runs.read(args.run_id)
        if args.format == "json":
            console.print(json.dumps(json_safe(rec), indent=2, sort_keys=True))
            return 0
        dur = (rec["finished"] - rec["started"]) if rec.get("finished") else None
        console.print(f"Run {rec['run_id']}: {rec['status']}, started {_when(rec['started'])} UTC"
                      + (f", took {dur:.1f}s" if dur is not None else "")
                      + f", by {rec.get('user', '?')}@{rec.get('host', '?')}")
        git = rec.get("git") or {}
        console.print(f"git {git.get('commit') or '-'}{' (dirty)' if git.get('dirty') else ''}; backend "
                      f"{rec.get('backend')}; spec {rec.get('spec_digest', '')[:20]}")
        for addr, s in sorted((rec.get("steps") or {}).items()):
            extra = f" {s['duration']:.2f}s" if s.get("duration") else ""
            err = f": {s['error']}" if s.get("error") else ""
            reason = f" ({s['reason'].splitlines()[0]})" if s.get("reason") and s["status"] == "skipped" else ""
            console.print(f"  {s['status']:<11} {addr}{extra}{err}{reason}")
        return 0
    recs = runs.latest(args.limit)
    if args.format == "json":
        console.print(json.dumps([{k: r.get(k) for k in ("run_id", "status", "started", "finished", "counts", "user",
                                                         "host", "backend", "problem") if k in r or k != "problem"}
                                  for r in recs], indent=2))
        return 0
    if not recs:
        console.print("No runs yet.")
        return 0
    if args.format == "markdown":
        from mlspec.views.formats import markdown_table

        rows = []
        for r in recs:
            c = r.get("counts") or {}
            rows.append([f"`{r['run_id']}`", r["status"], _when(r.get("started")) if r["status"] != "corrupt" else "",
                         c.get("ran", 0), c.get("restored", 0), c.get("failed", 0), r.get("backend", "")])
        console.print(markdown_table(["run", "status", "started (UTC)", "ran", "restored", "failed", "backend"], rows,
                                     align_right=(3, 4, 5)))
        return 0
    for r in recs:
        if r["status"] == "corrupt":  # listed, not fatal: a run record is history only
            console.print(f"{r['run_id']}  {'corrupt':<11} the record cannot be read: {r['problem']}")
            continue
        c = r.get("counts") or {}
        console.print(f"{r['run_id']}  {r['status']:<11} {_when(r['started'])}  ran {c.get('ran', 0)}, "
                      f"restored {c.get('restored', 0)}, failed {c.get('failed', 0)}  {r.get('backend', '')}")
    return 0


def run_lineage(args, console: Console) -> int:
    project = _project(args)
    st = project.read_state()
    try:
        a = parse_address(args.address)
    except ValueError as exc:
        raise MlspecError(str(exc)) from None
    root = a.resource
    recorded(project, root)
    tree = _lineage(st.resources, root, a.output, set())
    if args.format == "json":
        console.print(json.dumps(tree, indent=2, sort_keys=True))
        return 0
    _print_tree(console, tree, 0)
    return 0


def _lineage(resources: dict, address: str, output: str, seen: set) -> dict:
    rec = resources.get(address) or {}
    node = {"address": address + (f".{output}" if output else "")}
    if rec.get("kind") == "dataset":
        node.update(kind="dataset", uri=rec.get("uri"), hash=rec.get("hash"))
        return node
    facts = rec.get("facts") or {}
    node.update(kind="step", run_id=rec.get("run_id"), fingerprint=rec.get("fingerprint"),
                run=facts.get("run") or facts.get("cmd"), params=facts.get("params"), code=facts.get("code"))
    if output:
        node["hash"] = (rec.get("outputs") or {}).get(output, {}).get("hash")
    inputs = []
    for name, src in sorted((facts.get("sources") or {}).items()):
        if src in seen:
            continue
        if src.startswith("dataset."):
            up, up_out = src, ""
        else:
            pa = parse_address(src)
            up, up_out = pa.resource, pa.output
        child = _lineage(resources, up, up_out, seen | {src})
        child["as_input"] = name
        inputs.append(child)
    node["inputs"] = inputs
    return node


def _print_tree(console: Console, node: dict, depth: int) -> None:
    pad = "    " * depth
    name = f"{node.get('as_input')} <- " if node.get("as_input") else ""
    if node["kind"] == "dataset":
        console.print(f"{pad}{name}{node['address']}  {node.get('uri')}  {node.get('hash')}")
        return
    h = f"  {node['hash']}" if node.get("hash") else ""
    console.print(f"{pad}{name}{node['address']}{h}  (run {node.get('run_id')})")
    console.print(f"{pad}    code: {node.get('run')}  " + ", ".join(f"{f}" for f in sorted(node.get("code") or {})))
    if node.get("params"):
        console.print(f"{pad}    params: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(node["params"].items())))
    for child in node.get("inputs", []):
        _print_tree(console, child, depth + 1)


def _metrics_of_state(resources: dict) -> dict:
    return {a: r["metrics"] for a, r in sorted(resources.items()) if r.get("metrics")}


def _metrics_of_run(rec: dict) -> dict:
    return {a: s["metrics"] for a, s in sorted((rec.get("steps") or {}).items()) if s.get("metrics")}


def _delta(v) -> str:
    return "-" if v is None else f"{v:+.4f}"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def run_metrics(args, console: Console) -> int:
    project = _project(args)
    st = project.read_state()
    current = _metrics_of_state(st.resources)
    if args.metrics_command == "diff":
        base_label, base = _base_metrics(project, args.base, current)
        rows = []
        for addr in sorted(set(current) | set(base)):
            for m in sorted(set(current.get(addr, {})) | set(base.get(addr, {}))):
                old, new = base.get(addr, {}).get(m), current.get(addr, {}).get(m)
                delta = (new - old) if old is not None and new is not None else None
                rows.append({"address": addr, "metric": m, "base": old, "current": new, "change": delta})
        if args.format == "json":
            console.print(json.dumps(json_safe({"base": base_label, "rows": rows}), indent=2))
        elif args.format == "markdown":
            out = [f"Metrics against {base_label}", "", "| resource | metric | base | current | change |",
                   "|---|---|---:|---:|---:|"]
            out += [f"| `{r['address']}` | {r['metric']} | {_fmt(r['base'])} | {_fmt(r['current'])} | "
                    f"{_delta(r['change'])} |"
                    for r in rows]
            console.print("\n".join(out))
        else:
            console.print(f"Metrics against {base_label}:")
            w = max([len(r["address"]) for r in rows] + [8])
            console.print(f"{'RESOURCE':<{w}}  {'METRIC':<12} {'BASE':>10} {'CURRENT':>10} {'CHANGE':>10}")
            for r in rows:
                ch = "-" if r["change"] is None else f"{r['change']:+.4f}"
                console.print(f"{r['address']:<{w}}  {r['metric']:<12} {_fmt(r['base']):>10} {_fmt(r['current']):>10} "
                              f"{ch:>10}")
        return 0
    rows = [{"address": a, "metric": m, "value": v} for a, ms in current.items() for m, v in sorted(ms.items())]
    if args.format == "json":
        console.print(json.dumps(json_safe(rows), indent=2))
    elif args.format == "markdown":
        console.print("\n".join(["| resource | metric | value |", "|---|---|---:|"] +
                                [f"| `{r['address']}` | {r['metric']} | {r['value']:.4f} |" for r in rows]))
    else:
        if not rows:
            console.print("No metrics recorded yet.")
        w = max([len(r["address"]) for r in rows] + [8])
        for r in rows:
            console.print(f"{r['address']:<{w}}  {r['metric']:<12} {r['value']:.4f}")
    return 0


def _base_metrics(project: Project, base: str | None, current: dict) -> tuple[str, dict]:
    if base and base.startswith("workspace:"):
        from mlspec.state import StateStore

        ws = base.split(":", 1)[1]
        other = StateStore(project.state_loc, ws).read(project.spec.project)
        if not other.exists:
            raise MlspecError(f"workspace '{ws}' has no state")
        return f"workspace {ws}", _metrics_of_state(other.resources)
    runs = RunStore(project.runs_loc)
    if base:
        rec = runs.read(base)
        return f"run {rec['run_id']}", _metrics_of_run(rec)
    # default: the latest run whose metrics differ from the current ones
    for rid in reversed(runs.ids()):
        rec = runs.get(rid)
        if rec is None:
            continue
        m = _metrics_of_run(rec)
        if m and any(current.get(a) != v for a, v in m.items()):
            return f"run {rid}", m
    raise MlspecError("no earlier run with different metrics to compare with",
                      hint="pass --base RUN_ID or --base workspace:NAME")
