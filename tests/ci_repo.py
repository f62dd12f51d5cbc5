"""A git repository holding a small project, with `main` and a branch `feature` that changes one param
(step.report's `top`), one gate threshold (model.clf's `score` gate) and adds a step (step.extra): the
fixture of the CI tests (diff, review, workspaces)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

STEPS = '''
import os
import time

import pandas as pd


def prepare(raw: pd.DataFrame, scale: float = 1.0):
    return {"clean": raw * scale}


def train(clean: pd.DataFrame, C: float = 1.0):
    return {"model": {"C": C, "total": float(clean.values.sum())}}


def evaluate(model: dict):
    return {"score": model["total"] * model["C"]}


def report(raw: pd.DataFrame, top: int = 3):
    return {"summary": {"rows": len(raw), "top": top}}


def publish(summary: dict):
    return {"page": {"text": f"{summary['rows']} rows, top {summary['top']}"}}


def extra(clean: pd.DataFrame):
    return {"stats": {"n": len(clean)}}


def slow(clean: pd.DataFrame):
    marker = os.environ.get("MLSPEC_TEST_MARKER")
    if marker:
        open(marker, "w").write("started")
    time.sleep(float(os.environ.get("MLSPEC_TEST_SLEEP", "0")))
    return {"done": {"n": len(clean)}}
'''

MAIN_SPEC = """\
project: demo
datasets:
  nums: {uri: data/nums.csv}
steps:
  prepare:
    run: demo.steps:prepare
    inputs: {raw: dataset.nums}
    outputs: [clean]
    params: {scale: 2.0}
  train:
    run: demo.steps:train
    inputs: {clean: step.prepare.clean}
    outputs: [model]
    params: {C: 1.0}
  evaluate:
    run: demo.steps:evaluate
    inputs: {model: step.train.model}
    metrics: [score]
  report:
    run: demo.steps:report
    inputs: {raw: dataset.nums}
    outputs: [summary]
    params: {top: 3}
  publish:
    run: demo.steps:publish
    inputs: {summary: step.report.summary}
    outputs: [page]
models:
  clf:
    from: step.train.model
    metrics: step.evaluate
    gates: {score: ">= 10"}
    promote: {alias: production}
"""

EXTRA_STEP = """\
  extra:
    run: demo.steps:extra
    inputs: {clean: step.prepare.clean}
    outputs: [stats]
"""


def branch_spec(main: str = MAIN_SPEC) -> str:
    s = main.replace("params: {top: 3}", "params: {top: 5}").replace('{score: ">= 10"}', '{score: ">= 50"}')
    return s.replace("models:\n", EXTRA_STEP + "models:\n")


def git(root: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


SLOW_STEP = """\
  slow:
    run: demo.steps:slow
    inputs: {clean: step.prepare.clean}
    outputs: [done]
"""


def s3_storage(endpoint: str, prefix: str) -> str:
    return (f"storage:\n  state: s3://team/{prefix}/state\n  artifacts: s3://team/{prefix}/artifacts\n"
            f"  options: {{endpoint_url: \"{endpoint}\"}}\n")


def make_repo(root: Path, storage: str = "") -> Path:
    """The repository at ``root`` (the project at its top), on branch `main` with one commit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "nums.csv").write_text("x,y\n1,2\n3,4\n5,6\n")
    (root / "src" / "demo").mkdir(parents=True, exist_ok=True)
    (root / "src" / "demo" / "__init__.py").write_text("")
    (root / "src" / "demo" / "steps.py").write_text(textwrap.dedent(STEPS))
    (root / "mlspec.yaml").write_text(MAIN_SPEC + storage)
    (root / ".gitignore").write_text(".mlspec/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "ci")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "main")
    return root


def make_branch(root: Path, name: str = "feature", storage: str = "") -> None:
    """Branch ``name`` off main with the three changes, committed, and checked out."""
    git(root, "checkout", "-q", "-b", name)
    (root / "mlspec.yaml").write_text(branch_spec() + storage)
    git(root, "commit", "-qam", "change top, raise the score gate, add step.extra")
