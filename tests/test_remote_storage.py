"""State, lock, run records and artifacts on a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import json

import pytest

from mlspec.errors import LockedError
from mlspec.lock import StateLock
from mlspec.storage import Location


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)


def test_apply_with_state_and_artifacts_on_s3(project, s3, aws_env, tmp_path):
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec + f"""
storage:
  state: s3://team/churn/state
  artifacts: s3://team/churn/artifacts
  options: {{endpoint_url: "{s3}"}}
""")
    r = project.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (project.root / ".mlspec/state").exists()  # nothing local but the hash cache
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3)
    doc = json.loads(fs.cat("team/churn/state/default.state.json"))
    assert doc["serial"] == 1 and "step.evaluate[C=1.0]" in doc["resources"]
    assert fs.ls("team/churn/state/runs")
    out = doc["resources"]["step.train[C=1.0]"]["outputs"]["model"]["hash"].split(":")[1]
    assert fs.exists(f"team/churn/artifacts/objects/{out[:2]}/{out[2:]}")
    r = project.apply()
    assert "No changes" in r.stdout
    # a second checkout of the project sharing the store sees the same state and the run-cache
    metrics = project.run("metrics", "show", "--format", "json")
    assert {"address": "step.evaluate[C=1.0]", "metric": "score", "value": 42.0} in json.loads(metrics.stdout)
    dest = tmp_path / "m.json"
    assert project.run("artifacts", "get", "step.train[C=1.0].model", str(dest)).returncode == 0
    assert json.loads(dest.read_text())["C"] == 1.0


def test_lock_on_s3_is_a_conditional_create(s3, aws_env):
    loc = Location("s3://team/locks", {"endpoint_url": s3})
    a, b = StateLock(loc, "ws"), StateLock(loc, "ws")
    info = a.acquire("apply")
    with pytest.raises(LockedError) as e:
        b.acquire("apply")
    assert info.id in e.value.hint
    a.release()
    assert b.acquire("apply").id != info.id
    b.release()
