"""`mlspec artifacts get | verify`: copy a step output out of the store (checked), and check the whole store.

`verify` is to the artifact store what `git fsck` is to a repository: it reads every object the state
references (and every run-cache entry) and reports what is missing or corrupt, naming the step output
that produced it. `--repair` moves corrupt objects to quarantine and drops run-cache entries that point
at missing or corrupt objects, so the next `mlspec plan` shows the producing steps re-running.
"""

from __future__ import annotations

import json

from mlspec.addresses import parse_address
from mlspec.artifacts import runcache_entry_ok
from mlspec.console import Console
from mlspec.commands.records import recorded
from mlspec.errors import EXIT_ERROR, MlspecError
from mlspec.project import Project


def run(args, console: Console) -> int:
    project = Project.open(args.project_dir, args.file, args.overrides)
    if args.artifacts_command == "verify":
        return verify(project, console, repair=args.repair, fmt=getattr(args, "format", "text"))
    return get(project, console, args.address, args.dest)


def get(project: Project, console: Console, address: str, dest: str) -> int:
    try:
        a = parse_address(address)
    except ValueError as exc:
        raise MlspecError(str(exc)) from None
    outs = recorded(project, a.resource).get("outputs") or {}
    if not a.output or a.output not in outs:
        raise MlspecError(f"{address}: name an output: {', '.join(f'{a.resource}.{o}' for o in sorted(outs))}")
    out = outs[a.output]
    try:
        if out.get("format") == "dir":
            written = project.artifacts.get_tree(out["hash"], dest, produced_by=f"{a.resource}.{a.output}")
        else:
            written = project.artifacts.get(out["hash"], dest, produced_by=f"{a.resource}.{a.output}")
    except FileNotFoundError:
        raise MlspecError(f"{address}: its object {out['hash']} is missing from the artifact store "
                          f"{project.artifacts.url}",
                          hint=f"`mlspec apply` re-runs {a.resource} to make it again") from None
    console.print(f"Wrote {address} ({written} bytes, {out.get('format')}, {out['hash']}) to {dest}")
    return 0


def verify(project: Project, console: Console, *, repair: bool, fmt: str = "text") -> int:
    store = project.artifacts
    st = project.read_state()
    refs: dict[str, list] = {}  # object hash -> [(address.output, size)]
    for addr, rec in sorted(st.resources.items()):
        if not isinstance(rec, dict):
            continue
        for name, out in sorted((rec.get("outputs") or {}).items()):
            if isinstance(out, dict) and isinstance(out.get("hash"), str) and out.get("format") == "dir":
                refs.setdefault(out["hash"], []).append((f"{addr}.{name} (directory manifest)", None))
                try:  # each file of a directory output is an object of its own
                    for rel, h, size in project.artifacts.read_tree(out["hash"]):
                        refs.setdefault(h, []).append((f"{addr}.{name}/{rel}", size))
                except (MlspecError, FileNotFoundError):
                    pass  # the manifest itself is reported below
            elif isinstance(out, dict) and isinstance(out.get("hash"), str):
                refs.setdefault(out["hash"], []).append((f"{addr}.{name}", out.get("size")))
        if rec.get("kind") == "step" and isinstance(rec.get("log"), str):  # a step's log is a stored object
            refs.setdefault(rec["log"], []).append((f"{addr} (log)", None))
    problems = []
    checked_bytes = 0
    for digest, users in sorted(refs.items()):
        size = next((s for _u, s in users if s is not None), None)
        problem = store.verify(digest, size)
        if not problem:
            checked_bytes += size or 0
            continue
        entry = {"object": digest, "problem": problem, "used_by": [u for u, _s in users]}
        if repair and problem != "missing":
            entry["quarantined_to"] = store.quarantine(digest)
        problems.append(entry)
    # run-cache entries: checksum, shape, and that their objects exist
    bad_entries = []
    for name in store.loc.list("runcache"):
        if not name.endswith(".json"):
            continue
        raw = store.loc.read_bytes(f"runcache/{name}")
        fp = "xxh128:" + name[:-5]
        try:
            entry = json.loads(raw) if raw is not None else None
        except ValueError:
            entry = None
        why = ""
        if not runcache_entry_ok(entry, fp):
            why = "fails its checksum or is malformed"
        else:
            for o in entry["outputs"].values():
                p = store.output_problem(o, deep=False)
                if p or o["hash"] in {x["object"] for x in problems}:
                    why = f"points at object {o['hash']} that is {p or 'corrupt'}"
                    break
        if why:
            bad_entries.append({"entry": f"runcache/{name}", "problem": why})
            if repair:
                store.loc.delete(f"runcache/{name}")
    result = {"objects": len(refs), "bytes_checked": checked_bytes, "problems": problems,
              "runcache_problems": bad_entries, "repaired": repair}
    if fmt == "json":
        console.print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for p in problems:
            where = f"; quarantined to {p['quarantined_to']}" if p.get("quarantined_to") else ""
            console.print(f"  {console.style('bad', 'red')}  {p['object']}  {p['problem']}  "
                          f"(output of {', '.join(p['used_by'])}){where}")
        for e in bad_entries:
            console.print(f"  {console.style('bad', 'red')}  {e['entry']}  {e['problem']}"
                          + ("; removed" if repair else ""))
        n = len(problems) + len(bad_entries)
        if not n:
            console.print(f"Verified {len(refs)} objects ({checked_bytes} bytes) and the run-cache: all intact.")
        elif repair:
            console.print(f"\n{n} problem(s) found and set aside. Run `mlspec plan` to see the steps that will "
                          "re-run to make them again, then `mlspec apply`.")
        else:
            console.print(f"\n{n} problem(s) found. `mlspec artifacts verify --repair` quarantines corrupt objects "
                          "and drops run-cache entries that point at them, so the next apply makes them again.")
    return EXIT_ERROR if (problems or bad_entries) and not repair else 0

