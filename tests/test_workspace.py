"""`mlspec workspace list | new | delete`: workspaces per branch over one state store."""

from __future__ import annotations

import json
import uuid

from ci_repo import make_repo, s3_storage
from conftest import run_cli
from mlspec.project import Project


def test_new_from_copies_the_state_and_delete_forgets_it(tmp_path):
    root = make_repo(tmp_path / "repo")
    cli = lambda *a: run_cli("-C", str(root), *a)  # noqa: E731
    r = cli("workspace", "new", "pr-1", "--from", "default")
    assert r.returncode == 1 and "--from default: workspace 'default' has no state" in r.stderr
    assert cli("apply", "--auto-approve").returncode == 0
    main = json.loads((root / ".mlspec/state/default.state.json").read_text())
    r = cli("workspace", "new", "pr-1", "--from", "default")
    assert r.returncode == 0 and "Created workspace 'pr-1' from 'default'" in r.stdout, r.stderr
    pr = json.loads((root / ".mlspec/state/pr-1.state.json").read_text())
    assert pr["resources"] == main["resources"] and pr["fingerprint_key"] == main["fingerprint_key"]
    assert pr["lineage"] != main["lineage"] and pr["workspace"] == "pr-1"
    assert "No changes" in cli("-w", "pr-1", "plan").stdout  # starts exactly where main is
    r = cli("workspace", "new", "pr-1")
    assert r.returncode == 1 and "workspace 'pr-1' exists already" in r.stderr
    assert cli("workspace", "new", "pr-1", "--exist-ok").returncode == 0
    assert cli("workspace", "new", "empty").returncode == 0
    rows = json.loads(cli("workspace", "list", "--format", "json").stdout)
    assert [(w["name"], w["current"], w["from"]) for w in rows] == [
        ("default", True, None), ("empty", False, None), ("pr-1", False, "default")]
    text = cli("-w", "pr-1", "workspace", "list").stdout
    assert "* pr-1" in text and "from default" in text
    r = cli("workspace", "delete", "pr-1")
    assert r.returncode == 0 and "Deleted workspace 'pr-1'" in r.stdout
    assert not list((root / ".mlspec/state").glob("pr-1.*"))
    assert "No changes" in cli("plan").stdout  # main's state untouched
    r = cli("workspace", "delete", "pr-1")
    assert r.returncode == 1 and "no workspace 'pr-1'" in r.stderr
    assert cli("workspace", "delete", "pr-1", "--missing-ok").returncode == 0
    r = cli("workspace", "new", "1bad")
    assert r.returncode == 1 and "'1bad' is not a valid workspace name" in r.stderr


def test_delete_refuses_a_workspace_that_serves_a_deployment(tmp_path):
    root = make_repo(tmp_path / "repo")
    assert run_cli("-C", str(root), "apply", "--auto-approve").returncode == 0
    assert run_cli("-C", str(root), "workspace", "new", "prod", "--from", "default").returncode == 0
    project = Project.open(root, None, ["++storage.workspace=prod"])
    with _locked(project):
        st = project.read_state()
        st.resources["deployment.api"] = {"kind": "deployment", "status": "serving"}
        project.store.write(st)
    r = run_cli("-C", str(root), "workspace", "delete", "prod")
    assert r.returncode == 1
    assert "workspace 'prod' serves 1 deployment(s): deployment.api" in r.stderr and "Traceback" not in r.stderr
    assert (root / ".mlspec/state/prod.state.json").exists()
    # a copy never takes deployments along: they are served by the workspace that applied them
    assert run_cli("-C", str(root), "workspace", "new", "pr-2", "--from", "prod").returncode == 0
    pr = json.loads((root / ".mlspec/state/pr-2.state.json").read_text())
    assert "deployment.api" not in pr["resources"] and "step.train" in pr["resources"]


class _locked:
    def __init__(self, project):
        self.project = project

    def __enter__(self):
        self.project.lock.acquire("test")

    def __exit__(self, *exc):
        self.project.lock.release()


def test_workspaces_on_s3_share_the_store(tmp_path, s3, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    root = make_repo(tmp_path / "repo", s3_storage(s3, f"ws-{uuid.uuid4().hex[:8]}"))
    cli = lambda *a: run_cli("-C", str(root), *a)  # noqa: E731
    assert cli("apply", "--auto-approve").returncode == 0
    assert cli("workspace", "new", "pr-9", "--from", "default").returncode == 0
    rows = json.loads(cli("workspace", "list", "--format", "json").stdout)
    assert {w["name"] for w in rows} == {"default", "pr-9"}
    assert "No changes" in cli("-w", "pr-9", "plan").stdout
    assert cli("workspace", "delete", "pr-9").returncode == 0
    assert [w["name"] for w in json.loads(cli("workspace", "list", "--format", "json").stdout)] == ["default"]
