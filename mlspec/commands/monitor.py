"""`mlspec monitor [NAME...]`: evaluate monitors now: a summary table per monitor, and NAME.json and NAME.html
(self-contained) in the reports directory. Exit 0 when nothing drifted, 2 when a monitor found data drift
(like `plan --detailed-exitcode`: a CI job can act on it), 1 on an error."""

from __future__ import annotations

import json

from mlspec.console import Console
from mlspec.errors import EXIT_CHANGES, MlspecError, did_you_mean


def run(args, console: Console) -> int:
    from mlspec.monitoring import REPORTS_DIR, evaluate, write_reports
    from mlspec.project import Project

    words = list(args.names)  # `monitor NAME... key=value`: words with '=' are overrides
    names = [w for w in words if "=" not in w]
    project = Project.open(args.project_dir, args.file, list(args.overrides or []) + [w for w in words if "=" in w])
    spec = project.spec
    if not spec.monitors:
        raise MlspecError("the spec declares no monitors", hint="add one under `monitors:` (docs/monitoring.md)")
    for n in names:
        if n not in spec.monitors:
            raise MlspecError(f"no monitor '{n}' in the spec{did_you_mean(n, spec.monitors)}",
                              hint=f"monitors: {', '.join(sorted(spec.monitors))}")
    if args.current and len(names or spec.monitors) > 1:
        raise MlspecError("--current compares one file: name one monitor",
                          hint=f"mlspec monitor NAME --current {args.current}")
    out_dir = args.reports or str(spec.project_dir / REPORTS_DIR)
    reports = []
    for n in names or sorted(spec.monitors):
        report = evaluate(project, spec.monitors[n], current=args.current)
        js, html = write_reports(report, out_dir)
        reports.append((report, js, html))
    project.cache.save()
    drifted = any(r["dataset_drift"] for r, _j, _h in reports)
    if args.format == "json":
        from mlspec.state import json_safe

        console.print(json.dumps(json_safe([dict(r, report_json=str(j), report_html=str(h)) for r, j, h in reports]),
                                 indent=1, sort_keys=True))
        return EXIT_CHANGES if drifted else 0
    from mlspec.drift import summary_rows

    for report, js, html in reports:
        console.print(f"Monitor {report['monitor']}: {report['reference_address']} "
                      f"({report['reference']['rows']} rows{', profile cached' if report['profile_cached'] else ''}) "
                      f"vs {report['current_source']} ({report['current']['rows']} rows)")
        rows = [["feature", "kind", "method", "statistic", "threshold", "drift"]] + summary_rows(report)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for i, r in enumerate(rows):
            line = "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            console.print(console.style(line, "red", "bold") if r[-1] == "DRIFT" else line)
        perf = report.get("performance")
        if perf:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in perf.items() if isinstance(v, float))
            console.print(f"  performance on {perf['rows_labelled']} labelled rows: {shown or perf.get('note', '')}")
        n, k = len(report["drifted_features"]), len(report["features"])
        verdict = "DATA DRIFT" if report["dataset_drift"] else "no data drift"
        console.print(f"  {verdict}: {n} of {k} features drifted ({report['share_drifted']:.0%}; "
                      f"data drift at {report['drift_share']:.0%})")
        console.print(f"  Reports: {_shown(js)} and {_shown(html)}\n")
    return EXIT_CHANGES if drifted else 0


def _shown(path) -> str:
    """A report's path as the user can type it: relative to the working directory when inside it."""
    import os

    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel
