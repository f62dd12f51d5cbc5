"""`mlspec data check [ADDR]` and `mlspec data infer ADDR`: data contracts on their own, outside an apply.

``check`` reads each dataset (and recorded step output) that declares a contract and prints one summarised
report per table; exit 1 when any contract is violated. ``infer`` drafts a contract from the data for a
person to review and paste into the spec (like TFX's SchemaGen).
"""

from __future__ import annotations

import json

from mlspec.console import Console
from mlspec.errors import MlspecError


def run(args, console: Console) -> int:
    from mlspec.project import Project

    if args.data_command == "check":  # `data check ADDR... key=value`: words with '=' are overrides
        words = list(args.addresses)
        args.addresses = [w for w in words if "=" not in w]
        args.overrides = list(args.overrides or []) + [w for w in words if "=" in w]
    project = Project.open(args.project_dir, args.file, args.overrides)
    if args.data_command == "infer":
        return infer(project, console, args.address, args.out)
    if args.data_command == "check":
        return check(project, console, args.addresses, fmt=args.format, use_cache=not args.no_cache)
    raise MlspecError("name a subcommand: mlspec data check [ADDR] | mlspec data infer ADDR")


def _targets(spec, addresses) -> list:
    """[(address, kind, item)] of what declares a contract: datasets, then step outputs."""
    out = []
    for ds in sorted(spec.datasets.values(), key=lambda d: d.name):
        if ds.contract:
            out.append((ds.address, "dataset", ds))
    for step in sorted(spec.steps.values(), key=lambda s: s.name):
        for name, o in sorted(step.output_opts.items()):
            if o.contract:
                out.append((f"step.{step.name}.{name}", "output", (step, name, o.contract)))
    if not addresses:
        return out
    known = {a: t for a, *t in out}
    chosen = []
    for a in addresses:
        if a not in known:
            from mlspec.errors import did_you_mean

            if a in {d.address for d in spec.datasets.values()} or a.count(".") == 2:
                raise MlspecError(f"{a} declares no contract",
                                  hint="add `contract:` to it in the spec; `mlspec data infer ADDR` drafts one")
            raise MlspecError(f"no dataset or step output {a} in the spec{did_you_mean(a, known)}",
                              hint="name a dataset.NAME or step.NAME.OUTPUT that declares a contract")
        chosen.append((a, *known[a]))
    return chosen


def _recorded_outputs(project, step, name: str) -> list:
    """[(instance address, output record)] of a step's recorded output (one per matrix instance)."""
    st = project.read_state()
    base = f"step.{step.name}"
    found = []
    for addr, rec in sorted(st.resources.items()):
        if addr == base or addr.startswith(base + "["):
            out = (rec.get("outputs") or {}).get(name) if isinstance(rec, dict) else None
            if isinstance(out, dict):
                found.append((addr, out))
    return found


def check(project, console: Console, addresses, *, fmt: str = "text", use_cache: bool = True) -> int:
    from mlspec.contracts import ContractReport, Violation, check_dataset, check_output
    from mlspec.fingerprint import dataset_fact

    spec = project.spec
    targets = _targets(spec, addresses)
    if not targets:
        raise MlspecError("no dataset or step output in the spec declares a contract",
                          hint="add `contract:` to a dataset (docs/spec.md#contract); "
                               "`mlspec data infer dataset.NAME` drafts one")
    reports = []
    for address, kind, item in targets:
        if kind == "dataset":
            try:
                h = dataset_fact(spec, item, project.cache)["hash"]
            except MlspecError as exc:
                reports.append((ContractReport(address, item.uri, None, [Violation("", "readable", 0, exc.message)]),
                                False))
                continue
            reports.append(check_dataset(spec, item, h, use_cache=use_cache))
        else:
            step, name, contract = item
            outs = _recorded_outputs(project, step, name)
            if not outs:
                reports.append((ContractReport(address, "", None, [Violation(
                    "", "recorded", 0, f"step.{step.name} has not produced {name} yet: run `mlspec apply` first")]),
                    False))
            for inst, out in outs:
                reports.append(check_output(project, inst, name, out, contract, use_cache=use_cache))
    project.cache.save()
    bad = [r for r, _c in reports if not r.ok]
    if fmt == "json":
        console.print(json.dumps({"ok": not bad, "reports": [dict(r.to_dict(), cached=c) for r, c in reports]},
                                 indent=2, sort_keys=True))
        return 1 if bad else 0
    for r, cached in reports:
        text = r.text()
        if r.ok:
            console.print(console.style("ok", "green") + "      " + text.split(": ", 1)[1].join(
                [f"{r.source}  ", ""]) + (" (cached)" if cached else ""))
        else:
            head, _, rest = text.partition("\n")
            console.print(console.style("failed", "red", "bold") + f"  {head}" + (" (cached)" if cached else ""))
            console.print(rest)
    if bad:
        raise MlspecError(f"{len(bad)} of {len(reports)} contract{'s' if len(reports) != 1 else ''} violated",
                          hint="fix the data, or the contract in the spec if it is wrong")
    console.print(f"All {len(reports)} contract{'s' if len(reports) != 1 else ''} hold.")
    return 0


def infer(project, console: Console, address: str, out: str | None) -> int:
    import yaml

    from mlspec.addresses import parse_address
    from mlspec.contracts import ReadProblem, infer as draft, read_table

    spec = project.spec
    try:
        a = parse_address(address)
    except ValueError as exc:
        raise MlspecError(str(exc)) from None
    if a.kind == "dataset":
        ds = spec.datasets.get(a.name)
        if ds is None:
            raise MlspecError(f"no dataset '{a.name}' in the spec", hint="see `mlspec graph` for the datasets")
        uri = ds.uri
        path = uri if "://" in uri or uri.startswith("/") else str(spec.project_dir / uri)
        fmt, options, shown = ds.format, ds.options, uri
        where = f"datasets.{a.name}.contract"
    elif a.kind == "step" and a.output:
        step = spec.steps.get(a.name)
        found = _recorded_outputs(project, step, a.output) if step else []
        if not found:
            raise MlspecError(f"{address} has no recorded output yet", hint="run `mlspec apply` first")
        rec = found[0][1]
        path = str(project.artifacts.local_path(rec["hash"], produced_by=address))
        fmt, options, shown = rec.get("format") or "auto", None, f"{address} ({rec['hash'][:16]})"
        where = f"steps.{a.name}.outputs.{a.output}.contract"
    else:
        raise MlspecError(f"{address}: name a dataset.NAME or a step.NAME.OUTPUT")
    try:
        df = read_table(path, fmt, options)
    except ReadProblem as p:
        raise MlspecError(f"{address}: cannot draft a contract: {p.check}: {p.detail}") from None
    contract = draft(df)
    text = (f"# A draft contract for {address}, inferred from {shown} ({len(df)} rows).\n"
            f"# Review it (ranges and allowed values are what this data holds), then put it under {where}.\n"
            + yaml.safe_dump({"contract": contract}, sort_keys=False, default_flow_style=None, width=110))
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
        console.print(f"Wrote a draft contract for {address} to {out}")
    else:
        console.print(text, end="")
    return 0
