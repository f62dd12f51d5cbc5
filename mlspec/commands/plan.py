"""`mlspec plan` and `mlspec show`: what an apply would do, and why."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlspec import __version__
from mlspec.console import Console
from mlspec.errors import EXIT_CHANGES, MlspecError, did_you_mean
from mlspec.gcpause import outlive
from mlspec.project import Project
from mlspec.render import render_json, render_markdown, render_text
from mlspec.units import parse_duration

PLANFILE_FORMAT = 1


def check_addresses(project: Project, nodes, addrs, flag: str) -> None:
    from mlspec.plan import matches

    known = {n.address for n in nodes}
    bases = {a.split("[", 1)[0] for a in known}
    for a in addrs:
        if any(matches(k, a) for k in known):
            continue
        raise MlspecError(f"{flag} {a}: no such step or step instance{did_you_mean(a, sorted(known | bases))}",
                          hint="addresses look like step.train or step.train[C=0.1]; see `mlspec graph`")


def wait_for_unlock(project: Project, timeout: str, console: Console) -> None:
    holder = project.lock.info()
    if holder is None:
        return
    deadline = time.monotonic() + parse_duration(timeout) if timeout not in ("0", "0s") else 0
    while holder is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        holder = project.lock.info()
    if holder is not None:
        console.error(f"Warning: the state is locked by {holder.describe()}; this plan is against the state "
                      "as it is now, before that operation finishes.")


def preflight(project: Project, nodes, plan, console: Console, keep: dict | None = None) -> None:
    """The step check and the backends' checks; every error of both at once (exit 1), warnings to stderr."""
    from mlspec.preflight import active_steps, check_steps, run_preflight, step_calls

    instances = [n.item for n in nodes if n.kind == "step"]
    active = active_steps(plan)
    calls = step_calls(project, instances, plan, active)
    findings = check_steps(project, calls, keep)  # in an apply, in a local worker that stays for the steps
    for f in findings:
        if not f.error:
            console.error(f"Warning: {f.line()}")
    problems = [f.line() for f in findings if f.error]
    checked = frozenset(s for c in calls for s in c.steps)
    problems += run_preflight(project, instances, plan, keep, checked=checked, active=active)
    if problems:
        for b in (keep or {}).values():
            b.close()
        raise MlspecError("preflight failed: the plan cannot run as it stands\n" +
                          "\n".join(f"  - {p}" for p in problems))


def run(args, console: Console) -> int:
    # a large spec is validated in a child process while its graph is built (mlspec.load.Verdict)
    project = Project.open(args.project_dir, args.file, args.overrides, defer_validation=True)
    nodes = project.nodes_then_valid()
    wait_for_unlock(project, args.lock_timeout, console)
    check_addresses(project, nodes, args.target, "--target")
    check_addresses(project, nodes, args.replace, "--replace")
    from mlspec.policies import enforce

    state = project.read_state()
    enforce(project.spec, state)  # policies as code: a violation fails the plan (exit 1), one line each
    plan, state, facts, nodes = project.plan(state, targets=args.target, replace=args.replace, nodes=nodes)
    if not args.no_preflight:
        preflight(project, nodes, plan, console)
    data = plan.to_dict()
    # the graph (50,000 edges at 50,000 steps) only where it is shown or saved
    edges = project.graph_edges(nodes) if args.out or args.format == "markdown" else None
    if args.out:
        save_plan(Path(args.out), project, plan, state, edges)
    emit(data, args.format, console, verbose=args.verbose, edges=edges)
    if args.out:
        console.error(f"Saved the plan to {args.out}. Apply exactly this plan with: mlspec apply {args.out}")
    outlive(project, nodes, plan, state, facts, data)
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return 0


def public_plan(data: dict) -> dict:
    """The plan as printed: a state that does not exist yet has no lineage to show (keeps output stable)."""
    out = dict(data)
    if not out["state"]["exists"]:
        out["state"] = {"lineage": None, "serial": 0, "exists": False}
    return out


def emit(data: dict, fmt: str, console: Console, *, verbose: bool = False, edges=None) -> None:
    data = public_plan(data)
    if fmt == "json":
        console.print(render_json(data), end="")
    elif fmt == "markdown":
        console.print(render_markdown(data, edges or []), end="")
    else:
        console.print(render_text(data, verbose=verbose, style=console.style), end="")


def save_plan(path: Path, project: Project, plan, state, edges=()) -> None:
    from mlspec.sensitive import mask_overrides, scrub
    from mlspec.storage import atomic_write_local

    bundle = {
        "mlspec_planfile": PLANFILE_FORMAT,
        "mlspec_version": __version__,
        "created": time.time(),
        "spec_file": project.spec_file,
        # a secret given as an override is not written: `mlspec apply FILE` asks for it again
        "overrides": mask_overrides(project.overrides, project.spec.sensitive),
        "new_state": None if state.exists else {"lineage": state.lineage, "fingerprint_key": state.fingerprint_key},
        "plan": plan.to_dict(),
        "edges": [list(e) for e in edges],
    }
    atomic_write_local(path, json.dumps(scrub(bundle), indent=1, sort_keys=True).encode())


def load_planfile(path: str) -> dict:
    """A saved plan, checked for the shape apply and show rely on (one error naming the file, never a crash)."""
    from mlspec.state import check_fields

    def problem_of(bundle) -> str:  # a shape check per record type, to be replaced by the plan's JSON Schema
        problem = check_fields(bundle, {"overrides": list, "plan": dict})
        if problem:
            return problem
        if not all(isinstance(o, str) for o in bundle["overrides"]):
            return "its 'overrides' are not all strings"
        if not isinstance(bundle.get("spec_file"), (str, type(None))):
            return "its 'spec_file' is not a string"
        ns = bundle.get("new_state")
        if ns is not None and check_fields(ns, {"lineage": str, "fingerprint_key": str}):
            return f"its 'new_state' is unusable: {check_fields(ns, {'lineage': str, 'fingerprint_key': str})}"
        if not isinstance(bundle.get("edges", []), list):
            return "its 'edges' is not a list"
        plan = bundle["plan"]
        problem = check_fields(plan, {"project": str, "workspace": str, "state": dict, "spec_digest": str,
                                      "backend": str, "targets": list, "replace": list, "summary": dict,
                                      "has_changes": bool, "resource_changes": list, "facts": dict})
        if problem:
            return f"in 'plan': {problem}"
        st = plan["state"]
        problem = check_fields(st, {"exists": bool, "serial": int})
        if problem or not isinstance(st.get("lineage"), (str, type(None))):
            return f"in 'plan.state': {problem if problem else 'its lineage is not a string'}"
        problem = check_fields(plan["summary"], dict.fromkeys(("run", "unknown", "restore", "read", "destroy",
                                                               "unchanged"), int))
        if problem:
            return f"in 'plan.summary': {problem}"
        for ch in plan["resource_changes"]:
            problem = check_fields(ch, {"address": str, "kind": str, "actions": list, "reasons": list})
            if problem or not ch["actions"] or any(check_fields(r, {"message": str}) for r in ch["reasons"]):
                return f"a resource change is unusable: {problem if problem else 'its actions or reasons'}"
        return ""

    hint = "make a new plan: mlspec plan -o FILE"
    try:
        bundle = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlspecError(f"no plan file at {path}") from None
    except IsADirectoryError:
        raise MlspecError(f"{path} is a directory, not a saved plan", hint=hint) from None
    except ValueError:
        raise MlspecError(f"{path} is not a saved plan (not JSON)", hint="save one with `mlspec plan -o FILE`") from None
    if not isinstance(bundle, dict) or bundle.get("mlspec_planfile") != PLANFILE_FORMAT:
        raise MlspecError(f"{path} is not a saved plan of this mlspec version",
                          hint="save one with `mlspec plan -o FILE`")
    problem = problem_of(bundle)
    if problem:
        raise MlspecError(f"{path} is a damaged saved plan: {problem}", hint=hint)
    return bundle


def run_show(args, console: Console) -> int:
    bundle = load_planfile(args.planfile)
    emit(bundle["plan"], args.format, console, verbose=args.verbose, edges=bundle.get("edges"))
    return 0
