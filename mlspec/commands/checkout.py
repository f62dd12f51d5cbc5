"""`mlspec checkout [ADDR ...]`: put the recorded content of every output that declares a `path:` back in
the project (after a fresh clone, a `git checkout`, or a hand edit), like `dvc checkout`.

It reads the state and the artifact store and writes only the declared paths (and the managed block of
.gitignore): no step runs and the state does not change. What it puts back is what the state records for
the current workspace; `mlspec plan` says whether that is still up to date with the spec.
"""

from __future__ import annotations

from mlspec.console import Console
from mlspec.errors import EXIT_ERROR, MlspecError
from mlspec.project import Project
from mlspec.views.formats import emit, text_table


def _wanted(targets, address: str, output: str) -> bool:
    if not targets:
        return True
    from mlspec.addresses import parse_address

    for t in targets:
        a = parse_address(t)
        if a.resource == address and (not a.output or a.output == output):
            return True
        if not a.selector and address.split("[", 1)[0] == f"step.{a.name}" and a.kind == "step" \
                and (not a.output or a.output == output):
            return True
    return False


def run(args, console: Console) -> int:
    from mlspec.addresses import parse_address
    from mlspec.materialise import declared_paths, materialise, sync_gitignore

    project = Project.open(args.project_dir, args.file, args.overrides)
    spec = project.spec
    for t in args.targets:
        try:
            a = parse_address(t)
        except ValueError as exc:
            raise MlspecError(str(exc)) from None
        if a.kind != "step" or a.name not in spec.steps:
            raise MlspecError(f"'{t}' is not a step of this spec", hint="name a step or output: step.NAME[.OUTPUT]")
    state = project.read_state()
    rows, problems = [], 0
    for inst in project.instances():
        step = inst.step
        for name, o in sorted(step.output_opts.items()):
            if not o.path or not _wanted(args.targets, inst.address, name):
                continue
            rec = state.resources.get(inst.address) or {}
            out = (rec.get("outputs") or {}).get(name) if rec.get("status") == "succeeded" else None
            row = {"address": f"{inst.address}.{name}", "path": o.path}
            if not isinstance(out, dict):
                row["result"] = "not applied yet"
            else:
                try:
                    wrote = materialise(spec.project_dir, o.path, out, project.artifacts, project.cache,
                                        spec.storage.link, produced_by=f"{inst.address}.{name}")
                    row["result"] = "restored" if wrote else "up to date"
                except (OSError, MlspecError) as exc:
                    row["result"] = f"failed: {exc}"
                    problems += 1
            rows.append(row)
    project.cache.save()
    sync_gitignore(spec.project_dir, [p for _s, _o, p in declared_paths(spec)])
    data = {"outputs": rows, "restored": sum(r["result"] == "restored" for r in rows), "problems": problems}

    def text(d) -> str:
        if not d["outputs"]:
            return "No outputs declare a `path:`: nothing to check out."
        table = text_table(["output", "path", "result"], [[r["address"], r["path"], r["result"]] for r in d["outputs"]])
        return f"{table}\n\n{d['restored']} restored, {len(d['outputs']) - d['restored'] - d['problems']} already " \
               f"in place or not applied, {d['problems']} failed."

    emit(console, getattr(args, "format", "text"), data, text=text)
    if problems:
        console.error("Some outputs could not be put back: `mlspec artifacts verify` checks the store, and "
                      "`mlspec apply` makes missing outputs again.")
        return EXIT_ERROR
    return 0
