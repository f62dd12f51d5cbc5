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
        instances = sorted(a for a in st.resources if a.startswith(address + "["))
        if instances:  # a step that fans out: each instance has its own record
            shown = ", ".join(f"'{a}'" for a in instances[:5]) + (f" and {len(instances) - 5} more"
                                                                   if len(instances) > 5 else "")
            raise MlspecError(f"{address} fans out: name one instance: {shown}",
                              hint="quote the brackets in the shell; `mlspec state list` lists them all")
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
                run=facts.get("run") or facts.get("cmd"), params=facts.get("params"), code=facts.get("code"),
                deps=facts.get("deps") or {}, dep_keys=facts.get("dep_keys") or {})
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
    code = ", ".join(f"{f}" for f in sorted(node.get("code") or {}))
    console.print(f"{pad}    code: {node.get('run')}" + (f"  {code}" if code else ""))
    if node.get("deps"):
        console.print(f"{pad}    deps: " + ", ".join(sorted(node["deps"])))
    params = [f"{k}={json.dumps(v)}" for k, v in sorted((node.get("params") or {}).items())]
    params += [f"{f}:{k}={json.dumps(v)}" for f, ks in sorted((node.get("dep_keys") or {}).items())
               for k, v in sorted(ks.items())]
    if params:
        console.print(f"{pad}    params: " + ", ".join(params))
    for child in node.get("inputs", []):
        _print_tree(console, child, depth + 1)


def metrics_of(resources: dict) -> dict:
    """address -> {metric: value} of every recorded resource that has metrics."""
    return {a: r["metrics"] for a, r in sorted(resources.items()) if r.get("metrics")}


def run_metrics(args, console: Console) -> int:
    from mlspec.commands.bases import current_point, resolve_base
    from mlspec.views import metrics as view
    from mlspec.views.formats import emit

    project = _project(args)
    if args.metrics_command == "diff":
        head = current_point(project)
        base = resolve_base(project, args.base, head)
        current, old = metrics_of(head.state.resources), metrics_of(base.state.resources)
        rows = []
        for addr in sorted(set(current) | set(old)):
            for m in sorted(set(current.get(addr, {})) | set(old.get(addr, {}))):
                b, c = old.get(addr, {}).get(m), current.get(addr, {}).get(m)
                rows.append({"address": addr, "metric": m, "base": b, "current": c, "change": view.change(b, c)})
        data = {"base": base.to_dict(), "current": head.to_dict(), "rows": rows}
        emit(console, args.format, data, text=view.diff_text, markdown=view.diff_markdown)
        return 0
    current = metrics_of(project.read_state().resources)
    rows = [{"address": a, "metric": m, "value": v} for a, ms in current.items() for m, v in sorted(ms.items())]
    emit(console, args.format, rows, text=view.show_text, markdown=view.show_markdown)
    return 0
