"""`mlspec validate`: compose and check the spec; every problem at once, with file:line:col."""

from __future__ import annotations

import json

from mlspec.compose import compose
from mlspec.console import Console
from mlspec.errors import SpecError
from mlspec.gcpause import outlive
from mlspec.load import Verdict, import_diagnostics, masked_canonical, sensitive_diagnostics
from mlspec.spec import build_spec


def run(args, console: Console) -> int:
    diags = []
    spec = c = None
    try:
        c = compose(args.project_dir, args.file, args.overrides)
        # a large spec is checked in a child process while the Spec is built (mlspec.load.Verdict); the
        # build may fail on an invalid spec: then the problems found say why
        verdict = Verdict.start(c, recheck=True)
        try:
            built = build_spec(c.data, project_dir=c.sources.project_dir, spec_file=c.spec_file,
                               sensitive=c.sensitive, choices=c.choices, canonical=masked_canonical(c))
            failure = None
        except Exception as exc:  # noqa: BLE001 - re-raised below unless the spec's problems explain it
            built, failure = None, exc
        except KeyboardInterrupt:
            verdict.abandon()
            raise
        diags = verdict.diagnostics() + sensitive_diagnostics(c)
        if not diags:
            if failure is not None:
                raise failure
            spec = built
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
