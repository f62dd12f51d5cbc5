"""init templates, graph views, --check-imports, and the wheel carrying schemas/configs/templates."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, run_cli


@pytest.mark.parametrize("template", ["minimal", "churn"])
def test_init_writes_a_project_that_validates_and_plans(tmp_path, template):
    dest = tmp_path / "new"
    r = run_cli("init", str(dest), "--template", template)
    assert r.returncode == 0, r.stderr
    first = (dest / "mlspec.yaml").read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=file://") and first.endswith("mlspec.schema.json")
    assert Path(first.split("=", 1)[1][len("file://"):]).is_file()
    assert not (dest / ".mlspec").exists()
    assert run_cli("-C", str(dest), "validate", "--check-imports").returncode == 0
    r = run_cli("-C", str(dest), "plan", "--detailed-exitcode")
    assert r.returncode == 2, r.stderr
    # the churn template and examples/churn are one source
    if template == "churn":
        for p in (REPO / "examples/churn").rglob("*.py"):
            if "__pycache__" not in p.parts:
                assert (dest / p.relative_to(REPO / "examples/churn")).read_text() == p.read_text()
    again = run_cli("init", str(dest), "--template", template)
    assert again.returncode == 1 and "not empty" in again.stderr


def test_init_unknown_template(tmp_path):
    r = run_cli("init", str(tmp_path / "x"), "--template", "nope")
    assert r.returncode == 1 and "available: churn, dvc-get-started, minimal" in r.stderr


def test_minimal_example_applies(tmp_path):
    dest = tmp_path / "m"
    assert run_cli("init", str(dest), "--template", "minimal").returncode == 0
    r = run_cli("-C", str(dest), "apply", "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    m = run_cli("-C", str(dest), "metrics", "show").stdout
    assert "step.score" in m and "accuracy" in m


def test_check_imports_reports_a_missing_function(project):
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("demo.steps:side", "demo.steps:sidee"))
    assert project.run("validate").returncode == 0  # plain validate never imports user code
    r = project.run("validate", "--check-imports")
    assert r.returncode == 1
    assert "mlspec.yaml:" in r.stderr and "module 'demo.steps' has no attribute 'sidee'" in r.stderr


def test_graph_views(project):
    text = project.run("graph").stdout
    assert "step.evaluate[C=0.1]  <- step.train[C=0.1]" in text
    mermaid = project.run("graph", "--format", "mermaid").stdout
    assert mermaid.startswith("graph LR") and "-->" in mermaid
    dot = project.run("graph", "--format", "dot").stdout
    assert '"dataset.nums" -> "step.prepare";' in dot


def test_wheel_ships_schemas_configs_and_templates(tmp_path):
    # building in an isolated environment may touch the home directory (tool caches): give it its own
    env = dict(os.environ, PIP_CACHE_DIR=str(tmp_path / "pip-cache"), HOME=str(tmp_path / "build-home"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("mlspec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("mlspec/schemas/mlspec.schema.json", "mlspec/schemas/plan.schema.json",
                 "mlspec/configs/backend/local.yaml", "mlspec/configs/backend/ray.yaml",
                 "mlspec/templates/churn/mlspec.yaml", "mlspec/templates/churn/src/churn/steps.py",
                 "mlspec/templates/minimal/data/iris.csv", "mlspec/schemas/events.schema.json",
                 "mlspec/core/kind.py", "mlspec/kinds/step.py", "mlspec/views/apply.py", "mlspec/compose/fast.py"):
        assert must in names, must
    assert not any("/.mlspec/" in n or "__pycache__" in n for n in names)
    # installed from the wheel (not editable), the CLI finds its data files
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600, env=env)
    wenv = dict(env, PYTHONPATH=str(target))
    proj = tmp_path / "proj"
    for args in (["init", str(proj), "--template", "churn"], ["-C", str(proj), "validate", "backend=ray"],
                 ["-C", str(proj), "plan", "--no-preflight"]):
        out = subprocess.run([sys.executable, "-m", "mlspec", *args], capture_output=True, text=True, cwd=tmp_path,
                             env=wenv)
        assert out.returncode == 0, out.stderr
    where = subprocess.run([sys.executable, "-c", "import mlspec; print(mlspec.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=wenv).stdout
    assert where.startswith(str(target))
