"""Shared fixtures: run the real CLI in a subprocess, build small projects, guard the home directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_home_writes(tmp_path_factory, monkeypatch):
    """Fail any test that writes to the real home directory: point HOME at a fresh dir and check it stays empty."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    yield
    leftovers = [p for p in home.rglob("*") if p.is_file()]
    assert not leftovers, f"a test wrote into HOME: {leftovers}"


def run_cli(*args, cwd=None, env=None, input=None, timeout=300) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["NO_COLOR"] = "1"
    e.pop("RAY_ADDRESS", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "mlspec", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          input=input, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


STEPS_PY = '''
import json, os, time
import pandas as pd


def prepare(raw: pd.DataFrame, scale: float = 1.0):
    return {"clean": raw * scale}


def train(clean: pd.DataFrame, C: float = 1.0):
    return {"model": {"C": C, "total": float(clean.values.sum())}}


def evaluate(model: dict):
    from demo import helpers
    return {"score": helpers.score(model)}


def side(raw: pd.DataFrame):
    return {"summary": {"rows": len(raw)}}


def boom(clean, C=1.0):
    raise ValueError("boom: this step always fails")
'''


class Project:
    """A small temporary project: data/nums.csv -> prepare -> train[C] -> evaluate, plus a side branch."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def run(self, *args, **kw) -> subprocess.CompletedProcess:
        return run_cli("-C", str(self.root), *args, **kw)

    def apply(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.run("apply", "--auto-approve", *args, **kw)

    def state(self) -> dict:
        return json.loads((self.root / ".mlspec/state/default.state.json").read_text())

    def runs(self) -> list[dict]:
        d = self.root / ".mlspec/state/runs"
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]

    def last_run(self) -> dict:
        return self.runs()[-1]

    def ran(self, run: dict | None = None) -> set:
        run = run or self.last_run()
        return {a for a, s in run["steps"].items() if s["status"] == "ran"}


DEFAULT_SPEC = """
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
    matrix: {C: [0.1, 1.0]}
  evaluate:
    run: demo.steps:evaluate
    inputs: {model: step.train.model}
    metrics: [score]
  side:
    run: demo.steps:side
    inputs: {raw: dataset.nums}
    outputs: [summary]
"""


@pytest.fixture
def project(tmp_path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", DEFAULT_SPEC)
    p.write("data/nums.csv", "x,y\n1,2\n3,4\n5,6\n")
    p.write("src/demo/__init__.py", "")
    p.write("src/demo/steps.py", STEPS_PY)
    p.write("src/demo/helpers.py", "def score(m):\n    return m['total'] * m['C']\n")
    return p


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server (moto) on loopback with a bucket "team"; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="team")
    yield url
    server.stop()
