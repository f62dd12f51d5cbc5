"""`mlspec workspace list | new NAME [--from WS] | delete NAME`: workspaces of one state store.

A workspace is one state document (with its history, journal and lock) under `storage.state`; all of a
store's workspaces share the artifact store and its run-cache. A pull-request workspace made with
`--from main` starts as a copy of main's current state (the same fingerprint key, so keyed fingerprints of
secret params match): its plan shows only what the branch changes, and its apply re-uses every result main
computed. Records of deployments are not copied: a deployment is served by the workspace that applied it.

Each workspace made by `new` has a small `<ws>.workspace.json` beside its state saying where it came from;
`review` compares metrics with that workspace by default.
"""

from __future__ import annotations

import json
import re
import time

from mlspec.console import Console
from mlspec.errors import MlspecError, did_you_mean
from mlspec.project import Project
from mlspec.state import State, StateStore
from mlspec.storage import Location

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SUFFIXES = (".state.json", ".workspace.json", ".journal", ".history", ".lock")


def meta_name(ws: str) -> str:
    return f"{ws}.workspace.json"


def read_meta(loc: Location, ws: str) -> dict:
    raw = loc.read_bytes(meta_name(ws))
    if raw is None:
        return {}
    try:
        d = json.loads(raw)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def names(loc: Location) -> list[str]:
    """The workspaces with anything recorded under the store (a document, a journal, history or a marker)."""
    found = set()
    for n in loc.list():
        for suf in _SUFFIXES:
            if n.endswith(suf) and NAME.match(n[: -len(suf)]):
                found.add(n[: -len(suf)])
    return sorted(found)


def exists(loc: Location, ws: str) -> bool:
    return any(loc.exists(f"{ws}{suf}") for suf in (".state.json", ".workspace.json")) or \
        bool(loc.list(f"{ws}.journal"))


def deployments(st: State) -> list[str]:
    return sorted(a for a in st.resources if a.startswith("deployment."))


def check_name(name: str, what: str = "workspace name") -> None:
    if not NAME.match(name):
        raise MlspecError(f"'{name}' is not a valid {what}",
                          hint="letters, digits, '_' and '-', starting with a letter (e.g. pr-42)")


def create(project: Project, name: str, source: str | None, console: Console | None = None) -> State:
    """Make workspace ``name`` (a copy of ``source``'s current state when given), under its own lock."""
    from mlspec.lock import StateLock
    from mlspec.runs import who

    check_name(name)
    loc = project.state_loc
    if source is not None:
        check_name(source, "workspace name (--from)")
        if source == name:
            raise MlspecError(f"--from {source}: a workspace cannot start from itself")
        src = StateStore(loc, source).read(project.spec.project)
        if not src.exists and not src.resources:
            raise MlspecError(f"--from {source}: workspace '{source}' has no state{did_you_mean(source, names(loc))}",
                              hint="apply there first, or create the workspace empty (without --from)")
    lock = StateLock(loc, name, project.lock.lease)
    lock.acquire("workspace new")
    try:
        if exists(loc, name):
            raise MlspecError(f"workspace '{name}' exists already",
                              hint=f"use it with `mlspec -w {name} ...`, or delete it first: "
                                   f"mlspec workspace delete {name}")
        meta = {"name": name, "created": time.time(), "by": "{user}@{host}".format(**who())}
        st = State.new(name, project.spec.project)
        if source is not None:
            st.fingerprint_key = src.fingerprint_key  # keyed fingerprints (secret params) must match main's
            st.resources = {a: r for a, r in src.resources.items() if not a.startswith("deployment.")}
            meta.update({"from": source, "from_serial": src.serial, "from_lineage": src.lineage})
            st = StateStore(loc, name).write(st)
        loc.write_bytes(meta_name(name), json.dumps(meta, indent=1, sort_keys=True).encode())
        return st
    finally:
        lock.release()


def delete(project: Project, name: str) -> State:
    """Delete workspace ``name``'s state, history, journal and marker; refuses one that serves a deployment."""
    from mlspec.lock import StateLock

    check_name(name)
    loc = project.state_loc
    if not exists(loc, name):
        raise MlspecError(f"no workspace '{name}'{did_you_mean(name, names(loc))}",
                          hint="list them with `mlspec workspace list`")
    lock = StateLock(loc, name, project.lock.lease)
    lock.acquire("workspace delete")
    try:
        store = StateStore(loc, name)
        st = store.read(project.spec.project)
        serving = deployments(st)
        if serving:
            raise MlspecError(f"workspace '{name}' serves {len(serving)} deployment(s): {', '.join(serving)}; "
                              "deleting its state would orphan them",
                              hint=f"remove them from the spec and apply (mlspec -w {name} apply) to take them "
                                   f"down first, then delete the workspace")
        for sub in (store.journal, store.history):
            for n in loc.list(sub):
                loc.delete(f"{sub}/{n}")
            if loc.local:
                import os

                try:
                    os.rmdir(loc.join(sub))
                except OSError:
                    pass
        loc.delete(store.doc_name)
        loc.delete(meta_name(name))
        return st
    finally:
        lock.release()


def listing(project: Project) -> list[dict]:
    loc = project.state_loc
    current = project.store.ws
    rows = []
    for ws in sorted(set(names(loc)) | {current}):
        st = StateStore(loc, ws).read(project.spec.project)
        meta = read_meta(loc, ws)
        rows.append({"name": ws, "current": ws == current, "exists": st.exists or bool(st.resources),
                     "serial": st.serial if st.exists else None, "resources": len(st.resources),
                     "deployments": deployments(st), "from": meta.get("from"),
                     "locked": loc.exists(f"{ws}.lock")})
    return rows


def run(args, console: Console) -> int:
    project = Project.open(args.project_dir, args.file, getattr(args, "overrides", None) or [])
    sub = args.workspace_command
    if sub == "list":
        rows = listing(project)
        if args.format == "json":
            console.print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            state = f"serial {r['serial']}, {r['resources']} resources" if r["exists"] else "no state yet"
            extra = "".join([f", from {r['from']}" if r["from"] else "",
                             f", serves {', '.join(r['deployments'])}" if r["deployments"] else "",
                             ", locked" if r["locked"] else ""])
            console.print(f"{'*' if r['current'] else ' '} {r['name']:<{w}}  {state}{extra}")
        return 0
    if sub == "new":
        if args.exist_ok and exists(project.state_loc, args.name):
            console.print(f"Workspace '{args.name}' exists already; left as it is.")
            return 0
        st = create(project, args.name, args.from_ws, console)
        if args.from_ws:
            console.print(f"Created workspace '{args.name}' from '{args.from_ws}' (state serial {st.serial}, "
                          f"{len(st.resources)} resources). Use it with: mlspec -w {args.name} plan")
        else:
            console.print(f"Created workspace '{args.name}' (empty). Use it with: mlspec -w {args.name} plan")
        return 0
    if sub == "delete":
        if args.missing_ok and not exists(project.state_loc, args.name):
            console.print(f"No workspace '{args.name}'; nothing to delete.")
            return 0
        st = delete(project, args.name)
        console.print(f"Deleted workspace '{args.name}' ({len(st.resources)} resources forgotten; their artifacts "
                      "and run records stay in the store).")
        return 0
    raise MlspecError("workspace needs a subcommand: list, new, delete")
