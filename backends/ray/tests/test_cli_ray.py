"""End to end through the `mlspec` CLI (subprocesses) with `backend=ray` against the session's real cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

STEPS = '''
import time

import pandas as pd


def prepare(raw: pd.DataFrame, scale: float = 1.0):
    clean = raw.dropna().reset_index(drop=True)
    clean["x"] = clean["x"] * scale
    return {"clean": clean}


def train(clean: pd.DataFrame, C: float = 1.0):
    # least squares slope with a ridge penalty: plain pandas, fast and deterministic
    xx = float((clean["x"] ** 2).sum()) + 1.0 / C
    slope = float((clean["x"] * clean["y"]).sum()) / xx
    return {"model": {"C": C, "slope": slope}}


def evaluate(model: dict, clean: pd.DataFrame):
    err = clean["y"] - model["slope"] * clean["x"]
    return {"mse": float((err ** 2).mean()), "slope": model["slope"]}


def nap(seconds: float = 1.0, i: int = 0):
    time.sleep(seconds)
    return {"out": {"i": i, "slept": seconds}}


def split(raw: pd.DataFrame):
    import logging

    logging.getLogger("rayproj.split").info("splitting %d rows", len(raw))
    print("printed too")
    return raw[raw["x"] % 2 == 0], raw[raw["x"] % 2 == 1]


def hang(pid_file: str, seconds: float = 120.0):
    import os

    with open(pid_file + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return {"out": {}}
'''

SPEC = """
project: rayproj
datasets:
  points: {uri: data/points.csv, format: csv}
steps:
  prepare:
    run: rayproj.steps:prepare
    inputs: {raw: dataset.points}
    outputs: [clean]
    params: {scale: 0.5}
  train:
    run: rayproj.steps:train
    inputs: {clean: step.prepare.clean}
    outputs: [model]
    matrix: {C: [0.01, 1.0, 100.0]}
  evaluate:
    run: rayproj.steps:evaluate
    inputs: {model: step.train.model, clean: step.prepare.clean}
    metrics: [mse, slope]
"""

FORMATS = """
project: rayformats
datasets:
  points: {uri: data/points.csv}
steps:
  split:
    run: rayproj.steps:split
    inputs:
      raw: {from: dataset.points, load_args: {nrows: 100}}
    outputs:
      even: {format: csv, save_args: {sep: "|"}}
      odd: {format: jsonl}
"""

NAPS = """
project: naps
steps:
  nap:
    run: rayproj.steps:nap
    outputs: [out]
    params: {seconds: 1.0}
    matrix: {i: [0, 1, 2, 3, 4, 5, 6, 7]}
"""

GPU = """
project: gpu
steps:
  fit:
    run: rayproj.steps:nap
    outputs: [out]
    resources: {gpus: 1}
  fine:
    run: rayproj.steps:nap
    outputs: [out]
    params: {i: 1}
"""


def cli(project: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", RAY_AUTH_MODE="disabled", HOME=str(project.parent / "home"))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "mlspec", "-C", str(project), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_project(root: Path, spec: str) -> Path:
    root.mkdir(parents=True)
    (root / "home").mkdir()
    project = root / "proj"
    (project / "src/rayproj").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "mlspec.yaml").write_text(textwrap.dedent(spec))
    (project / "src/rayproj/__init__.py").write_text("")
    (project / "src/rayproj/steps.py").write_text(STEPS)
    rows = ["x,y"] + [f"{i},{2.5 * i + (i % 7) - 3}" for i in range(300)]
    (project / "data/points.csv").write_text("\n".join(rows) + "\n")
    return project


def ray_overrides(cluster) -> list[str]:
    return ["backend=ray", f"backend.address={cluster.address}"]


def output_hashes(state_dir: Path) -> dict:
    doc = json.loads((state_dir / "default.state.json").read_text())
    return {f"{addr}.{name}": out["hash"] for addr, rec in doc["resources"].items()
            for name, out in (rec.get("outputs") or {}).items()}


def last_run(state_dir: Path) -> dict:
    runs = sorted((state_dir / "runs").glob("*.json"))
    return json.loads(runs[-1].read_text())


def show(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"


def test_backend_switch_runs_nothing_and_ray_reproduces_local_hashes(tmp_path, ray_cluster):
    project = make_project(tmp_path / "a", SPEC)
    r = cli(project, "apply", "--auto-approve", "backend=local")
    assert r.returncode == 0, show(r)
    assert "Apply complete: 7 ran" in r.stdout, show(r)
    local_hashes = output_hashes(project / ".mlspec/state")
    assert len(local_hashes) == 4  # prepare.clean + 3 x train.model

    # (a) the same spec on Ray: outputs are a function of code, params and inputs, not of the backend
    r = cli(project, "apply", "--auto-approve", *ray_overrides(ray_cluster))
    assert r.returncode == 0, show(r)
    assert "No changes" in r.stdout, show(r)

    # (b) a fresh state and store: Ray computes everything again, byte for byte what local computed
    state2, store2 = tmp_path / "state2", tmp_path / "artifacts2"
    t0 = time.monotonic()
    r = cli(project, "apply", "--auto-approve", *ray_overrides(ray_cluster), f"++storage.state={state2}",
            f"++storage.artifacts={store2}")
    took = time.monotonic() - t0
    assert r.returncode == 0, show(r)
    assert "Apply complete: 7 ran" in r.stdout, show(r)
    assert output_hashes(state2) == local_hashes
    local_doc = json.loads((project / ".mlspec/state/default.state.json").read_text())
    ray_doc = json.loads((state2 / "default.state.json").read_text())
    for addr in ("step.evaluate[C=0.01]", "step.evaluate[C=1.0]", "step.evaluate[C=100.0]"):
        assert ray_doc["resources"][addr]["metrics"] == local_doc["resources"][addr]["metrics"]
    print(f"\nfresh apply of 7 steps on Ray (CLI, including connect): {took:.1f}s")


def test_declared_formats_tuples_and_logging_on_ray(tmp_path, ray_cluster):
    """The Ray backend runs the same runner: load_args, save_args, a tuple return, logging in the step log."""
    project = make_project(tmp_path / "f", FORMATS)
    r = cli(project, "apply", "--auto-approve", *ray_overrides(ray_cluster))
    assert r.returncode == 0, show(r)
    outs = json.loads((project / ".mlspec/state/default.state.json").read_text())["resources"]["step.split"]["outputs"]
    assert {k: v["format"] for k, v in outs.items()} == {"even": "csv", "odd": "jsonl"}
    r = cli(project, "artifacts", "get", "step.split.even", str(tmp_path / "even.csv"), *ray_overrides(ray_cluster))
    assert r.returncode == 0, show(r)
    rows = (tmp_path / "even.csv").read_text().splitlines()
    assert rows[0] == "x|y" and len(rows) == 51, rows[:3]  # the first 100 rows (load_args), even x ('|', save_args)
    r = cli(project, "logs", "step.split", *ray_overrides(ray_cluster))
    assert "INFO rayproj.split: splitting 100 rows" in r.stdout and "printed too" in r.stdout, show(r)


def test_matrix_runs_in_parallel_on_the_cluster(tmp_path, ray_cluster):
    project = make_project(tmp_path / "c", NAPS)
    r = cli(project, "apply", "--auto-approve", *ray_overrides(ray_cluster))
    assert r.returncode == 0, show(r)
    assert "Apply complete: 8 ran" in r.stdout, show(r)
    run = last_run(project / ".mlspec/state")
    steps = {a: s for a, s in run["steps"].items() if s["status"] == "ran"}
    assert len(steps) == 8
    spans = sorted((s["started"], s["finished"]) for s in steps.values())
    # the most steps running at one instant, from the recorded start and finish times
    events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, d in events:
        running += d
        peak = max(peak, running)
    wall = max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans)
    busy = sum(t1 - t0 for t0, t1 in spans)
    print(f"\n8 x 1 s steps on a 2-CPU Ray cluster: wall {wall:.2f}s, sum of step times {busy:.2f}s, "
          f"speed-up {busy / wall:.2f}x, at most {peak} at once; apply {run['finished'] - run['started']:.2f}s")
    assert peak >= 2, f"the steps never overlapped: {spans}"
    assert peak <= 2 + 1  # the 2-CPU cluster (one more may be resolving while the next starts)


def test_dead_address_fails_plan_fast_with_one_clear_line(tmp_path):
    project = make_project(tmp_path / "d", SPEC)
    t0 = time.monotonic()
    r = cli(project, "plan", "backend=ray", "backend.address=127.0.0.1:1", timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, show(r)
    assert "Traceback" not in r.stderr + r.stdout
    assert "cannot reach the Ray cluster at 127.0.0.1:1 within 5s" in r.stderr, show(r)
    assert "ray start --head" in r.stderr
    assert took < 20, f"plan took {took:.1f}s against a dead address"
    print(f"\nplan against a dead address failed in {took:.2f}s")


def test_dead_address_without_preflight_is_a_user_error_not_a_crash(tmp_path):
    project = make_project(tmp_path / "d2", SPEC)
    r = cli(project, "apply", "--auto-approve", "--no-preflight", "backend=ray", "backend.address=127.0.0.1:1",
            timeout=60)
    assert r.returncode == 1, show(r)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, show(r)
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in r.stderr, show(r)


def test_gpu_step_fails_at_plan_time_naming_the_step(tmp_path, ray_cluster):
    project = make_project(tmp_path / "e", GPU)
    r = cli(project, "plan", *ray_overrides(ray_cluster))
    assert r.returncode == 1, show(r)
    assert f"step.fit asks for 1 GPU; the Ray cluster at {ray_cluster.address} has none" in r.stderr, show(r)
    assert "step.fine" not in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_module_fails_at_plan_time(tmp_path, ray_cluster):
    project = make_project(tmp_path / "m", SPEC.replace("rayproj.steps:train", "rayproj.nosuch:train"))
    r = cli(project, "plan", *ray_overrides(ray_cluster))
    assert r.returncode == 1, show(r)
    assert "module 'rayproj.nosuch' does not import on the Ray cluster" in r.stderr, show(r)


def test_bad_setting_is_reported_against_the_schema(tmp_path):
    project = make_project(tmp_path / "s", SPEC)
    r = cli(project, "plan", "backend=ray", "+backend.num_gpus=1")
    assert r.returncode == 1, show(r)
    assert "num_gpus" in r.stderr and "Traceback" not in r.stderr, show(r)


def test_backends_command_lists_ray_with_its_version(tmp_path, ray_cluster):
    project = make_project(tmp_path / "f", SPEC)
    r = cli(project, "backends", *ray_overrides(ray_cluster))
    assert r.returncode == 0, show(r)
    line = next((ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["ray"]), "")
    assert "mlspec-ray" in line and "0.1.0" in line, show(r)
    assert f"ok: 2 CPUs, 0 GPUs at {ray_cluster.address}" in r.stdout, show(r)


def test_loading_the_backend_does_not_import_ray():
    code = ("import sys; from mlspec.backends.registry import load_backend_class; "
            "c = load_backend_class('ray'); assert c.type == 'ray' and c.settings_schema; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("address", ["auto"])
def test_auto_address_without_a_recorded_cluster_says_so(tmp_path, address):
    project = make_project(tmp_path / "g", SPEC)
    env_tmp = tmp_path / "raytmp"
    env_tmp.mkdir()
    env = dict(os.environ, NO_COLOR="1", RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(env_tmp), TMPDIR=str(env_tmp))
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "mlspec", "-C", str(project), "plan", "backend=ray",
                        f"backend.address={address}"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, show(r)
    assert 'backend.address is "auto" but no Ray cluster is recorded on this machine' in r.stderr, show(r)


def test_sigterm_during_apply_cancels_the_ray_task(tmp_path, ray_cluster):
    pid_file = tmp_path / "hang.pid"
    spec = f"""
project: hang
steps:
  hang:
    run: rayproj.steps:hang
    outputs: [out]
    params: {{pid_file: {str(pid_file)!r}}}
"""
    project = make_project(tmp_path / "h", spec)
    env = dict(os.environ, NO_COLOR="1", RAY_AUTH_MODE="disabled", HOME=str(project.parent / "home"))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(project), "apply", "--auto-approve",
                             *ray_overrides(ray_cluster)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), proc.communicate(timeout=30)
        worker = int(pid_file.read_text())
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what CI runners send: mlspec treats it as Ctrl-C
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Interrupted" in err and "Resume with:" in err, err
    assert took < 15
    from mlspec.testing import process_alive, wait_until

    assert wait_until(lambda: not process_alive(worker), 10), f"the step's Ray worker {worker} is still running"


def test_private_cluster_by_default(tmp_path, short_ray_tmpdir):
    """`backend=ray` with RAY_ADDRESS unset starts a private local cluster for the apply and stops it."""
    project = make_project(tmp_path / "p", SPEC)  # cli() passes RAY_TMPDIR on: the session dir goes there
    r = cli(project, "apply", "--auto-approve", "backend=ray", "++backend.num_cpus=1",
            "++backend.object_store_memory=100000000")
    assert r.returncode == 0, show(r)
    assert "Apply complete: 7 ran" in r.stdout, show(r)
    assert "Traceback" not in r.stderr
    assert os.listdir(os.path.join(short_ray_tmpdir, "ray")), "the private cluster did not use RAY_TMPDIR"


def test_malformed_address_is_one_clear_line(tmp_path):
    project = make_project(tmp_path / "x", SPEC)
    r = cli(project, "plan", "backend=ray", "backend.address=nohost")
    assert r.returncode == 1, show(r)
    assert """backend ray: backend.address 'nohost' is not an address: use "" (a private local cluster)""" in r.stderr
