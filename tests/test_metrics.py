"""Metrics as a DVC user knows them: nested values flattened to dotted names, `metrics diff` against a state
(the previous serial, a workspace, a run, or a git revision), aligned columns, counts printed as integers."""

from __future__ import annotations

import json
import subprocess

import pytest


def _rows(r) -> dict:
    assert r.returncode == 0, r.stderr
    return {(x["address"], x["metric"]): x for x in json.loads(r.stdout)["rows"]}


def test_diff_after_target_runs_compares_with_the_previous_state(project):
    """The defect: the default base was "the latest run whose metrics differ", a run record that holds only the
    steps it ran; after a `--target` apply every other step's BASE was `-`."""
    assert project.apply().returncode == 0
    helpers = "src/demo/helpers.py"
    project.write(helpers, "def score(m):\n    return m['total'] * m['C'] * 2\n")
    assert project.apply("--target", "step.evaluate[C=0.1]").returncode == 0
    project.write(helpers, "def score(m):\n    return m['total'] * m['C'] * 3\n")
    assert project.apply("--target", "step.evaluate[C=0.1]").returncode == 0
    rows = _rows(project.run("metrics", "diff", "--format", "json"))
    low, high = rows[("step.evaluate[C=0.1]", "score")], rows[("step.evaluate[C=1.0]", "score")]
    assert (low["base"], low["current"]) == pytest.approx((8.4, 12.6))
    assert low["change"] == pytest.approx(4.2)
    assert high["base"] == high["current"] == 42.0 and high["change"] == 0  # not "-": it did not run, it is there
    r = project.run("metrics", "diff")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("step.evaluate[C=1.0]"))
    assert line.split()[2:] == ["42.0000", "42.0000", "+0.0000"], r.stdout


def _git(root, *args):
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def test_base_forms_serial_workspace_run_and_git_revision(project):
    _git(project.root, "init", "-q")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-qm", "first")
    assert project.apply().returncode == 0
    first_run = project.last_run()["run_id"]
    project.write("src/demo/helpers.py", "def score(m):\n    return m['total'] * m['C'] * 2\n")
    _git(project.root, "commit", "-qam", "double")
    assert project.apply().returncode == 0
    _git(project.root, "commit", "-q", "--allow-empty", "-m", "later, not applied")
    serial = project.state()["serial"]
    key = ("step.evaluate[C=1.0]", "score")
    for base in (None, str(serial - 1), f"serial:{serial - 1}", f"run:{first_run}", first_run, "HEAD~2",
                 "rev:HEAD~2"):
        r = project.run("metrics", "diff", "--format", "json", *(["--base", base] if base else []))
        rows = _rows(r)
        assert (rows[key]["base"], rows[key]["current"]) == (42.0, 84.0), base
        assert json.loads(r.stdout)["base"]["serial"] == serial - 1, base
    # HEAD was never applied: its newest applied ancestor is HEAD~1, the current state
    r = project.run("metrics", "diff", "--format", "json", "--base", "HEAD")
    assert json.loads(r.stdout)["base"]["serial"] == serial and _rows(r)[key]["change"] == 0
    assert json.loads(r.stdout)["base"]["commit"] == subprocess.run(
        ["git", "rev-parse", "HEAD~1"], cwd=project.root, capture_output=True, text=True).stdout.strip()
    # another workspace
    assert project.apply("-w", "staging").returncode == 0
    rows = _rows(project.run("metrics", "diff", "--base", "workspace:staging", "--format", "json"))
    assert rows[key]["base"] == rows[key]["current"] == 84.0


@pytest.mark.parametrize("base,words", [
    ("no-such-branch", ["--base no-such-branch: not a state serial", "git does not know"]),
    ("99", ["no kept state with serial 99"]),
    ("workspace:nowhere", ["workspace 'nowhere' has no state"]),
    ("run:r2000", ["no run 'r2000'"]),
])
def test_a_bad_base_is_one_line(project, base, words):
    assert project.apply().returncode == 0
    r = project.run("metrics", "diff", "--base", base)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("Error: ") and all(w in r.stderr for w in words), r.stderr


def test_no_earlier_state_is_one_line(project):
    r = project.run("metrics", "diff")
    assert r.returncode == 1 and "nothing is recorded yet" in r.stderr and "Traceback" not in r.stderr
    assert project.apply().returncode == 0
    r = project.run("metrics", "diff")
    assert r.returncode == 1 and "no state serial before 1" in r.stderr and "Traceback" not in r.stderr
