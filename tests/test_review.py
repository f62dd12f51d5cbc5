"""`mlspec review`: the one PR comment (spec diff, plan, gates, metrics) on a branch's workspace made from
main's; its apply re-uses every result main computed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ci_repo import git, make_branch, make_repo
from conftest import run_cli

GOLDEN = Path(__file__).parent / "cases" / "review"


def normalise(text: str) -> str:
    """Commits and the version differ from run to run: the rest of the comment must not."""
    text = re.sub(r"\b[0-9a-f]{10}\b", "<commit>", text)
    return re.sub(r"mlspec \d+\.\d+\.\d+\S*", "mlspec <version>", text)


def check_golden(name: str, text: str, update: bool = False) -> None:
    path = GOLDEN / name
    if update or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file"


def test_review_on_the_branch_workspace_plans_only_what_changed_and_its_apply_reuses_mains_results(tmp_path):
    root = make_repo(tmp_path / "repo")
    cli = lambda *a, **kw: run_cli("-C", str(root), *a, **kw)  # noqa: E731
    assert cli("apply", "--auto-approve").returncode == 0  # main's results, in workspace default
    make_branch(root)
    r = cli("workspace", "new", "pr-7", "--from", "default")
    assert r.returncode == 0, r.stderr
    r = cli("-w", "pr-7", "review", "--format", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    planned = {c["address"] for c in d["plan"]["resource_changes"] if c["actions"][0] != "no-op"}
    assert planned == {"step.report", "step.publish", "step.extra"}  # only what the branch affects
    assert [g["outcome"] for g in d["gates"]] == ["failed"]  # score 42 against the branch's ">= 50"
    assert d["metrics"]["base"]["workspace"] == "default"
    md = cli("-w", "pr-7", "review", "-o", str(tmp_path / "comment.md"))
    assert md.returncode == 0, md.stderr
    assert (tmp_path / "comment.md").read_text() == md.stdout
    assert md.stdout.startswith("<!-- mlspec-review project=demo -->\n")
    check_golden("before-apply.md", normalise(md.stdout))
    # apply the branch in its workspace: only the affected steps run, nothing main computed runs again
    r = cli("-w", "pr-7", "plan", "-o", str(tmp_path / "pr.plan"))
    r = cli("-w", "pr-7", "apply", "--auto-approve", str(tmp_path / "pr.plan"))
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [json.loads(p.read_text()) for p in sorted((root / ".mlspec/state/runs").glob("*.json"))]
    last = runs[-1]
    assert last["workspace"] == "pr-7"
    ran = {a for a, s in last["steps"].items() if s["status"] == "ran"}
    assert ran == {"step.report", "step.publish", "step.extra"}
    for addr in ("step.prepare", "step.train", "step.evaluate"):  # up to date: 0 re-runs, 0 restores
        assert last["steps"][addr]["status"] == "up-to-date", last["steps"][addr]
    after = cli("-w", "pr-7", "review", "--plan", str(tmp_path / "pr.plan"))
    assert after.returncode == 0, after.stderr
    check_golden("after-apply.md", normalise(after.stdout))
    # main's workspace is untouched by the branch
    git(root, "checkout", "-q", "main")
    assert "No changes" in cli("plan").stdout
    # the merge: main's apply finds what the PR computed in the shared run-cache and runs nothing
    git(root, "merge", "-q", "--ff-only", "feature")
    r = cli("apply", "--auto-approve")
    assert r.returncode == 0, r.stdout + r.stderr
    merged = json.loads(sorted((root / ".mlspec/state/runs").glob("*.json"))[-1].read_text())
    assert merged["workspace"] == "default"
    statuses = {a: s["status"] for a, s in merged["steps"].items() if a.startswith("step.")}
    assert {a for a, st in statuses.items() if st == "ran"} == set(), statuses
    assert {a for a, st in statuses.items() if st == "restored"} == {"step.report", "step.publish", "step.extra"}


def test_the_comment_of_a_2000_step_spec_stays_under_githubs_limit(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    lines = ["project: big", "datasets:", "  seed: {uri: data/nums.csv}", "steps:"]
    for i in range(2000):
        src = "dataset.seed" if i == 0 else f"step.s{i - 1:04d}.out"
        lines += [f"  s{i:04d}:", "    run: demo.steps:report", f"    inputs: {{raw: {src}}}",
                  "    outputs: [out]", f"    params: {{top: {i}, label: step-number-{i}}}"]
    make_repo(root)
    (root / "mlspec.yaml").write_text("\n".join(lines) + "\n")
    git(root, "commit", "-qam", "big")
    git(root, "checkout", "-qb", "every-param")
    (root / "mlspec.yaml").write_text("\n".join(lines).replace("label: step-number-", "label: renamed-step-") + "\n")
    r = run_cli("-C", str(root), "review", "--no-preflight")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) < 60_000
    assert r.stdout.startswith("<!-- mlspec-review project=big -->")
    assert "Spec diff</b>" in r.stdout and "2000 changed" in r.stdout and "2000 to run" in r.stdout
    assert "more changes; run `mlspec diff` for all of them" in r.stdout
    assert "more planned changes, cut to keep this comment under 60,000 characters" in r.stdout
    assert r.stdout.count("<details") == r.stdout.count("</details>") == 4
