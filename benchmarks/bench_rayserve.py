"""Deployments on Ray Serve (the ray backend) side by side with the local backend, on the same model.

Prints a Markdown report; never asserts. For each backend, median over --repeat runs:

1. deploy: ``deploy_service`` until every replica answers ready (Ray: Serve started on the cluster too, since
   removing the last application stops it);
2. rolling update: ``update_service`` to another version while two clients loop requests (one keep-alive,
   one new connection per request): the time, the requests answered, the requests failed (target 0);
3. throughput: requests per second of POST /v2/models/M/infer (1 row) from 4 keep-alive client threads for
   --seconds, and the median latency.

The Ray cluster is a real local one (mlspec_ray.cluster.LocalRayCluster, 2 CPUs), started once. Run from the
repository root in the activated venv, with backends/ray installed:
    python benchmarks/bench_rayserve.py [--repeat N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROW = json.dumps({"inputs": [{"name": "x1", "datatype": "FP64", "shape": [1], "data": [0.5]},
                             {"name": "x2", "datatype": "FP64", "shape": [1], "data": [-0.2]}]})
SIGNATURE = {"inputs": [{"name": "x1", "dtype": "float64"}, {"name": "x2", "dtype": "float64"}],
             "output": {"name": "y", "dtype": "int64"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_models(url: str) -> dict:
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn.linear_model import LogisticRegression

    from mlspec.artifacts import ArtifactStore

    store = ArtifactStore(url)
    out = {}
    for v in (1, 2):
        rng = np.random.default_rng(v)
        x = pd.DataFrame({"x1": rng.normal(size=500), "x2": rng.normal(size=500)})
        y = (x["x1"] > 0).astype("int64")
        buf = io.BytesIO()
        skops.io.dump(LogisticRegression().fit(x, y if v == 1 else 1 - y), buf)
        digest, _ = store.put_bytes(buf.getvalue())
        out[v] = {"hash": digest, "format": "skops"}
    return out


def service(url: str, artifacts: dict, version: int, port: int):
    from mlspec.backends.api import Service

    config = {"deployment": "bench", "model": "m", "version": version, "artifact": artifacts[version],
              "store": {"url": url, "options_env": None}, "signature": SIGNATURE, "log": None,
              "limits": {"max_body_bytes": 1 << 20}, "token_env": None, "drain_seconds": 5.0}
    return Service("deployment.bench", "bench", "bench", "m", version, config, port, 1, 5.0, 300.0, {})


def infer(conn: http.client.HTTPConnection) -> tuple[int, str]:
    conn.request("POST", "/v2/models/m/infer", body=ROW, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, (json.loads(body).get("model_version", "") if resp.status == 200 else "")


class Loop:
    """Two clients looping requests until stopped: one keep-alive, one new connection per request."""

    def __init__(self, port: int):
        self.port, self.ok, self.failed, self.stop = port, 0, 0, threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in (True, False)]

    def run(self, keep: bool) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status, _ = infer(conn)
                self.ok += status == 200
                self.failed += status != 200
            except (OSError, http.client.HTTPException):
                self.failed += 1
                conn = None
            if not keep and conn is not None:
                conn.close()
                conn = None

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def throughput(port: int, seconds: float, threads: int = 4) -> tuple[float, float]:
    """(requests per second, median latency in ms) with ``threads`` keep-alive clients."""
    lat: list = []
    count = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            status, _ = infer(conn)
            if status == 200:
                mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            lat.extend(mine)
            count[0] += len(mine)

    ts = [threading.Thread(target=client) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count[0] / (time.monotonic() - t0), 1000 * statistics.median(lat) if lat else float("nan")


def bench_backend(backend, url: str, artifacts: dict, repeat: int, seconds: float) -> dict:
    res = {"deploy": [], "update": [], "answered": [], "failed": [], "rps": [], "p50": []}
    for _ in range(repeat):
        port = free_port()
        t0 = time.perf_counter()
        rec = backend.deploy_service(service(url, artifacts, 1, port))
        res["deploy"].append(time.perf_counter() - t0)
        try:
            rps, p50 = throughput(port, seconds)
            res["rps"].append(rps)
            res["p50"].append(p50)
            with Loop(port) as loop:
                time.sleep(0.5)
                t0 = time.perf_counter()
                rec = backend.update_service(rec, service(url, artifacts, 2, port))
                res["update"].append(time.perf_counter() - t0)
                time.sleep(0.5)
            res["answered"].append(loop.ok)
            res["failed"].append(loop.failed)
        finally:
            backend.remove_service(rec)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput window per run")
    args = ap.parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.pop("PYTHONPYCACHEPREFIX", None)  # workers use the venv's compiled caches

    from mlspec.backends.api import Context
    from mlspec.backends.local import LocalBackend
    from mlspec_ray.backend import RayBackend
    from mlspec_ray.cluster import LocalRayCluster

    tmp = Path(tempfile.mkdtemp(prefix="bench-rayserve-"))
    project = tmp / "project"
    project.mkdir()
    url = str(tmp / "artifacts")
    artifacts = store_models(url)
    ctx = Context(project_dir=project, artifacts_url=url, code_paths=(str(project),))
    results = {}
    cluster = LocalRayCluster(num_cpus=2).start()
    try:
        ray_backend = RayBackend({"type": "ray", "address": cluster.address, "serve": {"replica_cpus": 0.5}}, ctx)
        ray_backend.start()
        try:
            results["ray (Serve)"] = bench_backend(ray_backend, url, artifacts, args.repeat, args.seconds)
        finally:
            ray_backend.close()
        local = LocalBackend({"type": "local"}, ctx)
        results["local"] = bench_backend(local, url, artifacts, args.repeat, args.seconds)
    finally:
        cluster.stop()

    med = statistics.median
    print(f"# Deployments on Ray Serve vs the local backend ({args.repeat} runs, medians; 1 replica, 1-row requests)\n")
    print("| backend | deploy to ready | rolling update | answered during update | failed | req/s (4 clients) | p50 latency |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {med(r['deploy']):.2f} s | {med(r['update']):.2f} s | {med(r['answered']):.0f} | "
              f"{sum(r['failed'])} | {med(r['rps']):.0f} | {med(r['p50']):.1f} ms |")
    ray_r, loc = results["ray (Serve)"], results["local"]
    print(f"\nratios ray/local: deploy {med(ray_r['deploy']) / med(loc['deploy']):.1f}x, update "
          f"{med(ray_r['update']) / med(loc['update']):.1f}x, req/s {med(ray_r['rps']) / med(loc['rps']):.2f}x")
    print(f"target: 0 failed requests during updates -> {'met' if not sum(ray_r['failed']) else 'NOT met'} on Ray")
    print(f"\nreproduce: python benchmarks/bench_rayserve.py --repeat {args.repeat} --seconds {args.seconds:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
