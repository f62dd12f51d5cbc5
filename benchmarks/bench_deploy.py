"""Deployments on the local backend: cold start (apply to ready), rolling update and rollback under load.

Prints a Markdown report; never asserts. Measured, median over --repeat runs:

1. floor: one prediction worker started by hand (``python -m mlspec.serve.worker --port 0``) until its ready
   line: the imports and the model load, which no deployer can avoid;
2. cold start: ``mlspec apply`` creating the deployment (the model registered already) until every replica is
   ready, as the apply reports it ("ready in X s"), and the whole apply command (wall);
3. rolling update / rollback: ``mlspec rollback --to`` back and forth while a client loops requests on new
   connections: the time, the requests answered, the requests failed (target 0).

Target: cold start (apply to ready) under 2 s. The ratio cold start / floor is the deployer's own cost.
Run from the repository root in the activated venv: python benchmarks/bench_deploy.py [--repeat N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STEPS = '''
import numpy as np
import pandas as pd


def prepare(rows: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    return {"train": pd.DataFrame({"x1": x1, "x2": x2, "y": (x1 + 0.5 * x2 > 0).astype("int64")})}


def train(train, C: float, score: float, target: str = "y"):
    from sklearn.linear_model import LogisticRegression

    return {"model": LogisticRegression(C=C).fit(train[["x1", "x2"]], train[target]), "roc_auc": score}
'''

SPEC = """
project: bench-deploy
steps:
  prepare: {run: bd.steps:prepare, outputs: [train]}
  train:
    run: bd.steps:train
    inputs: {train: step.prepare.train}
    outputs: [model]
    params: {C: %(C)s, score: %(score)s, target: y}
    metrics: [roc_auc]
models:
  clf:
    from: step.train.model
    metrics: step.train
    promote: {alias: production, if_better: roc_auc}
deployments:
  api: {model: clf@production, port: %(port)s, replicas: %(replicas)s, drain: 5s}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ, NO_COLOR="1")
    # a pycache prefix with PYTHONDONTWRITEBYTECODE means no bytecode cache at all: every worker would compile
    # scikit-learn from source. A user's machine has the caches; so does this benchmark.
    e.pop("PYTHONPYCACHEPREFIX", None)
    return e


def mlspec(root: Path, *args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mlspec", "-C", str(root), *args], env=env(), capture_output=True,
                       text=True, timeout=900)
    took = time.perf_counter() - t0
    if check and p.returncode != 0:
        sys.exit(f"mlspec {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return took, p


def write(root: Path, port: int, replicas: int, C=1.0, score=0.8) -> None:
    (root / "mlspec.yaml").write_text(SPEC % {"C": C, "score": score, "port": port, "replicas": replicas})


def infer(port: int) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v2/models/clf/infer", body=json.dumps({"inputs": [
            {"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.3]},
            {"name": "x2", "datatype": "FP64", "shape": [1], "data": [0.1]}]}),
            headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def floor(root: Path) -> float:
    """A worker by hand on the recorded config: seconds to its ready line."""
    cfg = next((root / ".mlspec/services/default/api").glob("config-*.json"))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "mlspec.serve.worker", "--config", str(cfg), "--port", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    try:
        for line in p.stderr:
            if '"event": "ready"' in line:
                return time.perf_counter() - t0
        sys.exit("the worker started by hand never became ready")
    finally:
        p.terminate()
        p.wait(30)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=1)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    (root / "src/bd").mkdir(parents=True)
    (root / "src/bd/__init__.py").write_text("")
    (root / "src/bd/steps.py").write_text(STEPS)
    port = free_port()
    try:
        write(root, port, args.replicas)
        mlspec(root, "apply", "--auto-approve")  # trains, registers v1, serves it (warm-up)
        write(root, port, args.replicas, C=2.0, score=0.9)
        mlspec(root, "apply", "--auto-approve")  # v2 promoted and rolled out: two versions to switch between
        floors, readies, applies = [], [], []
        for _ in range(args.repeat):
            floors.append(floor(root))
            mlspec(root, "destroy", "--auto-approve")
            wall, p = mlspec(root, "apply", "--auto-approve")
            m = re.search(r"ready in ([0-9.]+)s", p.stdout)
            readies.append(float(m.group(1)) if m else float("nan"))
            applies.append(wall)
        rolls = []
        for i in range(args.repeat):
            target = 1 if i % 2 == 0 else 2
            failures, ok, stop = [], [0], threading.Event()

            def loop():
                while not stop.is_set():
                    try:
                        status, _ = infer(port)
                        if status == 200:
                            ok[0] += 1
                        else:
                            failures.append(status)
                    except OSError as exc:
                        failures.append(repr(exc))

            th = threading.Thread(target=loop, daemon=True)
            th.start()
            wall, p = mlspec(root, "rollback", "api", "--to", str(target))
            stop.set()
            th.join(30)
            rolls.append((wall, ok[0], len(failures)))
    finally:
        mlspec(root, "destroy", "--auto-approve", check=False)
    med = statistics.median
    print(f"# Deployments on the local backend ({args.replicas} replica(s), median of {args.repeat})\n")
    print("| measure | median | runs |")
    print("|---|---|---|")
    print(f"| floor: a worker by hand, start to ready | {med(floors):.2f} s | {', '.join(f'{x:.2f}' for x in floors)} |")
    print(f"| cold start: apply to ready (the apply's own report) | {med(readies):.2f} s | "
          f"{', '.join(f'{x:.2f}' for x in readies)} |")
    print(f"| the whole `mlspec apply` command (wall) | {med(applies):.2f} s | {', '.join(f'{x:.2f}' for x in applies)} |")
    print(f"| rollback under load (wall) | {med(r[0] for r in rolls):.2f} s | "
          f"{', '.join(f'{r[0]:.2f}' for r in rolls)} |")
    print(f"| requests answered during each rollback | {med(r[1] for r in rolls):.0f} | "
          f"{', '.join(str(r[1]) for r in rolls)} |")
    print(f"| requests failed during rollbacks (target 0) | {sum(r[2] for r in rolls)} | "
          f"{', '.join(str(r[2]) for r in rolls)} |")
    ratio = med(readies) / med(floors)
    print(f"\nCold start {med(readies):.2f} s against the target of 2 s: "
          f"{'met' if med(readies) < 2 else 'NOT met'}; {ratio:.2f}x the floor of the worker alone "
          f"(the deployer's own cost: {med(readies) - med(floors):+.2f} s).")
    print(f"\nReproduce: python benchmarks/bench_deploy.py --repeat {args.repeat} --replicas {args.replicas}")


if __name__ == "__main__":
    main()
