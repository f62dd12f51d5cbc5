"""`mlspec diff`: the composed spec at two git revisions, compared resource by resource."""

from __future__ import annotations

import json

from ci_repo import MAIN_SPEC, git, make_branch, make_repo
from conftest import run_cli


def diff(root, *args):
    return run_cli("-C", str(root), "diff", *args)


def test_branch_diff_lists_exactly_the_three_changes_and_what_they_affect(tmp_path):
    root = make_repo(tmp_path / "repo")
    make_branch(root)
    r = diff(root, "--format", "json")  # base: the merge-base with main; head: the working tree
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [(c["address"], c["action"]) for c in d["changes"]] == [
        ("step.report", "changed"), ("step.extra", "added"), ("model.clf", "changed")]
    report, extra, clf = d["changes"]
    assert report["attributes"] == [{"path": "params.top", "change": "changed", "before": 3, "after": 5,
                                     "source": "mlspec.yaml:23"}]
    assert report["affects"] == ["step.publish"]
    assert clf["attributes"][0]["path"] == "gates.score"
    assert (clf["attributes"][0]["before"], clf["attributes"][0]["after"]) == (">= 10", ">= 50")
    assert extra["affects"] == [] and d["settings"] == [] and d["groups"] == []
    assert d["summary"] == {"added": 1, "changed": 2, "removed": 0, "settings": 0}
    assert d["base"]["commit"] == git(root, "rev-parse", "main")
    text = diff(root).stdout
    assert "~ step.report" in text and "params.top: 3 -> 5" in text and "affects: step.publish" in text
    assert "gates.score: >= 10 -> >= 50" in text and "+ step.extra" in text
    assert text.rstrip().endswith("Spec diff: 1 added, 2 changed, 0 removed; 1 more downstream.")
    md = diff(root, "--format", "markdown").stdout
    assert "| `~` | `step.report` | `params.top: 3 -> 5` | `step.publish` |" in md


def test_revisions_both_sides_and_a_removed_resource(tmp_path):
    root = make_repo(tmp_path / "repo")
    make_branch(root)
    # --head REV reads the revision, not the working tree (which now removes publish)
    (root / "mlspec.yaml").write_text((root / "mlspec.yaml").read_text().replace(
        "  publish:\n    run: demo.steps:publish\n    inputs: {summary: step.report.summary}\n    outputs: [page]\n", ""))
    d = json.loads(diff(root, "--base", "main", "--head", "feature", "--format", "json").stdout)
    assert len(d["changes"]) == 3 and d["head"]["label"].startswith("feature (")
    d = json.loads(diff(root, "--base", "main", "--format", "json").stdout)
    assert ("step.publish", "removed") in [(c["address"], c["action"]) for c in d["changes"]]
    # no change: exit 0 and says so; --exit-code says 2 when there are changes
    r = diff(root, "--base", "feature", "--head", "feature")
    assert r.returncode == 0 and "No changes to the spec." in r.stdout
    assert diff(root, "--base", "main", "--exit-code").returncode == 2


def test_config_group_change_resolves_to_values_and_secrets_are_masked(tmp_path):
    root = tmp_path / "repo"
    spec = MAIN_SPEC.replace("project: demo\n", "project: demo\ndefaults:\n  - _self_\n  - env: dev\n")
    make_repo(root)
    (root / "env").mkdir()
    (root / "env" / "dev.yaml").write_text("# @package _global_\nsteps:\n  train:\n    params: {C: 1.0}\n")
    (root / "env" / "big.yaml").write_text("# @package _global_\nsteps:\n  train:\n    params: {C: 4.0}\n")
    secret = 'params: {top: 3, token: "${secrets.api}"}'
    spec = spec.replace("params: {top: 3}", secret) + "secrets:\n  api: s3cr3t-old-value\n"
    (root / "mlspec.yaml").write_text(spec)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "groups")
    git(root, "checkout", "-qb", "big")
    (root / "mlspec.yaml").write_text(spec.replace("env: dev", "env: big").replace("old-value", "new-value"))
    r = diff(root, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "s3cr3t" not in r.stdout
    d = json.loads(r.stdout)
    assert d["groups"] == [{"group": "env", "before": "dev", "after": "big"}]
    train = next(c for c in d["changes"] if c["address"] == "step.train")
    assert train["attributes"][0]["path"] == "params.C" and train["attributes"][0]["after"] == 4.0
    assert train["attributes"][0]["source"].startswith("env/big.yaml")
    assert train["affects"] == ["step.evaluate", "model.clf"]
    report = next(c for c in d["changes"] if c["address"] == "step.report")
    assert report["attributes"][0]["sensitive"] is True
    text = diff(root).stdout
    assert [s["address"] for s in d["settings"]] == ["secrets"]
    assert "config group env: dev -> big" in text and "params.token: changed (sensitive, not shown)" in text
    assert "s3cr3t" not in text + diff(root, "--format", "markdown").stdout


def test_errors_are_one_line(tmp_path):
    root = make_repo(tmp_path / "repo")
    r = diff(root, "--base", "no-such-branch")
    assert r.returncode == 1 and "--base no-such-branch: git does not know this revision" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "mlspec.yaml").write_text(MAIN_SPEC)
    r = diff(tmp_path / "plain")
    assert r.returncode == 1 and "is not in a git repository" in r.stderr
    git(root, "checkout", "-qb", "broken")
    (root / "mlspec.yaml").write_text(MAIN_SPEC.replace("step.train.model", "step.nope.model", 1))
    r = diff(root)
    assert r.returncode == 1 and "the spec of the working tree does not compose" in r.stderr


def test_a_branch_that_adds_the_spec_shows_everything_added(tmp_path):
    root = make_repo(tmp_path / "repo")
    git(root, "checkout", "-q", "--orphan", "empty")
    git(root, "rm", "-rfq", ".")
    (root / "README").write_text("nothing yet\n")
    git(root, "add", "README")
    git(root, "commit", "-qm", "empty")
    git(root, "checkout", "-q", "main")
    d = json.loads(diff(root, "--base", "empty", "--head", "main", "--format", "json").stdout)
    assert d["summary"]["added"] == 7 and {c["action"] for c in d["changes"]} == {"added"}
    assert d["changes"][0]["address"] == "dataset.nums" and "step.prepare" in d["changes"][0]["affects"]
