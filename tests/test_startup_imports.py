"""`mlspec --help` and `mlspec validate` stay fast: they never import the heavy data and backend libraries.

Each check runs in a fresh interpreter (the test process has imported everything already) and prints the
sorted list of loaded modules as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("pandas", "sklearn", "ray", "docker", "pyarrow", "vl_convert")

SPEC = """\
project: startup
datasets:
  raw: {uri: data/raw.csv, format: csv}
steps:
  prepare:
    run: startup.steps:prepare
    inputs: {raw: dataset.raw}
    outputs: [clean]
    params: {scale: 2}
  train:
    run: startup.steps:train
    inputs: {clean: step.prepare.clean}
    outputs: [model]
    matrix: {C: [0.1, 1.0]}
    resources: {memory: 1GiB}
    timeout: 10m
  evaluate:
    run: startup.steps:evaluate
    inputs: {model: step.train.model}
    metrics: [accuracy]
models:
  clf:
    from: step.train.model
    metrics: step.evaluate
    gates: {accuracy: ">= 0.5"}
    promote: {alias: production}
deployments:
  api: {model: clf@production, port: 8080}
monitors:
  drift: {deployment: api, reference: step.prepare.clean, method: psi, threshold: 0.2, schedule: "@hourly"}
triggers:
  nightly: {schedule: "0 2 * * *"}
"""

STEPS = """\
import pandas as pd  # only imported when a step runs (or with --check-imports)


def prepare(raw, scale=1):
    return {"clean": raw}
"""

SCRIPT = textwrap.dedent("""\
    import contextlib, io, json, sys
    from mlspec.cli import main

    args = json.loads(sys.argv[1])
    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # --help exits through argparse
            code = exc.code
    print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                      "modules": sorted(sys.modules)}))
    """)


@pytest.fixture
def projdir(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "mlspec.yaml").write_text(SPEC)
    (proj / "data" / "raw.csv").write_text("x,y\n1,2\n")
    (proj / "src" / "startup").mkdir(parents=True)
    (proj / "src" / "startup" / "__init__.py").write_text("")
    (proj / "src" / "startup" / "steps.py").write_text(STEPS)
    return proj


def _modules_after(args: list[str], cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env.pop("PYTHONSTARTUP", None)
    return env


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_validate_imports_no_heavy_modules(projdir: Path):
    res = _modules_after(["-C", str(projdir), "--no-color", "validate"], projdir)
    assert res["code"] == 0, res["stdout"] + res["stderr"]
    assert res["stdout"].startswith("Success!")
    assert "mlspec.commands.validate" in res["modules"]  # the check really ran validate
    assert not _heavy(res["modules"]), _heavy(res["modules"])


def test_validate_json_of_invalid_spec_imports_no_heavy_modules(projdir: Path):
    (projdir / "mlspec.yaml").write_text(SPEC.replace("step.prepare.clean}", "step.prepare.cleen}"))
    res = _modules_after(["-C", str(projdir), "--no-color", "validate", "--format", "json"], projdir)
    assert res["code"] == 1
    assert json.loads(res["stdout"])
    assert not _heavy(res["modules"]), _heavy(res["modules"])


def test_help_imports_no_heavy_modules(tmp_path: Path):
    res = _modules_after(["--help"], tmp_path)
    assert res["code"] == 0
    assert "validate" in res["stdout"]
    assert not _heavy(res["modules"]), _heavy(res["modules"])
    assert "hydra" not in res["modules"], "--help should not even import Hydra"


def test_validate_help_imports_no_heavy_modules(tmp_path: Path):
    res = _modules_after(["validate", "--help"], tmp_path)
    assert res["code"] == 0
    assert "--check-imports" in res["stdout"]
    assert not _heavy(res["modules"]), _heavy(res["modules"])


def test_plan_with_valid_backend_settings_does_not_import_jsonschema(projdir: Path):
    """Importing jsonschema costs about 40 ms of every plan and apply: valid backend settings pass the compiled
    check (mlspec.schema.data_check) and jsonschema only runs to say what is wrong."""
    res = _modules_after(["-C", str(projdir), "--no-color", "plan", "--target", "step.prepare"], projdir)
    assert res["code"] == 0, res["stdout"] + res["stderr"]
    assert "mlspec.backends.local" in res["modules"]  # the preflight made the local backend
    assert not [m for m in res["modules"] if m.split(".")[0] == "jsonschema"]
    res = _modules_after(["-C", str(projdir), "--no-color", "plan", "--target", "step.prepare",
                          "+backend.max_workers=0"], projdir)
    assert res["code"] == 1
    assert "backend.max_workers: 0 is less than the minimum of 1" in res["stderr"], res["stderr"]
