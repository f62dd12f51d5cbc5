"""No process outlives its apply: kill -9 of mlspec alone, successful applies, timeouts; stale temp dirs.

Every process an apply starts inherits the environment of the mlspec process, so a unique variable set
on mlspec (``MARK``) finds all of them in /proc: mlspec, its workers and their sentinels, the steps and
whatever the steps fork (``sleep 300`` grandchildren here).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds processes through /proc")

MARK = "MLSPEC_TEST_PROCESS_MARK"

STEPS = '''
import os, subprocess, time


def _marker(name):
    fd = os.open("markers.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{name} finished {time.time():.6f} {os.environ.get('MLSPEC_TEST_PROCESS_MARK')}\\n".encode())
    os.close(fd)


def work(name: str, prev=None):
    subprocess.Popen(["sleep", "300"])  # a grandchild nobody waits for
    time.sleep(0.1)
    _marker(name)
    return {"out": {"name": name}}
'''

# two parallel chains of python and cmd steps, joined at the end
CMD = ("sleep 300 & sleep 0.1; printf '%s finished %s %s\\n' {name} \"$(date +%s.%N)\" "
       "\"$MLSPEC_TEST_PROCESS_MARK\" >> markers.txt; "
       "echo {name} > ${{outputs.out}}")  # the grandchild, the body, the marker when the body completes


def _spec(fresh: bool = False) -> str:
    lines = ["project: procs"]
    if fresh:
        lines.append("backend: {type: local, fresh_process: true}")
    lines.append("steps:")

    def py(name, prev=None):
        inp = f", inputs: {{prev: step.{prev}.out}}" if prev else ""
        return f"  {name}: {{run: demo.procs:work, outputs: [out], params: {{name: {name}}}{inp}}}"

    def cmd(name, prev):
        return (f"  {name}:\n    cmd: |-\n      {CMD.format(name=name)}\n    outputs: [out]\n"
                f"    inputs: {{prev: step.{prev}.out}}")

    lines += [py("p1"), cmd("c1", "p1"), py("p2", "c1"), cmd("c2", "p2"),
              py("q1"), py("q2", "q1"), cmd("q3", "q2"), py("q4", "q3"), cmd("join", "c2")]
    return "\n".join(lines) + "\n"


STEP_NAMES = ["p1", "c1", "p2", "c2", "q1", "q2", "q3", "q4", "join"]


def _make(project, fresh: bool = False):
    project.write("mlspec.yaml", _spec(fresh))
    project.write("src/demo/procs.py", STEPS)


def marked_processes(token: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live, non-zombie process whose environment carries MARK=token."""
    needle = f"{MARK}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
            if needle not in env.split(b"\0"):
                continue
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(name), cmd))
    return found


def _kill_all(procs):
    for pid, _ in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _env(token: str, tmpdir: Path) -> dict:
    return {MARK: token, "TMPDIR": str(tmpdir), "NO_COLOR": "1"}


def _markers(project, token: str) -> list[tuple[str, float]]:
    """(step, time) of each step body that completed in the apply whose processes carry ``token``."""
    p = project.root / "markers.txt"
    out = []
    for line in (p.read_text().splitlines() if p.exists() else ()):
        name, word, ts, mark = line.split()
        assert word == "finished", line
        if mark == token:
            out.append((name, float(ts)))
    return out


@pytest.mark.parametrize("fresh", [False, True], ids=["pooled", "fresh_process"])
def test_successful_apply_leaves_no_process_behind(project, tmp_path, fresh):
    _make(project, fresh)
    token, tmpdir = uuid.uuid4().hex, tmp_path / "tmp"
    tmpdir.mkdir()
    try:
        r = project.apply(env=_env(token, tmpdir))
        assert r.returncode == 0, r.stdout + r.stderr
        assert project.ran() == {f"step.{n}" for n in STEP_NAMES}
        # the grandchildren were killed when their step ended, before mlspec heard of the result
        left = [p for p in marked_processes(token) if p[1].startswith("sleep")]
        assert left == [], left
        deadline = time.monotonic() + 2  # the workers' sentinels exit right after their workers
        while marked_processes(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marked_processes(token) == []
        assert list(tmpdir.glob("mlspec-local-*")) == []  # the backend removed its temp dir
    finally:
        _kill_all(marked_processes(token))


def test_timed_out_step_takes_its_grandchildren_with_it(project, tmp_path):
    project.write("mlspec.yaml", """
project: procs
steps:
  hang: {cmd: "sleep 300 & sleep 200; echo > ${outputs.out}", outputs: [out], timeout: 1s}
""")
    token, tmpdir = uuid.uuid4().hex, tmp_path / "tmp"
    tmpdir.mkdir()
    try:
        r = project.apply(env=_env(token, tmpdir))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "timed out after 1s" in r.stdout + r.stderr
        deadline = time.monotonic() + 2
        while marked_processes(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marked_processes(token) == []
    finally:
        _kill_all(marked_processes(token))


def test_temp_dirs_of_dead_mlspec_processes_are_removed_on_next_start(project, tmp_path):
    project.write("mlspec.yaml", "project: t\nsteps:\n  a: {cmd: 'echo > ${outputs.out}', outputs: [out]}\n")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that belonged to a process that is gone now
    stale = tmpdir / f"mlspec-local-{dead.pid}-abcd1234"
    (stale / "t-x").mkdir(parents=True)
    (stale / "t-x" / "log.txt").write_text("left by a killed apply")
    live = tmpdir / f"mlspec-local-{os.getpid()}-abcd1234"  # its owner (this test) is alive: kept
    live.mkdir()
    legacy = tmpdir / "mlspec-local-12345678"  # no owner in the name (older mlspec): not ours to judge
    legacy.mkdir()
    r = project.apply(env={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert not stale.exists()
    assert live.exists() and legacy.exists()
    assert sorted(p.name for p in tmpdir.iterdir()) == sorted([live.name, legacy.name])


@pytest.mark.slow
def test_kill_9_of_mlspec_alone_leaves_no_process_and_no_double_run(project, tmp_path):
    """40 trials: kill -9 of the mlspec process (not its group) at a random moment of an apply.

    2 s later no process of the killed apply is alive (the re-apply, started right after the kill, runs
    meanwhile). The re-apply completes the work, and no step body runs to completion twice, except a body
    that completed at the moment of the kill whose result mlspec had not journaled yet: that result was
    discarded and the step re-ran. A body completing later would be an orphan still running after mlspec
    died; a step the killed apply reported done was journaled and must not re-run.
    """
    _make(project)
    rng = random.Random(int(os.environ.get("MLSPEC_CRASH_SEED", "8")))
    trials = int(os.environ.get("MLSPEC_KILL_TRIALS", "40"))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    alive_after_kill, offsets, killed_mid_run, tokens = [], [], 0, []
    try:
        for trial in range(trials):
            shutil.rmtree(project.root / ".mlspec", ignore_errors=True)  # every step must run again
            (project.root / "markers.txt").unlink(missing_ok=True)
            token, token2 = uuid.uuid4().hex, uuid.uuid4().hex
            tokens += [token, token2]
            proc = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(project.root), "apply",
                                     "--auto-approve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, **_env(token, tmpdir)), text=True)
            time.sleep(rng.uniform(0.3, 1.0))  # an apply here takes ~1-1.5 s: kill while it runs
            t_kill = time.time()
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            killed_mid_run += "Apply complete" not in out
            # re-apply at once, with processes of its own (token2); the killed apply's must be gone in 2 s
            again = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(project.root), "apply",
                                      "--auto-approve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, **_env(token2, tmpdir)), text=True)
            time.sleep(max(0.0, t_kill + 2.0 - time.time()))
            left = marked_processes(token)
            alive_after_kill.append(len(left))
            assert left == [], f"trial {trial}: alive 2 s after kill -9 of mlspec: {left}"
            r_out, r_err = again.communicate(timeout=120)
            # the killed apply's lock names a dead process on this host: the re-apply breaks it by itself
            assert again.returncode == 0, r_out + r_err
            before, after = _markers(project, token), _markers(project, token2)
            assert {n for n, _ in before} | {n for n, _ in after} == set(STEP_NAMES), trial
            # no body of the killed apply completed after mlspec was gone (orphans would, seconds later)
            late = [(n, round(t - t_kill, 3)) for n, t in before if t > t_kill + 0.25]
            assert not late, f"trial {trial}: step bodies completed after the kill: {late}"
            # a step the killed apply reported done was journaled: it does not run again
            reported_done = set(re.findall(r"done\s+step\.(\S+)", out))
            assert not reported_done & {n for n, _ in after}, f"trial {trial}: {reported_done}"
            counts = Counter(n for n, _ in before + after)
            assert all(c == 1 for n, c in Counter(n for n, _ in before).items()), before
            for n in (n for n, c in counts.items() if c > 1):
                # completed as mlspec was killed, before its result was journaled: discarded, so it re-ran
                t_first = next(t for m, t in before if m == n)
                offsets.append(round(t_first - t_kill, 3))
                assert -0.5 < offsets[-1] <= 0.25, (trial, n, offsets[-1])
            if after:  # the re-apply started the local backend, which swept the killed apply's temp dir
                assert list(tmpdir.glob("mlspec-local-*")) == [], trial
            assert marked_processes(token2) == [] or time.sleep(0.5) or marked_processes(token2) == []
        shutil.rmtree(project.root / ".mlspec", ignore_errors=True)
        assert project.apply(env=_env(tokens[-1], tmpdir)).returncode == 0
        assert list(tmpdir.glob("mlspec-local-*")) == []  # every killed apply's temp dir is gone
    finally:
        for t in tokens:
            _kill_all(marked_processes(t))
    print(f"\n{trials} trials, {killed_mid_run} killed mid-run; processes alive 2 s after the kill: "
          f"{sum(alive_after_kill)}; step bodies that completed at the kill, were discarded and re-ran: "
          f"{len(offsets)} (completed at kill {sorted(offsets)} s)")
    assert sum(alive_after_kill) == 0
    assert killed_mid_run >= trials * 3 // 4  # the kills really landed during applies


ENV_STEPS = '''
import json, os


def first():
    os.environ["MLSPEC_TEST_SET_BY_STEP"] = "leaked"  # a step changing its own environment
    os.environ.pop("MLSPEC_TEST_BASE", None)
    return {"out": {"pid": os.getpid(), "own": os.environ.get("MLSPEC_TEST_STEP_ENV")}}


def second(prev: dict):
    seen = {k: os.environ.get(k) for k in ("MLSPEC_TEST_SET_BY_STEP", "MLSPEC_TEST_STEP_ENV", "MLSPEC_TEST_BASE")}
    return {"out": {"pid": os.getpid(), "prev": prev, "seen": seen}}
'''


def test_a_step_environment_stays_with_the_step_in_a_pooled_worker(project):
    """A worker runs many steps: a step's `env:` and what its code sets or removes in os.environ are gone
    when the next step starts in the same worker, and the worker's own environment is back whole."""
    project.write("src/demo/envsteps.py", ENV_STEPS)
    project.write("mlspec.yaml", "project: envs\nsteps:\n"
                  "  a: {run: demo.envsteps:first, outputs: [out], env: {MLSPEC_TEST_STEP_ENV: only-a}}\n"
                  "  b: {run: demo.envsteps:second, inputs: {prev: step.a.out}, outputs: [out]}\n")
    r = project.apply("--parallelism", "1", env={"MLSPEC_TEST_BASE": "base"})
    assert r.returncode == 0, r.stderr
    dest = project.root / "b.json"
    out = project.run("artifacts", "get", "step.b.out", str(dest))
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(dest.read_text())
    assert got["pid"] == got["prev"]["pid"]  # the same worker ran both
    assert got["prev"]["own"] == "only-a"
    assert got["seen"] == {"MLSPEC_TEST_SET_BY_STEP": None, "MLSPEC_TEST_STEP_ENV": None, "MLSPEC_TEST_BASE": "base"}
