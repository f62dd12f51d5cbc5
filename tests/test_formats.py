"""One view layer: every format each command declares (mlspec.views.formats.FORMATS) works through the CLI,
and `--format json` is valid JSON."""

from __future__ import annotations

import json

import pytest

from conftest import DEFAULT_SPEC, STEPS_PY, Project
from mlspec.views.formats import FORMATS


MODELS = "models:\n  m: {from: step.side.summary}\n"  # a registered model for the `models` commands


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    p = Project(tmp_path_factory.mktemp("fmt") / "proj")
    p.write("mlspec.yaml", DEFAULT_SPEC + MODELS)
    p.write("data/nums.csv", "x,y\n1,2\n3,4\n5,6\n")
    p.write("src/demo/__init__.py", "")
    p.write("src/demo/steps.py", STEPS_PY)
    p.write("src/demo/helpers.py", "def score(m):\n    return m['total'] * m['C']\n")
    assert p.apply().returncode == 0
    p.write("mlspec.yaml", DEFAULT_SPEC.replace("scale: 2.0", "scale: 3.0") + MODELS)
    assert p.apply().returncode == 0
    p.run("plan", "-o", "plan.json")
    return p


def _args(command: str, p) -> list[str]:
    run_id = p.last_run()["run_id"]
    return {"state show": ["state", "show", "step.prepare"], "runs show": ["runs", "show", run_id],
            "lineage": ["lineage", "step.evaluate[C=1.0]"], "show": ["show", "plan.json"],
            "apply": ["apply", "--auto-approve"],
            "models show": ["models", "show", "m"], "models history": ["models", "history", "m"],
            "plots show": ["plots", "show", "+steps.prepare.plots={clean: {x: x, y: y}}"],
            "plots diff": ["plots", "diff", "+steps.prepare.plots={clean: {x: x, y: y}}"],
            # contracts, monitors and triggers, added for the command only (a monitor compares a file here:
            # the deployment it names is never applied)
            "data check": ["data", "check", "+datasets.nums.contract={columns: {x: {dtype: int64, min: 0}}}"],
            "monitor": ["monitor", "drift", "--current", "data/nums.csv", "+deployments={api: {model: m@1}}",
                        "+monitors={drift: {deployment: api, reference: dataset.nums}}"],
            "triggers check": ["triggers", "check", "+triggers={fresh: {dataset: dataset.nums, apply: [step.side]}}",
                               "+triggers.nightly={schedule: '0 2 * * *'}"]}.get(command, command.split())


@pytest.mark.parametrize("command,fmt", [(c, f) for c, fs in sorted(FORMATS.items()) for f in fs])
def test_every_declared_format_works(applied, command, fmt):
    r = applied.run(*_args(command, applied), "--format", fmt)
    assert r.returncode == 0, (command, fmt, r.stderr)
    assert r.stdout.strip(), (command, fmt)
    if fmt == "json":
        for line in (r.stdout.splitlines() if command == "apply" else [r.stdout]):
            json.loads(line)
    if fmt == "markdown":
        assert "|" in r.stdout or r.stdout.lstrip().startswith("#"), r.stdout


def test_an_undeclared_format_is_a_usage_error(applied):
    r = applied.run("runs", "show", applied.last_run()["run_id"], "--format", "markdown")
    assert r.returncode == 1 and "invalid choice" in r.stderr
