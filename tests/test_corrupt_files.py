"""Files that are readable but wrong (a state document `null`, a torn journal entry, a truncated run record, a plan
file with keys missing, an unparseable or stale lock, NaN metrics): one-line errors naming the file and the way
out (exit 1), or a warning where skipping is safe; never "internal error". Everything through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli

STATE = Path(".mlspec/state")


def _no_bug(r: subprocess.CompletedProcess) -> None:
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 1), (r.returncode, r.stdout, r.stderr)


def _error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: exit 1, an `Error:` line, and each needle in the output."""
    _no_bug(r)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Error: " in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, f"{n!r} not in:\n{r.stderr}"


def _two_serials(project) -> Path:
    """Apply twice (serials 1 and 2, serial 1 kept in history); return the state directory."""
    assert project.apply().returncode == 0
    assert project.apply("--replace", "step.side").returncode == 0
    return project.root / STATE


# --- the state document ------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["null", "[]", '"x"', '{"lineage": 1, "serial": "2", "resources": []}',
                                     "TRUNCATE"], ids=["null", "list", "string", "wrong-types", "truncated"])
def test_corrupt_state_document_names_file_and_restore(project, content):
    d = _two_serials(project)
    doc = d / "default.state.json"
    doc.write_text(doc.read_text()[:60] if content == "TRUNCATE" else content)
    for cmd in (["plan"], ["state", "list"], ["apply", "--auto-approve"], ["metrics", "show"]):
        r = project.run(*cmd)
        _error(r, str(doc), "is corrupt", "mlspec state restore 1")
        assert len(r.stderr.strip().splitlines()) == 2, r.stderr  # one error line and its hint
    # history works while the current document is corrupt, and points at the way out
    r = project.run("state", "history")
    _no_bug(r)
    assert r.returncode == 0 and "serial 1" in r.stdout and "unreadable" in r.stdout, r.stdout
    assert "mlspec state restore 1" in r.stdout
    r = project.run("state", "restore", "1")
    assert r.returncode == 0, r.stderr
    r = project.run("state", "list")
    assert r.returncode == 0 and "step.side" in r.stdout


def test_corrupt_kept_serial_is_an_error_too(project):
    d = _two_serials(project)
    (d / "default.history" / "1.json").write_text("[]")
    r = project.run("state", "restore", "1")
    _error(r, "1.json", "corrupt")


def test_state_push_rejects_a_document_of_the_wrong_shape(project, tmp_path):
    assert project.apply().returncode == 0
    (tmp_path / "bad.json").write_text('{"lineage": "x", "serial": 1, "resources": {"step.a": 3}}')
    _error(project.run("state", "push", str(tmp_path / "bad.json")), "not a state document", "step.a")


# --- the journal -------------------------------------------------------------------------------------------
def _journal_entry(project, seq: int, address: str) -> None:
    """A well-formed journal entry for ``address`` (as an apply that died before compacting leaves one)."""
    from mlspec.state import StateStore
    from mlspec.storage import Location

    store = StateStore(Location(str(project.root / STATE)), "default")
    st = store.read("demo")
    rec = dict(st.resources[address], run_id="r-journal")
    store.append(st, seq, address, rec)


def test_torn_journal_tail_is_skipped_with_a_warning(project):
    d = _two_serials(project)
    _journal_entry(project, 1, "step.side")
    torn = d / "default.journal" / "000000002.json"
    torn.write_text('{"lineage": "x", "seq": 2, "addr')
    r = project.run("plan")
    _no_bug(r)
    assert r.returncode == 0, r.stderr
    assert "Warning: skipped the last journal entry" in r.stderr and str(torn) in r.stderr
    assert r.stderr.count("Warning") == 1
    r = project.run("state", "show", "step.side", "--format", "json")
    assert json.loads(r.stdout)["run_id"] == "r-journal"  # the good entry before it still counts
    r = project.apply()
    assert r.returncode == 0 and "skipped the last journal entry" in r.stderr, r.stderr
    assert not list((d / "default.journal").glob("*.json"))  # compacted: the torn entry is gone


@pytest.mark.parametrize("content", ["[]", '{"lineage": "x", "seq"', "null"], ids=["list", "torn", "null"])
def test_damaged_journal_entry_before_the_tail_is_an_error(project, content):
    d = _two_serials(project)
    (d / "default.journal").mkdir(exist_ok=True)
    bad = d / "default.journal" / "000000001.json"
    bad.write_text(content)
    _journal_entry(project, 2, "step.side")
    for cmd in (["plan"], ["apply", "--auto-approve"], ["state", "list"]):
        _error(project.run(*cmd), str(bad), "is corrupt", f"rm {bad}")
    bad.unlink()
    assert project.run("plan").returncode == 0


def test_journal_entry_that_is_a_list_alone_is_a_skipped_tail(project):
    d = _two_serials(project)
    (d / "default.journal").mkdir(exist_ok=True)
    (d / "default.journal" / "000000001.json").write_text("[1, 2]")
    r = project.run("plan")
    _no_bug(r)
    assert r.returncode == 0 and "skipped the last journal entry" in r.stderr


# --- run records -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["TRUNCATE", "[]", '{"run_id": "x", "status": "running"}'],
                         ids=["truncated", "list", "missing-keys"])
def test_corrupt_run_record_is_listed_not_fatal(project, content):
    assert project.apply().returncode == 0
    rec = sorted((project.root / STATE / "runs").glob("*.json"))[-1]
    rec.write_text(rec.read_text()[:100] if content == "TRUNCATE" else content)
    r = project.apply("--replace", "step.side")  # does not block apply
    _no_bug(r)
    assert r.returncode == 0, r.stderr
    r = project.run("runs", "list")
    _no_bug(r)
    assert r.returncode == 0 and f"{rec.stem}  corrupt" in r.stdout and "succeeded" in r.stdout, r.stdout
    r = project.run("runs", "list", "--format", "json")
    assert [x["status"] for x in json.loads(r.stdout)] == ["corrupt", "succeeded"]
    _error(project.run("runs", "show", rec.stem), str(rec), "is corrupt", "mv ")
    r = project.run("logs", "step.side")
    _no_bug(r)
    assert r.returncode == 0
    r = project.run("metrics", "diff")  # looks back through the run records
    _no_bug(r)


# --- saved plans -------------------------------------------------------------------------------------------
def _drop(path: tuple):
    def edit(bundle):
        d = bundle
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return edit


def _set(path: tuple, value):
    def edit(bundle):
        d = bundle
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit", [_drop(("plan",)), _drop(("overrides",)), _drop(("plan", "state")),
                                  _drop(("plan", "state", "serial")), _drop(("plan", "workspace")),
                                  _drop(("plan", "spec_digest")), _set(("plan", "resource_changes"), [1]),
                                  _set(("new_state",), []), _set(("plan", "summary"), {}),
                                  _set(("overrides",), "x=1")],
                         ids=["plan", "overrides", "state", "serial", "workspace", "digest", "changes", "new-state",
                              "summary", "overrides-string"])
def test_saved_plan_with_missing_keys_is_refused(project, edit):
    assert project.run("plan", "-o", "p.json").returncode in (0, 2)
    p = project.root / "p.json"
    bundle = json.loads(p.read_text())
    edit(bundle)
    p.write_text(json.dumps(bundle))
    for cmd in (["apply", "p.json"], ["show", "p.json"]):
        _error(project.run(*cmd), "p.json", "damaged saved plan", "mlspec plan -o FILE")


# --- restore never reuses a serial ----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["none", "head", "after-serial"])
def test_restore_gets_a_new_serial_so_an_older_saved_plan_is_stale(project, damage):
    d = _two_serials(project)
    assert project.run("plan", "-o", "p.json").returncode in (0, 2)
    doc = d / "default.state.json"
    text = doc.read_text()
    if damage == "head":  # the serial is lost from the document: the run records still know it
        doc.write_text(text[:20])
    elif damage == "after-serial":  # no run records: the damaged document still says its serial
        cut = text.index('"serial"') + 20
        doc.write_text(text[:cut])
        for rec in (d / "runs").glob("*.json"):
            rec.unlink()
    r = project.run("state", "restore", "1")
    assert r.returncode == 0, r.stderr
    assert "as serial 3" in r.stdout, r.stdout
    r = project.run("apply", "p.json")
    _error(r, "stale")
    assert "serial 2 to 3" in r.stderr


# --- locks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "[1]", '{"id": 5}', '{"id": "x", "created": 1e400}', '{"id": "x", "pid": "1"}',
                                     "{"], ids=["empty", "list", "id-number", "created-inf", "pid-string", "torn"])
def test_unreadable_lock_names_the_file_and_the_unlock(project, content):
    assert project.apply().returncode == 0
    lock = project.root / STATE / "default.lock"
    lock.write_text(content)
    for cmd in (["apply", "--auto-approve", "--replace", "step.side"], ["state", "rm", "step.side"]):
        _error(project.run(*cmd), str(lock), "unreadable", "mlspec state unlock unreadable --force")
    r = project.run("plan")  # plan only warns
    _no_bug(r)
    assert r.returncode == 0 and "unreadable lock file" in r.stderr
    r = project.run("state", "unlock", "unreadable", "--force")
    assert r.returncode == 0, r.stderr
    assert project.apply("--replace", "step.side").returncode == 0


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(project, host: str, pid: int, run_id: str = "r20200101-000000-000abc") -> dict:
    lock = {"id": "0d1e2f3a-dead-lock", "who": "someone@" + host, "operation": "apply", "created": time.time() - 60,
            "run_id": run_id, "pid": pid, "host": host}
    (project.root / STATE / "default.lock").write_text(json.dumps(lock))
    return lock


def test_stale_lock_on_this_host_is_broken_automatically(project):
    assert project.apply().returncode == 0
    pid = _dead_pid()
    old_run = "r20200101-000000-000abc"
    (project.root / STATE / "runs" / f"{old_run}.json").write_text(json.dumps(
        {"run_id": old_run, "status": "running", "started": time.time() - 60, "finished": None, "steps": {},
         "workspace": "default", "user": "someone", "host": socket.gethostname()}))
    _write_lock(project, socket.gethostname(), pid, old_run)
    r = project.apply("--replace", "step.side")
    _no_bug(r)
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "broke a stale lock" in ln]
    assert len(notes) == 1 and "0d1e2f3a-dead-lock" in notes[0] and f"pid {pid}" in notes[0], r.stderr
    assert not (project.root / STATE / "default.lock").exists()
    runs = {x["run_id"]: x for x in project.runs()}
    assert runs[old_run]["status"] == "crashed"
    new_run = project.last_run()["run_id"]
    assert runs[old_run]["lock_broken_by"] == new_run
    # state commands break one too
    _write_lock(project, socket.gethostname(), _dead_pid())
    r = project.run("state", "rm", "step.side")
    assert r.returncode == 0 and "broke a stale lock" in r.stderr, r.stderr


def test_stale_lock_broken_is_recorded_in_the_run_record(project):
    assert project.apply().returncode == 0
    _write_lock(project, socket.gethostname(), _dead_pid())
    assert project.apply("--replace", "step.side").returncode == 0
    assert project.last_run()["broke_stale_lock"]["id"] == "0d1e2f3a-dead-lock"


@pytest.mark.parametrize("where", ["other-host", "live-pid"])
def test_lock_from_another_host_or_a_live_process_keeps_the_manual_path(project, where):
    assert project.apply().returncode == 0
    if where == "other-host":
        _write_lock(project, "build-agent-7.example", 1)
    else:
        _write_lock(project, socket.gethostname(), os.getpid())
    r = project.apply("--replace", "step.side")
    _error(r, "0d1e2f3a-dead-lock", "mlspec state unlock 0d1e2f3a-dead-lock")
    assert "broke" not in r.stderr
    if where == "other-host":
        assert "on build-agent-7.example" in r.stderr
    assert (project.root / STATE / "default.lock").exists()


# --- NaN and infinite metrics ------------------------------------------------------------------------------
NAN_SPEC = """
project: demo
datasets:
  nums: {uri: data/nums.csv}
steps:
  odd:
    run: demo.odd:odd
    inputs: {raw: dataset.nums}
    outputs: [table]
    metrics: [loss, big, small, fine]
  after:
    run: demo.odd:after
    inputs: {table: step.odd.table}
    metrics: [done]
"""

NAN_STEPS = '''
import os, time


def odd(raw):
    return {"table": raw, "loss": float("nan"), "big": float("inf"), "small": float("-inf"), "fine": 0.5}


def after(table):
    gate = os.environ.get("MLSPEC_TEST_GATE")
    deadline = time.time() + 60
    while gate and not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.05)
    return {"done": 1.0}
'''


def _strict(path: Path):
    def refuse(token):
        raise ValueError(f"{path}: {token} is not JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _json_files(root: Path, skip=()) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix == ".json"
            and not any(s in p.parts for s in skip)]


@pytest.fixture
def nan_project(project):
    project.write("mlspec.yaml", NAN_SPEC)
    project.write("src/demo/odd.py", NAN_STEPS)
    return project


def test_nan_metrics_are_stored_as_valid_json_and_shown_as_nan(nan_project, tmp_path):
    p = nan_project
    gate = tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(p.root), "apply", "--auto-approve"],
                            env=dict(os.environ, NO_COLOR="1", MLSPEC_TEST_GATE=str(gate)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal = p.root / STATE / "default.journal"

        def odd_entries():
            return [e for e in map(_strict, journal.glob("*.json")) if e["address"] == "step.odd"]

        deadline = time.time() + 60
        while not odd_entries() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        entries = odd_entries()
        assert entries, "the apply journaled nothing for step.odd"
        assert entries[0]["record"]["metrics"]["loss"] == "nan"  # journal entries written while the apply runs
        running = [_strict(r) for r in (p.root / STATE / "runs").glob("*.json")]
        assert running and running[0]["status"] == "running"
    finally:
        gate.write_text("go")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    files = _json_files(p.root / ".mlspec", skip=("runcache",))
    assert any("state.json" in f.name for f in files) and any(f.parent.name == "runs" for f in files)
    for f in files:  # every state, history and run record file parses as strict JSON
        _strict(f)
    doc = _strict(p.root / STATE / "default.state.json")
    assert doc["resources"]["step.odd"]["metrics"] == {"loss": "nan", "big": "inf", "small": "-inf", "fine": 0.5}
    run = _strict(sorted((p.root / STATE / "runs").glob("*.json"))[-1])
    assert run["steps"]["step.odd"]["metrics"]["big"] == "inf"
    # read back as numbers, shown as nan / inf
    r = p.run("metrics", "show")
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[1]: ln.split()[2] for ln in r.stdout.splitlines() if ln.startswith("step.odd")}
    assert rows == {"big": "inf", "fine": "0.5000", "loss": "nan", "small": "-inf"}, r.stdout
    r = p.run("metrics", "show", "--format", "json")
    values = {x["metric"]: x["value"] for x in json.loads(r.stdout, parse_constant=lambda t: 1 / 0)}
    assert values["loss"] == "nan" and values["fine"] == 0.5
    r = p.run("state", "show", "step.odd")
    assert "metrics.loss = nan" in r.stdout and "metrics.small = -inf" in r.stdout, r.stdout
    json.loads(p.run("state", "show", "step.odd", "--format", "json").stdout, parse_constant=lambda t: 1 / 0)
    json.loads(p.run("runs", "show", "latest", "--format", "json").stdout, parse_constant=lambda t: 1 / 0)
    r = p.run("runs", "show", "latest")
    assert r.returncode == 0
    # a second apply compares, restores and records the same values without tripping over them
    r = p.apply("--replace", "step.odd", env={"MLSPEC_TEST_GATE": ""})
    assert r.returncode == 0, r.stderr
    r = p.run("metrics", "diff")
    _no_bug(r)
    r = p.run("plan")
    assert r.returncode == 0 and "No changes" in r.stdout, r.stdout


def test_nan_metrics_in_the_run_cache_are_valid_json(nan_project):
    r = nan_project.apply(env={"MLSPEC_TEST_GATE": ""})
    assert r.returncode == 0, r.stderr
    files = [f for f in _json_files(nan_project.root / ".mlspec") if "runcache" in f.parts]
    assert files
    for f in files:
        _strict(f)


# --- workspaces share runs/ ----------------------------------------------------------------------------------
WS_SPEC = """
project: demo
datasets:
  nums: {uri: data/nums.csv}
steps:
  slow:
    run: demo.odd:after
    inputs: {table: dataset.nums}
    metrics: [done]
"""


def test_apply_in_one_workspace_does_not_mark_anothers_running_apply_crashed(project, tmp_path):
    project.write("mlspec.yaml", WS_SPEC)
    project.write("src/demo/odd.py", NAN_STEPS)
    gate = tmp_path / "gate"
    a = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(project.root), "-w", "a", "apply",
                          "--auto-approve"], env=dict(os.environ, NO_COLOR="1", MLSPEC_TEST_GATE=str(gate)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = project.root / STATE / "runs"
        deadline = time.time() + 60
        rec_a = None
        while rec_a is None and time.time() < deadline and a.poll() is None:
            for f in runs.glob("*.json"):
                try:
                    rec = json.loads(f.read_text())
                except ValueError:
                    continue
                if rec.get("workspace") == "a" and rec.get("status") == "running":
                    rec_a = f
            time.sleep(0.05)
        assert rec_a is not None, "workspace a's apply did not start"
        b = run_cli("-C", str(project.root), "-w", "b", "apply", "--auto-approve", env={"MLSPEC_TEST_GATE": ""})
        assert b.returncode == 0, b.stderr
        assert json.loads(rec_a.read_text())["status"] == "running"
    finally:
        gate.write_text("go")
        out, err = a.communicate(timeout=120)
    assert a.returncode == 0, out + err
    assert json.loads(rec_a.read_text())["status"] == "succeeded"
    # and an apply whose process died IS marked crashed, in its own workspace or from another one
    rec = json.loads(rec_a.read_text())
    rec.update(status="running", run_id="r20200101-000000-000def")
    (runs / "r20200101-000000-000def.json").write_text(json.dumps(rec))
    b = run_cli("-C", str(project.root), "-w", "b", "apply", "--auto-approve", "--replace", "step.slow",
                env={"MLSPEC_TEST_GATE": ""})
    assert b.returncode == 0, b.stderr
    assert json.loads((runs / "r20200101-000000-000def.json").read_text())["status"] == "crashed"
