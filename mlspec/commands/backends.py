"""`mlspec backends`: installed backends with versions, and a health check of the configured one."""

from __future__ import annotations

import json

from mlspec.backends.registry import available_backend_names, backend_distribution
from mlspec.console import Console
from mlspec.errors import MlspecError


def run(args, console: Console) -> int:
    rows = []
    for name in available_backend_names():
        dist, version = backend_distribution(name)
        rows.append({"name": name, "package": dist, "version": version})
    configured, health = None, None
    try:
        from mlspec.preflight import make_backend
        from mlspec.project import Project

        project = Project.open(args.project_dir, args.file, args.overrides)
        cfg = project.spec.backend
        configured = cfg.type
        backend = make_backend(project, cfg)
        try:
            health = backend.health()
        finally:
            backend.close()
    except MlspecError as exc:
        health = f"error: {exc.message}"
    if args.format == "json":
        console.print(json.dumps({"installed": rows, "configured": configured, "health": health}, indent=2))
        return 0
    if args.format == "markdown":
        from mlspec.views.formats import markdown_table

        console.print(markdown_table(["backend", "package", "version", "configured"],
                                     [[r["name"], r["package"], r["version"], "yes" if r["name"] == configured else ""]
                                      for r in rows]))
        if configured:
            console.print(f"\nConfigured backend: `{configured}`: {health}")
        return 0
    w = max([len(r["name"]) for r in rows] + [4])
    console.print(f"{'NAME':<{w}}  PACKAGE            VERSION")
    for r in rows:
        mark = " *" if r["name"] == configured else ""
        console.print(f"{r['name']:<{w}}  {r['package']:<18} {r['version']}{mark}")
    if configured:
        console.print(f"\nConfigured backend: {configured} — {health}")
    elif health:
        console.print(f"\n(no project here: {health.removeprefix('error: ')})")
    return 0
