"""`mlspec plots show|diff`: the outputs steps declare under `plots:`, as recorded in a state (and a base).

    mlspec plots show [ADDR...] [-o FILE] [--format text|json|markdown]
    mlspec plots diff [ADDR...] [--base BASE] [-o FILE] [--format text|json|markdown]

`text` writes one self-contained HTML page (default plots.html) and says so; `json` prints the plots as data
(each chart's Vega-Lite spec) and `markdown` a summary for a pull request; those two write the page only
with `-o FILE`. `diff` overlays the base's series on the current ones (images side by side); BASE takes the
forms of `metrics diff --base` (mlspec.commands.bases).
"""

from __future__ import annotations

import os
import re

from mlspec.addresses import parse_address
from mlspec.console import Console
from mlspec.errors import MlspecError, did_you_mean
from mlspec.project import Project

DEFAULT_PAGE = "plots.html"


def _targets(words: list[str]):
    out = []
    for w in words:
        try:
            a = parse_address(w)
        except ValueError as exc:
            raise MlspecError(f"{w}: {exc}", hint="name a plot as step.NAME, step.NAME[k=v] or step.NAME.OUTPUT")
        if a.kind != "step":
            raise MlspecError(f"{w}: only step outputs are plotted", hint="name a plot as step.NAME.OUTPUT")
        out.append(a)
    return out


def _wanted(targets, name: str, inst: str, output: str) -> bool:
    if not targets:
        return True
    for a in targets:
        if a.name != name or (a.output and a.output != output):
            continue
        if a.selector and a.resource != inst:
            continue
        return True
    return False


def _instances(resources: dict, name: str) -> list[str]:
    prefix = f"step.{name}"
    return [a for a in resources if a == prefix or a.startswith(prefix + "[")]


def collect(project: Project, points: list, targets) -> tuple[list[dict], dict[str, bytes]]:
    """One entry per plotted output instance recorded in any of ``points`` (base first, current last)."""
    from mlspec import plots

    spec = project.spec
    declared = {n: s for n, s in sorted(spec.steps.items()) if s.plots}
    if not declared:
        raise MlspecError("no step declares `plots:`",
                          hint="add steps.NAME.plots: {OUTPUT: {x: COLUMN, y: COLUMN}} (see docs/steps.md#plots)")
    entries, images, known = [], {}, []
    for name, step in declared.items():
        insts = sorted({a for p in points for a in _instances(p.state.resources, name)})
        for inst in insts:
            for output, plot in sorted(step.plots.items()):
                address = f"{inst}.{output}"
                known += [f"step.{name}.{output}", address]
                if not _wanted(targets, name, inst, output):
                    continue
                recs = [((p.state.resources.get(inst) or {}).get("outputs") or {}).get(output) for p in points]
                if not any(recs):
                    continue
                where = f"steps.{name}.plots.{output}"
                revisions = []
                for p, rec in zip(points, recs):
                    if rec:
                        raw = _read(project, rec, address, p.label)
                        try:
                            content = plots.read_content(raw, rec.get("format") or "")
                        except ValueError as exc:
                            raise MlspecError(f"{where}: cannot plot {address} ({p.label}): {exc}",
                                              hint="plot a table (CSV, TSV, JSON, JSONL, Parquet) or an image "
                                                   "(PNG, JPEG, GIF, SVG), or remove the plot") from None
                        revisions.append((p, rec, raw, content))
                entry = {"address": address, "id": re.sub(r"[^A-Za-z0-9_-]+", "-", address).strip("-"),
                         "step": name, "output": output, "status": _status(points, recs),
                         "revisions": [{"label": p.label, "hash": rec["hash"]} for p, rec, _, _ in revisions]}
                if any(c.mime for *_, c in revisions):
                    entry["type"] = "image"
                    entry["images"] = []
                    for p, rec, raw, c in revisions:
                        if not c.mime:
                            raise MlspecError(f"{where}: {address} is an image in one state and a table in "
                                              f"another ({p.label})", hint="plot the revisions one at a time "
                                              "with `mlspec plots show`")
                        images[rec["hash"]] = raw
                        entry["images"].append({"revision": p.label, "hash": rec["hash"], "mime": c.mime})
                else:
                    entry["type"] = plot.template
                    x, y, index = plots.axes(plot, revisions[-1][3].rows, where, address)
                    series = [(p.label, c.rows) for p, _, _, c in revisions]
                    entry.update(x=x, y=y, vega_lite=plots.vega_lite(
                        plot, {"text": plot.title, "subtitle": address} if plot.title else address, series, x, y, index))
                entries.append(entry)
    if targets and not entries:
        words = ", ".join(str(a) for a in targets)
        short = sorted({k for k in known if "[" not in k})
        raise MlspecError(f"no recorded plot matches {words}{did_you_mean(str(targets[0]), known)}",
                          hint=f"plots: {', '.join(short[:10]) or 'none recorded yet'}")
    if not entries:
        raise MlspecError("no plotted output is recorded yet", hint="run `mlspec apply` first")
    return entries, images


def _status(points: list, recs: list) -> str:
    if len(points) == 1:
        return "recorded"
    base, cur = recs[0], recs[-1]
    if base and cur:
        return "unchanged" if base["hash"] == cur["hash"] else "changed"
    return "added" if cur else "removed"


def _read(project: Project, rec: dict, address: str, label: str) -> bytes:
    from mlspec.artifacts import CorruptArtifact

    try:
        return project.artifacts.read_bytes(rec["hash"], produced_by=address)
    except FileNotFoundError:
        raise MlspecError(f"{address} ({label}): its object {rec['hash']} is missing from the artifact store",
                          hint="`mlspec artifacts verify` lists what is missing; an apply re-creates current "
                               "outputs") from None
    except CorruptArtifact as exc:
        raise MlspecError(f"{address} ({label}): {exc}", hint="`mlspec artifacts verify --repair`") from None


def run(args, console: Console) -> int:
    from mlspec import plots
    from mlspec.commands.bases import current_point, resolve_base
    from mlspec.views.formats import emit

    words = list(args.address or [])
    deletes = [w for w in words if w.startswith("~")]  # `~key` overrides have no '=' to tell them apart
    project = Project.open(args.project_dir, args.file, list(args.overrides or []) + deletes)
    targets = _targets([w for w in words if w not in deletes])
    head = current_point(project)
    points = [head]
    title = f"Plots of {project.spec.project}, {head.label}"
    if args.plots_command == "diff":
        base = resolve_base(project, args.base, head)
        points = [base, head]
        title = f"Plots of {project.spec.project}, {head.label} against {base.label}"
    entries, images = collect(project, points, targets)
    page_file = args.out or (DEFAULT_PAGE if args.format == "text" else None)
    if page_file:
        for e in entries:
            if e["type"] != "image":
                e["svg"] = plots.svg(e["vega_lite"])
        text = plots.page(title, entries, images)
        tmp = f"{page_file}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, page_file)
        except OSError as exc:
            raise MlspecError(f"cannot write {page_file}: {exc.strerror}", hint="pass -o FILE in a writable "
                              "directory") from None
    data = {"title": title, "points": [p.to_dict() for p in points], "page": page_file,
            "plots": [{k: v for k, v in e.items() if k not in ("svg", "id")} for e in entries]}

    def text_view(d) -> str:
        counts: dict = {}
        for e in d["plots"]:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        detail = "" if len(points) == 1 else " (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"
        n = len(d["plots"])
        return f"Wrote {n} plot{'s' if n != 1 else ''}{detail} to {d['page']}: {title}."

    emit(console, args.format, data, text=text_view, markdown=lambda d: plots.markdown(title, entries, page_file))
    return 0
