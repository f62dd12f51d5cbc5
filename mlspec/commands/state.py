"""`mlspec state list|show|rm|pull|push|restore|unlock|history`: inspect and repair the recorded state."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from mlspec.console import Console
from mlspec.errors import MlspecError, StateError, did_you_mean
from mlspec.project import Project
from mlspec.runs import RunStore
from mlspec.state import State, json_safe, read_resources, state_doc_problem


def _project(args) -> Project:
    return Project.open(args.project_dir, args.file, args.overrides)


def _short(h) -> str:
    return (h or "-").split(":", 1)[-1][:12]


def run(args, console: Console) -> int:
    sub = args.state_command
    if not sub:
        raise MlspecError("state needs a subcommand: list, show, rm, pull, push, restore, unlock, history")
    project = _project(args)
    return globals()[f"_{sub}"](args, console, project)


def _list(args, console, project: Project) -> int:
    st = project.read_state()
    if args.format == "json":
        console.print(json.dumps({"lineage": st.lineage, "serial": st.serial, "exists": st.exists,
                                  "resources": sorted(st.resources)}, indent=2))
        return 0
    if not st.exists and not st.resources:
        console.print("No state yet: nothing has been applied in this workspace.")
        return 0
    if args.format == "markdown":
        from mlspec.views.formats import markdown_table

        rows = [[f"`{a}`", r.get("kind", ""), r.get("verdict", "") if r.get("kind") == "step" else "",
                 _short(r.get("fingerprint") or r.get("hash")), r.get("run_id", "")]
                for a, r in sorted(st.resources.items())]
        console.print(markdown_table(["resource", "kind", "last", "fingerprint", "run"], rows))
        console.print(f"\n{len(st.resources)} resources; state serial {st.serial}, lineage `{st.lineage}`.")
        return 0
    for addr in sorted(st.resources):
        rec = st.resources[addr]
        if rec.get("kind") == "dataset":
            console.print(f"{addr:<40} dataset  {_short(rec.get('hash'))}")
        elif rec.get("kind") == "model":
            aliases = ", ".join(f"{a}={v}" for a, v in sorted((rec.get("aliases") or {}).items()))
            console.print(f"{addr:<40} model    {len(rec.get('versions') or [])} version(s)"
                          + (f", {aliases}" if aliases else ""))
        else:
            console.print(f"{addr:<40} {rec.get('verdict', 'ran'):<8} {_short(rec.get('fingerprint'))}  "
                          f"run {rec.get('run_id', '-')}")
    console.print(f"\n{len(st.resources)} resources; state serial {st.serial}, lineage {st.lineage}.")
    return 0


def _get(st: State, addr: str) -> dict:
    if addr not in st.resources:
        raise MlspecError(f"no resource {addr} in the state{did_you_mean(addr, st.resources)}",
                          hint="list them with `mlspec state list`")
    return st.resources[addr]


def _show(args, console, project: Project) -> int:
    rec = _get(project.read_state(), args.address)
    if args.format == "json":
        console.print(json.dumps(json_safe(rec), indent=2, sort_keys=True))
        return 0
    console.print(f"# {args.address}")
    for key in ("kind", "status", "verdict", "fingerprint", "run_id", "duration", "hash", "size", "uri"):
        if key in rec:
            console.print(f"{key:<12} = {rec[key]}")
    facts = rec.get("facts") or {}
    for key in ("params", "inputs", "code", "deps", "dep_keys"):
        for k, v in sorted((facts.get(key) or {}).items()):
            console.print(f"{key}.{k} = {json.dumps(v)}")
    for name, out in sorted((rec.get("outputs") or {}).items()):
        console.print(f"outputs.{name} = {out.get('hash')} ({out.get('size')} bytes, {out.get('format')})")
    for name, v in sorted((rec.get("metrics") or {}).items()):
        console.print(f"metrics.{name} = {v}")  # a non-finite metric prints as nan, inf or -inf
    return 0


@contextmanager
def _locked(project: Project, op: str):
    """Hold the state lock for a state command; released on every exit path."""
    project.lock.acquire(op)
    try:
        yield
    finally:
        project.lock.release()


def _rm(args, console, project: Project) -> int:
    with _locked(project, "state rm"):
        st = project.read_state()
        for addr in args.address:
            _get(st, addr)
        for addr in args.address:
            st.resources.pop(addr)
        st = project.store.write(st)
    console.print(f"Removed {len(args.address)} resource(s) from the state (serial {st.serial}); their artifacts "
                  "stay in the store. The next plan treats them as new.")
    return 0


def _pull(args, console, project: Project) -> int:
    st = project.read_state()
    if not st.exists and not st.resources:
        raise StateError("no state yet: nothing has been applied in this workspace")
    console.print(json.dumps(st.to_doc(), indent=1))
    return 0


def _push(args, console, project: Project) -> int:
    raw = sys.stdin.read() if args.path == "-" else open(args.path, encoding="utf-8").read()
    try:
        doc = json.loads(raw)
    except ValueError:
        raise StateError(f"{args.path} is not a state document (not JSON)") from None
    problem = state_doc_problem(doc)
    if problem:
        raise StateError(f"{args.path} is not a state document: {problem}")
    new = State(lineage=doc["lineage"], serial=doc["serial"], workspace=doc.get("workspace", "default"),
                project=doc.get("project", ""), fingerprint_key=doc.get("fingerprint_key", ""),
                resources=read_resources(doc["resources"]))
    with _locked(project, "state push"):
        try:
            cur = project.read_state()
        except StateError:
            if not args.force:
                raise
            cur = State.new(project.store.ws, project.spec.project)  # replacing a corrupt state: --force
        if cur.exists and not args.force:
            if new.lineage != cur.lineage:
                raise StateError(f"the pushed state has lineage {new.lineage}, the current one {cur.lineage}",
                                 hint="pass --force to replace a state of another lineage")
            if new.serial < cur.serial:
                raise StateError(f"the pushed state has serial {new.serial}, older than the current {cur.serial}",
                                 hint="pull, edit and push the current state, or pass --force")
        new.serial = cur.serial if cur.exists else 0
        st = project.store.write(new)
    console.print(f"Pushed the state: serial {st.serial}, {len(st.resources)} resources.")
    return 0


def _restore(args, console, project: Project) -> int:
    """Write a kept serial back as a NEW serial, above every serial this workspace has had (the replaced document
    and every apply recorded in runs/ included): a plan saved before the restore is refused as stale after it."""
    with _locked(project, "state restore"):
        old = project.store.read_serial(args.serial)
        st = project.store.write(old, floor=_serials_in_runs(project, old.lineage))
    console.print(f"Restored serial {args.serial} as serial {st.serial} ({len(st.resources)} resources).")
    return 0


def _serials_in_runs(project: Project, lineage: str) -> int:
    """The highest state serial the run records of this workspace and lineage name (0 when none). A damaged
    current document may no longer say its serial; the apply that wrote it recorded it."""
    runs = RunStore(project.runs_loc)
    top = 0
    for rid in runs.ids():
        rec = runs.get(rid)
        if rec is None or (rec.get("workspace") or "default") != project.store.ws:
            continue
        st = rec.get("state") or {}
        if st.get("lineage") != lineage:
            continue
        for key in ("serial_before", "serial_after"):
            if isinstance(st.get(key), int):
                top = max(top, st[key])
    return top


def _history(args, console, project: Project) -> int:
    """The kept serials; works while the current document is corrupt (that is when it is needed)."""
    serials = project.store.history_serials()
    try:
        st, problem = project.read_state(), ""
    except StateError as exc:
        st, problem = None, exc.message
    current = st.serial if st is not None and st.exists else None
    data = {"kept": serials, "current": current, "current_problem": problem or None}
    if args.format != "text":
        from mlspec.views.formats import emit, markdown_table

        rows = [[s, ""] for s in serials] + ([[current, "current"]] if current is not None else []) + \
            ([["-", f"current: unreadable ({problem})"]] if problem else [])
        emit(console, args.format, data, markdown=lambda d: markdown_table(["serial", ""], rows))
        return 0
    for s in serials:
        console.print(f"serial {s}")
    if problem:
        console.print(f"current: unreadable ({problem})")
        if serials:
            console.print(f"Restore a kept serial with: mlspec state restore {serials[-1]}")
        return 0
    if current is not None:
        console.print(f"serial {current} (current)")
    return 0


def _unlock(args, console, project: Project) -> int:
    holder = project.lock.info()
    if holder is None:
        raise StateError("the state is not locked")
    if not args.force:
        if not sys.stdin.isatty():
            raise MlspecError("breaking a lock needs confirmation, and there is no terminal to ask on",
                              hint=f"pass --force: mlspec state unlock {args.lock_id} --force")
        console.print(f"The lock is held by {holder.describe()}.\nBreaking it while that operation runs can "
                      "corrupt the state. Break it? [y/N] ", end="")
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            console.print("Left the lock in place.")
            return 1
    info = project.lock.force_unlock(args.lock_id)
    console.print(f"Broke the lock {info.id} held by {info.who} ({info.operation}).")
    return 0
