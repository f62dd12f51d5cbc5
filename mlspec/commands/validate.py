"""`mlspec validate`: compose and check the spec; every problem at once, with file:line:col."""

from __future__ import annotations

import json

from mlspec.compose import compose
from mlspec.console import Console
from mlspec.errors import SpecError
from mlspec.gcpause import outlive
from mlspec.load import import_diagnostics, sensitive_diagnostics, validate_composed
from mlspec.spec import build_spec


def run(args, console: Console) -> int:
    diags = []
    spec = c = None
    try:
        c = compose(args.project_dir, args.file, args.overrides)
        diags = validate_composed(c) + sensitive_diagnostics(c)
        if not diags:
            spec = build_spec(c.data, project_dir=c.sources.project_dir, spec_file=c.spec_file,
                              sensitive=c.sensitive, choices=c.choices)
            if args.check_imports:
                diags = import_diagnostics(spec, c)
    except SpecError as exc:
        diags = list(exc.diagnostics)
    outlive(c, spec)
    if args.format == "json":
        console.print(json.dumps([d.to_dict() for d in diags], indent=2))
        return 1 if diags else 0
    if diags:
        raise SpecError(diags)
    def n(items, word):
        return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"

    console.print(console.style("Success!", "green", "bold") + f" The spec is valid: project '{spec.project}', "
                  f"{n(spec.datasets, 'dataset')}, {n(spec.steps, 'step')}, {n(spec.models, 'model')}, "
                  f"{n(spec.deployments, 'deployment')}, {n(spec.monitors, 'monitor')}, {n(spec.triggers, 'trigger')}.")
    return 0
