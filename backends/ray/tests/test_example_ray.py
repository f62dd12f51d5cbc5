"""The acceptance run on the real example: examples/churn on `local`, then on the session's Ray cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "churn"


def _cli(project: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", RAY_AUTH_MODE="disabled", HOME=str(project.parent / "home"))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "mlspec", "-C", str(project), *args], env=env, capture_output=True,
                          text=True, timeout=600)


def _hashes(state_dir: Path) -> dict:
    doc = json.loads((state_dir / "default.state.json").read_text())
    return {f"{a}.{n}": o["hash"] for a, r in doc["resources"].items() for n, o in (r.get("outputs") or {}).items()}


def test_churn_example_switches_to_ray_without_reruns_and_reproduces_hashes(tmp_path, ray_cluster):
    project = tmp_path / "churn"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".mlspec", "__pycache__"))
    (tmp_path / "home").mkdir()
    import socket

    with socket.socket() as s:  # the example serves its model: on a free port, stopped at the end
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = (project / "mlspec.yaml").read_text()
    (project / "mlspec.yaml").write_text(text.replace("port: 8080", f"port: {port}"))
    try:
        _switch_to_ray(project, tmp_path, ray_cluster)
    finally:
        _cli(project, "destroy", "--auto-approve")
        _cli(project, "destroy", "--auto-approve", f"++storage.state={tmp_path / 'st'}",
             f"++storage.artifacts={tmp_path / 'art'}")


def _switch_to_ray(project, tmp_path, ray_cluster):
    ray = ["backend=ray", f"backend.address={ray_cluster.address}"]
    r = _cli(project, "apply", "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Apply complete: 11 ran" in r.stdout  # 9 step instances, the model version and the deployment
    local = _hashes(project / ".mlspec/state")
    r = _cli(project, "apply", "--auto-approve", *ray)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No changes" in r.stdout  # switching backend re-runs nothing
    # a fresh state: everything computed on the cluster (the model is registered; the first state's service
    # holds the port, so this one is not deployed)
    r = _cli(project, "apply", "--auto-approve", *ray, f"++storage.state={tmp_path / 'st'}",
             f"++storage.artifacts={tmp_path / 'art'}", "--target", "model.churn-clf")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Apply complete: 10 ran" in r.stdout  # 9 step instances and the model version
    assert _hashes(tmp_path / "st") == local  # byte-identical outputs, computed on the cluster
