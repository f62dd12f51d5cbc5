"""`mlspec review`: one pull-request comment with everything a reviewer needs, and a marker for the bot.

    1. the spec diff (`mlspec diff`): base revision -> the working tree, with what each change affects;
    2. the plan against this workspace (the PR's, made with `workspace new pr-N --from main`), or the saved
       plan an apply ran (`--plan FILE`);
    3. each model's gates with the branch's thresholds and their expected outcome (judged on the metrics
       recorded in this workspace; "known after apply" for a version still to be registered);
    4. the metrics of this workspace against the base workspace's state (main's).

The comment starts with a stable HTML marker (`<!-- mlspec-review project=NAME -->`): a bot finds its
earlier comment by it and edits that one instead of adding another. Sections are collapsible and each is
cut to a budget, so the comment stays under GitHub's 60,000 characters at any spec size.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlspec import __version__
from mlspec.console import Console
from mlspec.errors import MlspecError

LIMIT = 60_000
BUDGET = {"diff": 22_000, "plan": 22_000, "gates": 5_000, "metrics": 8_000}


def marker(project: str) -> str:
    return f"<!-- mlspec-review project={project} -->"


# --- gates ---------------------------------------------------------------------------------------------
def expected_gates(project, state, plan: dict) -> list[dict]:
    """Each gate of each model as the branch declares it, judged on the latest recorded version's metrics
    (or "known after apply" when the plan registers a new version)."""
    from mlspec.kinds.model import empty_registry, judge

    changes = {c["address"]: c for c in plan.get("resource_changes", [])}
    rows = []
    for name, m in sorted(project.spec.models.items()):
        address = f"model.{name}"
        reg = state.resources.get(address) or empty_registry()
        versions = reg.get("versions") or []
        latest = versions[-1] if versions else None
        ch = changes.get(address)
        pending = ch is not None and ch["actions"][0] != "no-op" and (
            ch.get("verdict") in ("register", "unknown") or latest is None or
            any(r.get("code") in ("model-version-new", "upstream-rerun") for r in ch.get("reasons", [])))
        if pending or latest is None:
            j = judge(m, reg, None, reg.get("next_version", 1))
            version = None
        else:
            j = judge(m, reg, latest.get("metrics") or {}, latest.get("version"))
            version = latest.get("version")
        recorded = {g.get("metric"): g for g in (latest or {}).get("gates") or []}
        for g in j.gates:
            was = recorded.get(g["metric"])
            rows.append({"model": address, "version": version, "metric": g["metric"], "gate": g["gate"],
                         "value": g["value"], "threshold": g["threshold"], "baseline": g["baseline"],
                         "outcome": "known after apply" if g["outcome"] == "unknown" else g["outcome"],
                         "recorded": None if was is None else {"gate": was.get("gate"), "outcome": was.get("outcome")}})
    return rows


# --- metrics --------------------------------------------------------------------------------------------
def metrics_diff(project, base_ws: str, state) -> dict:
    from mlspec.commands.records import metrics_of
    from mlspec.state import StateStore
    from mlspec.views.metrics import change

    base = StateStore(project.state_loc, base_ws).read(project.spec.project)
    cur, old = metrics_of(state.resources), metrics_of(base.resources)
    rows = []
    for addr in sorted(set(cur) | set(old)):
        for m in sorted(set(cur.get(addr, {})) | set(old.get(addr, {}))):
            b, c = old.get(addr, {}).get(m), cur.get(addr, {}).get(m)
            rows.append({"address": addr, "metric": m, "base": b, "current": c, "change": change(b, c)})
    return {"base": {"workspace": base_ws, "serial": base.serial if base.exists else None},
            "current": {"workspace": project.store.ws, "serial": state.serial if state.exists else None},
            "rows": rows}


# --- the data ----------------------------------------------------------------------------------------------
def build(args, console: Console) -> dict:
    from mlspec.commands.diff import spec_diff
    from mlspec.commands.plan import load_planfile, preflight, public_plan
    from mlspec.commands.workspace import read_meta
    from mlspec.project import Project

    project = Project.open(args.project_dir, args.file, args.overrides)
    ws = project.store.ws
    state = project.read_state()
    if args.plan:
        plan = load_planfile(args.plan)["plan"]
        plan_source = f"saved plan {Path(args.plan).name}"
    else:
        nodes = project.nodes()
        planned, state, _facts, nodes = project.plan(state, nodes=nodes)
        if not args.no_preflight:
            preflight(project, nodes, planned, console)
        plan = planned.to_dict()
        plan_source = "planned now"
    plan = public_plan(plan)
    base_ws = args.base_workspace or read_meta(project.state_loc, ws).get("from") or (
        project.spec.storage.workspace if project.spec.storage.workspace != ws else None)
    diff = spec_diff(args.project_dir, args.file, args.overrides, args.base, None)
    return {"marker": marker(project.spec.project), "mlspec_version": __version__, "project": project.spec.project,
            "workspace": ws, "diff": diff, "plan": plan, "plan_source": plan_source,
            "gates": expected_gates(project, state, plan),
            "metrics": metrics_diff(project, base_ws, state) if base_ws else None}


# --- views ------------------------------------------------------------------------------------------------
def _n(v) -> str:
    from mlspec.views.metrics import number

    return number(v)


def _cut(rows: list[str], budget: int, what: str, how: str) -> list[str]:
    out, used = [], 0
    for i, r in enumerate(rows):
        if used + len(r) + 1 > budget:
            out += ["", f"_…and {len(rows) - i} more {what}, cut to keep this comment under {LIMIT:,} characters; "
                        f"{how}._"]
            break
        out.append(r)
        used += len(r) + 1
    return out


def _plan_rows(plan: dict) -> list[str]:
    from mlspec.core.types import SYMBOL_OF
    from mlspec.render import _verdict_text

    rows = []
    for c in plan["resource_changes"]:
        if c["actions"][0] == "no-op":
            continue
        why = "; ".join(r["message"] for r in c["reasons"]).replace("|", "\\|")
        rows.append(f"| `{SYMBOL_OF[c['actions'][0]].strip() or '='}` | `{c['address']}` | {_verdict_text(c)} | {why} |")
    return rows


def gate_summary(gates: list[dict]) -> str:
    if not gates:
        return "no gates"
    counts: dict[str, int] = {}
    for g in gates:
        counts[g["outcome"]] = counts.get(g["outcome"], 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def metrics_summary(m: dict | None) -> str:
    if m is None:
        return "no base workspace"
    changed = [r for r in m["rows"] if r["base"] != r["current"]]
    return f"{len(changed)} changed" if m["rows"] else "none recorded"


def render_markdown(d: dict) -> str:
    from mlspec.commands.diff import render_markdown as diff_markdown
    from mlspec.commands.diff import summary_line as diff_summary
    from mlspec.render import summary_line as plan_summary

    plan, diff = d["plan"], d["diff"]
    dsum = diff_summary(diff).removeprefix("Spec diff: ")
    psum = plan_summary(plan).removeprefix("Plan: ")
    out = [d["marker"], f"## mlspec review: `{d['project']}` (workspace `{d['workspace']}`)", "",
           "| spec diff | plan | gates | metrics |", "|---|---|---|---|",
           f"| {dsum} | {psum} | {gate_summary(d['gates'])} | "
           f"{metrics_summary(d['metrics'])} |", ""]
    # 1. spec diff
    body = diff_markdown(diff, heading="#### Spec diff", limit=BUDGET["diff"]).splitlines()
    if not diff["has_changes"]:
        body += ["The branch does not change the composed spec."]
    out += [f"<details{' open' if diff['has_changes'] else ''}><summary><b>Spec diff</b> "
            f"({diff['base']['label']} → {diff['head']['label']}): {dsum}</summary>", ""] + body[4:] + \
        ["", "</details>", ""]
    # 2. plan
    rows = _plan_rows(plan)
    out += [f"<details{' open' if rows and len(rows) <= 50 else ''}><summary><b>Plan</b> ({d['plan_source']}, "
            f"workspace <code>{plan['workspace']}</code>): {psum}</summary>", ""]
    if rows:
        out += ["| | resource | verdict | why |", "|---|---|---|---|"]
        out += _cut(rows, BUDGET["plan"], "planned changes", f"run `mlspec -w {plan['workspace']} plan`")
    else:
        out.append("Nothing to run: every result is up to date (re-used from the state and the run-cache).")
    out += ["", "</details>", ""]
    # 3. gates
    out += [f"<details{' open' if d['gates'] else ''}><summary><b>Gates</b>: {gate_summary(d['gates'])}</summary>", ""]
    if d["gates"]:
        rows = []
        for g in d["gates"]:
            was = g["recorded"]
            before = "-" if was is None else f"{was['outcome']} (`{was['gate']}`)"
            version = "next version" if g["version"] is None else f"version {g['version']}"
            rows.append(f"| `{g['model']}` ({version}) | `{g['metric']}` | `{g['gate']}` | {_n(g['value'])} | "
                        f"{_n(g['threshold'])} | **{g['outcome']}** | {before} |")
        out += ["| model | metric | gate (this branch) | value | threshold | expected | recorded |",
                "|---|---|---|---:|---:|---|---|"]
        out += _cut(rows, BUDGET["gates"], "gates", "run `mlspec models show NAME`")
    else:
        out.append("No model declares gates.")
    out += ["", "</details>", ""]
    # 4. metrics
    m = d["metrics"]
    if m is None:
        out += ["<details><summary><b>Metrics</b>: no base workspace to compare with</summary>", "",
                "Pass `--base-workspace NAME`, or make this workspace with `mlspec workspace new NAME --from main`.",
                "", "</details>", ""]
    else:
        from mlspec.views.metrics import delta

        base = f"<code>{m['base']['workspace']}</code>" + (f" (state serial {m['base']['serial']})" if m['base']['serial']
                                                else " (no state yet)")
        out += [f"<details{' open' if any(r['base'] != r['current'] for r in m['rows']) else ''}><summary>"
                f"<b>Metrics</b> against {base}: {metrics_summary(m)}</summary>", ""]
        if m["rows"]:
            rows = [f"| `{r['address']}` | `{r['metric']}` | {_n(r['base'])} | {_n(r['current'])} | "
                    f"{delta(r['change'])} |" for r in sorted(m["rows"], key=lambda r: r["base"] == r["current"])]
            out += ["| resource | metric | base | this branch | change |", "|---|---|---:|---:|---:|"]
            out += _cut(rows, BUDGET["metrics"], "metrics", "run `mlspec metrics diff --base workspace:"
                        f"{m['base']['workspace']}`")
        else:
            out.append("No metrics recorded yet.")
        out += ["", "</details>", ""]
    out.append(f"<sub>mlspec {d['mlspec_version']} · `mlspec review` · this comment is updated in place on every "
               "push.</sub>")
    text = "\n".join(out) + "\n"
    if len(text) > LIMIT:  # the budgets above keep it well under; never post a comment GitHub refuses
        text = text[:LIMIT - 200] + "\n\n_…cut at GitHub's comment limit._\n"
    return text


def render_text(d: dict) -> str:
    from mlspec.commands.diff import render_text as diff_text
    from mlspec.render import render_text as plan_text

    lines = [diff_text(d["diff"]).rstrip(), "", plan_text(d["plan"]).rstrip(), "", "Gates:"]
    for g in d["gates"]:
        lines.append(f"  {g['model']} {g['metric']} {g['gate']}: {g['outcome']} (value {_n(g['value'])})")
    if not d["gates"]:
        lines.append("  none")
    m = d["metrics"]
    lines += ["", f"Metrics against workspace {m['base']['workspace']}:" if m else "Metrics: no base workspace"]
    for r in (m or {}).get("rows", []):
        lines.append(f"  {r['address']} {r['metric']}: {_n(r['base'])} -> {_n(r['current'])}")
    return "\n".join(lines) + "\n"


def run(args, console: Console) -> int:
    d = build(args, console)
    if args.format == "json":
        from mlspec.views.formats import to_json

        text = to_json(d) + "\n"
    elif args.format == "text":
        text = render_text(d)
    else:
        text = render_markdown(d)
    if args.out:
        from mlspec.storage import atomic_write_local

        try:
            atomic_write_local(Path(args.out), text.encode())
        except OSError as exc:
            raise MlspecError(f"cannot write {args.out}: {exc.strerror}") from None
    console.print(text, end="")
    return 0
