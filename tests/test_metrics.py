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


NESTED_SPEC = """
project: demo
datasets:
  nums: {uri: data/nums.csv}
steps:
  fit:
    run: demo.live:fit
    inputs: {raw: dataset.nums}
    outputs: [model]
    metrics: [avg_prec, epochs, a_rather_long_metric_name_for_the_column]
  shell:
    cmd: 'echo "{\\"avg_prec\\": {\\"train\\": 0.5, \\"test\\": 0.25}, \\"step\\": 7}" > $MLSPEC_METRICS_FILE'
    metrics: [avg_prec.test, step]
models:
  clf:
    from: step.fit.model
    metrics: step.fit
    gates: {avg_prec.test: ">= 0.5"}
    select: {metric: avg_prec.train}
"""

LIVE = '''
import os


def fit(raw):
    bad = os.environ.get("BAD_METRIC")
    test = True if bad == "bool" else ("high" if bad == "text" else 0.8)
    return {"model": {"w": 1}, "avg_prec": {"train": 0.9, "test": test}, "epochs": 3,
            "a_rather_long_metric_name_for_the_column": 123456789.5}
'''


@pytest.fixture
def nested(project):
    project.write("mlspec.yaml", NESTED_SPEC)
    project.write("src/demo/live.py", LIVE)
    return project


def test_nested_metrics_are_recorded_with_dotted_names(nested):
    r = nested.run("validate")
    assert r.returncode == 0, r.stderr  # gates and select name dotted metrics
    r = nested.apply()
    assert r.returncode == 0, r.stderr
    res = nested.state()["resources"]
    assert res["step.fit"]["metrics"] == {"avg_prec.train": 0.9, "avg_prec.test": 0.8, "epochs": 3,
                                          "a_rather_long_metric_name_for_the_column": 123456789.5}
    assert isinstance(res["step.fit"]["metrics"]["epochs"], int)  # a count stays a count
    assert res["step.shell"]["metrics"] == {"avg_prec.train": 0.5, "avg_prec.test": 0.25, "step": 7}
    r = nested.run("metrics", "show")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["RESOURCE", "METRIC", "VALUE"]
    assert len({len(ln) for ln in lines}) == 1, r.stdout  # values right-aligned in one column
    cells = {tuple(ln.split()[:2]): ln.split()[2] for ln in lines[1:]}
    assert cells[("step.fit", "epochs")] == "3" and cells[("step.shell", "step")] == "7"
    assert cells[("step.fit", "avg_prec.test")] == "0.8000"
    assert cells[("step.fit", "a_rather_long_metric_name_for_the_column")] == "123456789.5000"
    # the diff: the counts change by integers
    nested.write("src/demo/live.py", LIVE.replace('"epochs": 3', '"epochs": 5'))
    assert nested.apply().returncode == 0
    r = nested.run("metrics", "diff")
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["RESOURCE", "METRIC", "BASE", "CURRENT", "CHANGE"]
    assert len({len(ln) for ln in lines[1:]}) == 1, r.stdout
    epochs = next(ln for ln in lines if " epochs " in ln)
    assert epochs.split()[2:] == ["3", "5", "+2"], r.stdout
    md = nested.run("metrics", "diff", "--format", "markdown").stdout
    assert "| `step.fit` | epochs | 3 | 5 | +2 |" in md, md


@pytest.mark.parametrize("bad,shown", [("bool", "avg_prec.test=True"), ("text", "avg_prec.test='high'")])
def test_a_nested_metric_that_is_not_a_number_fails_the_step_in_one_line(nested, bad, shown):
    r = nested.apply(env={"BAD_METRIC": bad})
    assert r.returncode == 1
    assert f"metrics must be numbers: {shown}" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_an_undeclared_dotted_gate_is_still_refused(nested):
    # under a declared `avg_prec` any dotted name may come at run time; a name under no declared one may not
    nested.write("mlspec.yaml", NESTED_SPEC.replace("avg_prec.test: ", "avg_prc.test: ")
                 .replace("metrics: [avg_prec, epochs", "metrics: [model.loss, avg_prec, epochs"))
    r = nested.run("validate")
    assert r.returncode == 1
    assert "models.clf.gates.avg_prc.test: gate on 'avg_prc.test', which the metrics step does not produce" \
        in r.stderr, r.stderr
    assert "'model.loss' is both an output and a metric of step 'fit'" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 3, r.stderr  # two errors and the summary
