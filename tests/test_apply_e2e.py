"""End to end through the CLI on a temporary project: the acceptance points of the apply issue."""

from __future__ import annotations

import json

ALL = {"step.prepare", "step.train[C=0.1]", "step.train[C=1.0]", "step.evaluate[C=0.1]", "step.evaluate[C=1.0]",
       "step.side"}


def test_first_apply_runs_everything_second_runs_nothing(project):
    r = project.apply()
    assert r.returncode == 0, r.stderr + r.stdout
    assert project.ran() == ALL
    assert "Apply complete: 6 ran" in r.stdout
    st = project.state()
    assert st["serial"] == 1
    assert st["resources"]["step.evaluate[C=1.0]"]["metrics"] == {"score": 42.0}
    r2 = project.apply()
    assert r2.returncode == 0
    assert "No changes. The lifecycle matches the spec." in r2.stdout
    assert len(project.runs()) == 1  # nothing to do: no run record, no new serial
    assert project.state()["serial"] == 1


def test_param_change_reruns_exactly_the_affected_steps_and_revert_restores(project):
    assert project.apply().returncode == 0
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("scale: 2.0", "scale: 3.0"))
    plan = project.run("plan", "--format", "json")
    changes = {c["address"]: c for c in json.loads(plan.stdout)["resource_changes"]}
    assert changes["step.prepare"]["reasons"][0]["message"] == "params.scale: 2.0 -> 3.0"
    assert changes["step.train[C=0.1]"]["verdict"] == "known after apply"
    assert changes["step.side"]["actions"] == ["no-op"]
    r = project.apply()
    assert r.returncode == 0, r.stderr
    assert project.ran() == ALL - {"step.side"}
    # revert: everything comes back from the run-cache, nothing executes
    project.write("mlspec.yaml", spec)
    plan = json.loads(project.run("plan", "--format", "json").stdout)
    verdicts = {c["address"]: c["verdict"] for c in plan["resource_changes"] if c["kind"] == "step"}
    assert verdicts["step.prepare"] == "restore"
    r = project.apply()
    assert r.returncode == 0, r.stderr
    run = project.last_run()
    assert project.ran(run) == set()
    restored = {a for a, s in run["steps"].items() if s["status"] == "restored"}
    assert restored == ALL - {"step.side"}
    assert project.state()["resources"]["step.evaluate[C=1.0]"]["metrics"] == {"score": 42.0}


def test_early_cutoff_identical_outputs_stop_the_ripple(project):
    project.write("src/demo/cut.py", """
def a(x):
    return {"out": {"positive": x > 0}}
def b(inp: dict):
    return {"out": inp}
""")
    spec = """
project: demo
steps:
  a: {run: demo.cut:a, outputs: [out], params: {x: 1}}
  b: {run: demo.cut:b, inputs: {inp: step.a.out}, outputs: [out]}
"""
    project.write("mlspec.yaml", spec)
    assert project.apply().returncode == 0
    project.write("mlspec.yaml", spec.replace("x: 1", "x: 2"))
    plan = project.run("plan")
    assert "step.b" in plan.stdout and "(known after apply)" in plan.stdout
    r = project.apply()
    assert r.returncode == 0, r.stderr
    run = project.last_run()
    assert project.ran(run) == {"step.a"}
    assert run["steps"]["step.b"]["status"] == "up-to-date"


def test_helper_module_change_reruns_its_importers(project):
    assert project.apply().returncode == 0
    project.write("src/demo/helpers.py", "def score(m):\n    return m['total'] * m['C'] + 1\n")
    plan = project.run("plan")
    assert "code src/demo/helpers.py:score changed" in plan.stdout
    r = project.apply()
    assert r.returncode == 0
    # evaluate() imports helpers lazily and calls helpers.score: it re-runs, and no other step does
    assert project.ran() == {"step.evaluate[C=0.1]", "step.evaluate[C=1.0]"}


def test_failing_step_skips_descendants_finishes_siblings_and_resumes(project):
    spec = (project.root / "mlspec.yaml").read_text()
    broken = spec.replace("run: demo.steps:train", "run: demo.steps:boom")
    project.write("mlspec.yaml", broken)
    r = project.apply()
    assert r.returncode == 1
    assert "ValueError: boom: this step always fails" in r.stdout
    assert "skipped   step.evaluate[C=0.1]  (upstream step.train[C=0.1] failed)" in r.stdout
    assert "Resume with" in r.stderr or "resume with" in r.stderr
    assert "Traceback" not in r.stderr
    st = project.state()["resources"]
    assert "step.side" in st and "step.prepare" in st  # the sibling branch and finished steps are saved
    assert "step.train[C=0.1]" not in st
    run = project.last_run()
    assert run["status"] == "failed"
    assert run["steps"]["step.evaluate[C=1.0]"]["status"] == "skipped"
    # fix it: the next apply runs only what remains
    project.write("mlspec.yaml", spec)
    r = project.apply()
    assert r.returncode == 0, r.stderr
    assert project.ran() == {"step.train[C=0.1]", "step.train[C=1.0]", "step.evaluate[C=0.1]", "step.evaluate[C=1.0]"}


def test_saved_plan_applies_once_and_refuses_when_stale(project):
    r = project.run("plan", "-o", "plan.json")
    assert r.returncode == 0
    r = project.run("apply", "plan.json")
    assert r.returncode == 0, r.stderr
    again = project.run("apply", "plan.json")
    assert again.returncode == 1
    assert "the saved plan is stale" in again.stderr and "no state" in again.stderr
    # a plan made against serial 1 is refused once another apply moved the state
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("scale: 2.0", "scale: 5.0"))
    assert project.run("plan", "-o", "p2.json").returncode == 0
    project.write("mlspec.yaml", spec.replace("scale: 2.0", "scale: 6.0"))
    r = project.run("apply", "p2.json")
    assert r.returncode == 1 and "the spec changed since the plan was made" in r.stderr
    project.write("mlspec.yaml", spec.replace("scale: 2.0", "scale: 5.0"))
    (project.root / "data/nums.csv").write_text("x,y\n9,9\n")
    r = project.run("apply", "p2.json")
    assert r.returncode == 1 and "dataset.nums has new content" in r.stderr


def test_apply_without_terminal_needs_auto_approve(project):
    r = project.run("apply")
    assert r.returncode == 1
    assert "--auto-approve" in r.stderr
    assert not (project.root / ".mlspec/state/default.state.json").exists()


def test_logs_metrics_lineage_artifacts(project, tmp_path):
    project.write("src/demo/steps.py", (project.root / "src/demo/steps.py").read_text().replace(
        'def side(raw: pd.DataFrame):\n', 'def side(raw: pd.DataFrame):\n    print("hello from side")\n'))
    assert project.apply().returncode == 0
    assert project.run("logs", "step.side").stdout.strip() == "hello from side"
    r = project.run("logs", "step.train")  # a step that fans out: the error names its instances
    assert r.returncode == 1 and "step.train fans out: name one instance: 'step.train[C=0.1]', 'step.train[C=1.0]'" \
        in r.stderr, r.stderr
    m = json.loads(project.run("metrics", "show", "--format", "json").stdout)
    assert {"address": "step.evaluate[C=0.1]", "metric": "score", "value": 4.2} in m
    lin = json.loads(project.run("lineage", "step.evaluate[C=1.0]", "--format", "json").stdout)
    model = lin["inputs"][0]
    assert model["address"] == "step.train[C=1.0].model"
    assert model["inputs"][0]["inputs"][0]["address"] == "dataset.nums"
    dest = tmp_path / "model.json"
    r = project.run("artifacts", "get", "step.train[C=1.0].model", str(dest))
    assert r.returncode == 0, r.stderr
    assert json.loads(dest.read_text())["C"] == 1.0


def test_retries_and_timeout(project):
    project.write("src/demo/flaky.py", '''
import os, time
def flaky(marker: str):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return {"out": {"ok": True}}
def slow():
    time.sleep(30)
    return {"out": {}}
''')
    marker = project.root / "marker"
    project.write("mlspec.yaml", f"""
project: demo
steps:
  flaky:
    run: demo.flaky:flaky
    outputs: [out]
    params: {{marker: "{marker}"}}
    retries: {{count: 2, backoff: 0.1}}
  slow:
    run: demo.flaky:slow
    outputs: [out]
    timeout: 2s
""")
    r = project.apply()
    assert r.returncode == 1
    assert "retry     step.flaky  attempt 1 failed: RuntimeError: first attempt fails" in r.stdout
    assert "done      step.flaky" in r.stdout
    assert "failed    step.slow  after" in r.stdout and "timed out after 2s" in r.stdout
    assert project.last_run()["steps"]["step.slow"]["duration"] < 15


def test_fail_fast_stops_everything_at_the_first_failure(project):
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("src/demo/slowside.py", "import time\ndef side(raw):\n    time.sleep(20)\n    return {'summary': {}}\n")
    project.write("mlspec.yaml", spec.replace("run: demo.steps:train", "run: demo.steps:boom")
                  .replace("run: demo.steps:side", "run: demo.slowside:side"))
    r = project.apply("--fail-fast")
    assert r.returncode == 1
    run = project.last_run()
    statuses = {a: s["status"] for a, s in run["steps"].items()}
    assert "failed" in statuses.values()
    assert statuses["step.side"] in ("cancelled", "not-run")  # the slow sibling was stopped, not finished
    assert run["finished"] - run["started"] < 15


def test_run_cache_is_shared_by_workspaces_on_one_store(project):
    assert project.apply().returncode == 0
    r = project.apply("++storage.workspace=staging")
    assert r.returncode == 0, r.stderr
    run = project.last_run()
    # the run record lists every resource: the dataset is read (recorded for this workspace), steps restored
    assert {s["status"] for a, s in run["steps"].items() if a.startswith("step.")} == {"restored"}
    assert run["steps"]["dataset.nums"]["status"] == "read"
    assert (project.root / ".mlspec/state/staging.state.json").exists()
    # the same with the option (and its environment variable)
    r = project.run("-w", "qa", "apply", "--auto-approve")
    assert r.returncode == 0 and "restored" in r.stdout
    r = project.run("state", "list", env={"MLSPEC_WORKSPACE": "qa"})
    assert "step.prepare" in r.stdout
    assert project.run("state", "list", "-w", "nope").stdout.startswith("No state yet")


def test_markdown_plan_stays_under_the_comment_limit(project):
    lines = ["project: wide", "steps:"]
    for i in range(1500):
        lines.append(f"  a_very_long_step_name_to_fill_the_comment_{i:04d}: {{run: demo.steps:side, "
                     f"inputs: {{raw: dataset.nums}}, outputs: [summary]}}")
    lines += ["datasets:", "  nums: {uri: data/nums.csv}"]
    project.write("mlspec.yaml", "\n".join(lines) + "\n")
    r = project.run("plan", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) < 60_000
    assert "more changes, cut to keep this comment under 60,000 characters" in r.stdout
