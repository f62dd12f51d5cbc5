"""Retraining triggers and `mlspec reconcile` through the CLI: schedules against the recorded last run, dataset
changes, cooldowns, the clock given by --now, idempotent reconcile passes and the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


TRIGGERS = """
triggers:
  hourly: {schedule: "0 * * * *", apply: [step.side]}
  fresh-data: {dataset: dataset.nums, apply: [step.prepare], cooldown: 1h}
"""


def _check(project, *args) -> dict:
    r = project.run("triggers", "check", "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return {t["name"]: t for t in json.loads(r.stdout)["triggers"]}


def _finished(project, addr: str) -> float:
    return project.state()["resources"][addr]["finished"]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.fixture
def trig(project):
    project.write("mlspec.yaml", project.root.joinpath("mlspec.yaml").read_text() + TRIGGERS)
    return project


def test_schedule_follows_the_last_recorded_run(trig):
    before = _check(trig, "--now", "2026-12-01T10:30:00Z")
    assert before["hourly"]["fired"] and "never ran" in before["hourly"]["why"]
    assert trig.apply().returncode == 0
    done = _finished(trig, "step.side")
    # the next tick of "0 * * * *" after the run: not yet at the run's own time, fired an hour later
    t = _check(trig, "--now", str(done))["hourly"]
    assert not t["fired"] and "next tick" in t["why"], t
    later = (int(done) // 3600 + 1) * 3600 + 1
    t = _check(trig, "--now", str(later))["hourly"]
    assert t["fired"] and "ticked at" in t["why"] and t["values"]["tick"] <= later, t
    # text: the table and the clock behind the decision
    r = trig.run("triggers", "check", "--now", _iso(later))
    assert r.returncode == 0, r.stderr
    assert "hourly" in r.stdout and "yes" in r.stdout and "given by --now" in r.stdout
    assert _iso(later).replace("T", " ").replace("Z", " UTC") in r.stdout


def test_dataset_trigger_fires_on_new_content_only(trig):
    assert trig.apply().returncode == 0
    assert not _check(trig)["fresh-data"]["fired"]
    trig.write("data/nums.csv", "x,y\n1,2\n3,4\n5,6\n7,8\n")
    t = _check(trig)["fresh-data"]
    assert t["fired"] and "changed" in t["why"] and t["values"]["recorded"] != t["values"]["current"]
    r = trig.run("triggers", "check", "fresh-data", "--detailed-exitcode")
    assert r.returncode == 2, r.stdout + r.stderr


def test_reconcile_applies_what_fired_then_cools_down_and_is_idempotent(trig):
    assert trig.apply().returncode == 0
    runs_before = len(trig.runs())
    # nothing fired: one line, exit 0, nothing recorded
    serial = trig.state()["serial"]
    r = trig.run("reconcile", "--now", str(_finished(trig, "step.side") + 1))
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout
    assert trig.state()["serial"] == serial and len(trig.runs()) == runs_before
    # new data: the dataset trigger fires; its target and what follows from it run, the unrelated branch does not
    trig.write("data/nums.csv", "x,y\n1,2\n3,4\n5,6\n7,8\n")
    now = time.time()
    r = trig.run("reconcile", "--now", str(now))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trigger.fresh-data: fires" in r.stdout
    ran = trig.ran()
    assert "step.prepare" in ran and "step.evaluate[C=1.0]" in ran and "step.side" not in ran, ran
    rec = trig.state()["resources"]["trigger.fresh-data"]
    assert rec["kind"] == "trigger" and rec["last_fired"] == pytest.approx(now) and len(rec["fired"]) == 1
    # the second pass in a row does nothing
    serial = trig.state()["serial"]
    r = trig.run("reconcile", "--now", str(now + 5))
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout
    assert trig.state()["serial"] == serial
    # inside the cooldown a trigger whose condition holds does not fire, and says until when
    trig.write("data/nums.csv", "x,y\n1,2\n")
    t = _check(trig, "--now", str(now + 60))["fresh-data"]
    assert t["condition"] and not t["fired"] and t["cooling_until"] == pytest.approx(now + 3600)
    assert "in cooldown until" in t["why"]
    r = trig.run("reconcile", "--now", str(now + 60), "--dry-run")
    assert r.returncode == 0 and "cooldown" in r.stdout
    # after it, it fires
    assert _check(trig, "--now", str(now + 3601))["fresh-data"]["fired"]


def test_reconcile_dry_run_applies_nothing(trig):
    r = trig.run("reconcile", "--dry-run", "--now", "2026-12-01T10:30:00Z")
    assert r.returncode == 0, r.stderr
    assert "Dry run" in r.stdout and "step.side" in r.stdout
    assert not (trig.root / ".mlspec/state/default.state.json").exists() or not trig.state()["resources"]


def test_reconcile_while_an_apply_holds_the_lock_exits_4(trig, tmp_path):
    trig.write("src/demo/slow.py", "import time\n\ndef wait():\n    time.sleep(60)\n    return {}\n")
    trig.write("mlspec.yaml", trig.root.joinpath("mlspec.yaml").read_text()
               + "  # a slow step holds the lock\n")
    spec = trig.root.joinpath("mlspec.yaml").read_text().replace(
        "steps:\n", "steps:\n  slow: {run: demo.slow:wait}\n", 1)
    trig.write("mlspec.yaml", spec)
    env = dict(os.environ, NO_COLOR="1")
    p = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(trig.root), "apply", "--auto-approve",
                          "--target", "step.slow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        lock = trig.root / ".mlspec/state/default.lock"
        deadline = time.time() + 60
        while not lock.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert lock.exists()
        r = trig.run("reconcile")
        assert r.returncode == 4, r.stdout + r.stderr
        assert "Reconcile skipped" in r.stderr and "Nothing was done" in r.stderr
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=60)


def test_bad_now_is_one_line(trig):
    r = trig.run("triggers", "check", "--now", "yesterday")
    assert r.returncode == 1
    assert "--now 'yesterday' is not a time" in r.stderr and "Traceback" not in r.stderr


def test_unknown_trigger_name(trig):
    r = trig.run("triggers", "check", "hourli")
    assert r.returncode == 1 and "did you mean 'hourly'" in r.stderr
