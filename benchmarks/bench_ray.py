"""Per-step overhead of mlspec's Ray backend against a bare Ray task running the same trivial function.

Starts a real single-node Ray cluster (or uses --address), then times N trivial steps four ways:

    sequential  bare    ray.get(f.remote()), one after the other
    sequential  mlspec  RayBackend.submit(task).result(), one after the other (a `run:` payload: runner,
                        log capture, env, artifact store, result dict)
    concurrent  bare    ray.get([f.remote() for _ in range(N)])        -> wall / N per step
    concurrent  mlspec  [RayBackend.submit(t) for t in tasks], all results -> wall / N per step

and prints the median per-step milliseconds, the difference, and PASS/FAIL against the target: the Ray
backend adds at most 20 ms per step.

    python benchmarks/bench_ray.py                 # N=200, a 2-CPU cluster started for the run
    python benchmarks/bench_ray.py -n 500 --address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 20.0

STEP_MODULE = "bench_steps"
STEP_SOURCE = "def trivial(x: int = 0):\n    return {'value': x + 1}\n"


def _bare_task_function(project_dir: str):
    """The bare Ray task: import the same module from the same place and call the same function."""

    def bare(x):
        import importlib
        import sys

        if project_dir not in sys.path:
            sys.path.insert(0, project_dir)
        return importlib.import_module("bench_steps").trivial(x)

    return bare


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="steps per measurement (default 200)")
    ap.add_argument("--address", default="", help="an existing cluster (host:port); default: start one")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the cluster started here (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per mode; the median is reported")
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from mlspec.backends.api import Context, Task
    from mlspec.testing import make_payload
    from mlspec_ray.backend import RayBackend

    cluster = None
    if not args.address:
        from mlspec_ray.cluster import LocalRayCluster

        t0 = time.monotonic()
        cluster = LocalRayCluster(num_cpus=args.num_cpus).start()
        address = cluster.address
        print(f"started a {args.num_cpus}-CPU Ray cluster at {address} in {time.monotonic() - t0:.1f}s")
    else:
        address = args.address
    tmp = Path(tempfile.mkdtemp(prefix="mlspec-bench-"))
    project = tmp / "project"
    project.mkdir()
    (project / f"{STEP_MODULE}.py").write_text(STEP_SOURCE)
    ctx = Context(project_dir=project, artifacts_url=str(tmp / "artifacts"), code_paths=(str(project),))
    backend = RayBackend({"type": "ray", "address": address}, ctx)
    try:
        import ray

        backend.start()
        bare = ray.remote(max_retries=0)(_bare_task_function(str(project)))

        def task(i: int) -> Task:
            payload = make_payload(ctx, f"step.trivial[x={i}]", run=f"{STEP_MODULE}:trivial", params={"x": i},
                                   metrics=["value"])
            return Task(f"bench:{i}", payload["address"], payload, {"cpus": 1, "gpus": 0, "memory": None, "custom": {}})

        def check(res):
            assert res.status.value == "succeeded", res.error
            return res

        def seq_bare(n):
            out = []
            for i in range(n):
                t = time.perf_counter()
                ray.get(bare.remote(i))
                out.append(time.perf_counter() - t)
            return statistics.median(out) * 1e3

        def seq_mlspec(n):
            out = []
            for i in range(n):
                t = time.perf_counter()
                check(backend.submit(task(i)).result())
                out.append(time.perf_counter() - t)
            return statistics.median(out) * 1e3

        def conc_bare(n):
            t = time.perf_counter()
            ray.get([bare.remote(i) for i in range(n)])
            return (time.perf_counter() - t) / n * 1e3

        def conc_mlspec(n):
            tasks = [task(i) for i in range(n)]
            t = time.perf_counter()
            futures = [backend.submit(x) for x in tasks]
            for f in futures:
                check(f.result())
            return (time.perf_counter() - t) / n * 1e3

        # warm up: worker processes, imports, function export
        conc_bare(20)
        conc_mlspec(20)
        results = {}
        for mode, fb, fm in (("sequential", seq_bare, seq_mlspec), ("concurrent", conc_bare, conc_mlspec)):
            b_runs, m_runs = [], []
            for _ in range(args.rounds):  # alternate, so that drift hits both alike
                b_runs.append(fb(args.n))
                m_runs.append(fm(args.n))
            results[mode] = (statistics.median(b_runs), statistics.median(m_runs))
    finally:
        backend.close()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    import ray as _ray

    print(f"\nmlspec Ray backend overhead per step: N={args.n} trivial steps x {args.rounds} rounds, "
          f"Ray {_ray.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, cluster of "
          f"{args.num_cpus if cluster else '?'} CPUs\n")
    head = (f"{'mode':<11} {'bare Ray ms/step':>17} {'mlspec ms/step':>15} {'difference ms':>14}  "
            f"target <= {TARGET_MS:g} ms")
    print(head)
    print("-" * len(head))
    ok = True
    for mode, (b, m) in results.items():
        diff = m - b
        verdict = "PASS" if diff <= TARGET_MS else "FAIL"
        ok &= verdict == "PASS"
        print(f"{mode:<11} {b:>17.2f} {m:>15.2f} {diff:>14.2f}  {verdict}")
    print("\nsequential: median latency of one step submitted and awaited; concurrent: wall time of N steps "
          "submitted at once, divided by N.")
    print("\nReproduce (from the repository root, in an activated venv):\n  python -m pip install -e . -e backends/ray\n"
          f"  python benchmarks/bench_ray.py -n {args.n} --rounds {args.rounds}"
          + (f" --address {args.address}" if args.address else f" --num-cpus {args.num_cpus}"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
