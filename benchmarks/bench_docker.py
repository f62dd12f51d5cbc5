"""Per-step overhead of mlspec's Docker backend against a bare `docker run --rm` of the same command.

Uses DOCKER_HOST, or starts a private dockerd for the run (mlspec_docker.daemon.LocalDockerd: its own data
root and socket, no bridge, stopped by its pid). The image is the backend's default (the host environment:
a minimal root with this machine's /usr and Python mounted read-only); the bare runs use the same image,
the same mounts and the same network mode. Three measurements, interleaved round by round:

    bare      `docker run --rm ... IMAGE sh -c 'echo N > /tmp/out'` (the docker CLI), one after the other
    backend   DockerBackend.submit(task).result() of a `cmd:` step running the same shell command (the
              runner in the container, the task on stdin, the output stored in the artifact store, the
              container removed), one after the other
    apply     `mlspec apply --auto-approve backend=docker --parallelism 1` of N independent `cmd:` steps
              with a fresh state: the span from the first step's start to the last step's end (from the
              state: each step's `finished` and `duration`) divided by N, so the executor's work between
              steps counts and mlspec's start-up, plan and preflight (printed apart) do not

Each round gives the mean per step of each measurement (the apply's span is a mean too); the report
prints the medians over the rounds, the differences per step against the bare run, and PASS/FAIL against the target:
at most 150 ms more per step than a bare `docker run`.

    python benchmarks/bench_docker.py               # 20 steps per round, 3 rounds
    python benchmarks/bench_docker.py -n 40 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TARGET_MS = 150.0


def _spec(n: int) -> str:
    steps = "\n".join(f"  s{i}:\n    cmd: \"echo {i} > ${{outputs.out}}\"\n    outputs: [out]" for i in range(n))
    return f"project: benchdocker\nsteps:\n{steps}\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="steps per measurement (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default 3)")
    args = ap.parse_args(argv)

    from mlspec.backends.api import Context
    from mlspec.testing import make_task, write_project
    from mlspec_docker.backend import DockerBackend
    from mlspec_docker.daemon import LocalDockerd

    # The containers import mlspec from this checkout, read-only: give them the bytecode a pip install (or
    # any run without PYTHONPYCACHEPREFIX) leaves next to the sources, or every step compiles mlspec anew.
    import mlspec

    pkg = Path(mlspec.__file__).resolve().parent
    if not (pkg / "__pycache__").is_dir():
        print(f"compiling {pkg} (no __pycache__ next to the sources)", file=sys.stderr)
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], env=clean, check=True)

    daemon = None
    if not os.environ.get("DOCKER_HOST"):
        daemon = LocalDockerd().start()
        os.environ["DOCKER_HOST"] = daemon.url
    work = Path(tempfile.mkdtemp(prefix="bench-docker-"))
    try:
        project = write_project(work / "project")
        ctx = Context(project_dir=project, artifacts_url=str(work / "artifacts"), code_paths=(str(project),))
        backend = DockerBackend({"type": "docker", "network_mode": "none"}, ctx)
        backend.start()
        image = backend.image()
        probe = make_task(ctx, cmd="true")
        binds = backend.binds(backend.container_payload(probe.payload))
        volumes = [a for src, b in binds.items() for a in ("-v", f"{src}:{b['bind']}:{b['mode']}")]
        bare_cmd = ["docker", "run", "--rm", "--network", "none", "-u", f"{os.getuid()}:{os.getgid()}", *volumes,
                    image, "sh", "-c"]
        env = dict(os.environ, NO_COLOR="1", HOME=str(work / "home"))
        (work / "home").mkdir()
        apply_dir = work / "apply"
        apply_dir.mkdir()
        (apply_dir / "mlspec.yaml").write_text(_spec(args.n))

        bare, mine, marginal, fixed, cpu_mine = [], [], [], [], []
        # warm-up: the engine's first container, the image's first use, page cache
        subprocess.run(bare_cmd + ["echo warm > /tmp/out"], check=True, capture_output=True)
        backend.submit(make_task(ctx, cmd="echo warm > ${outputs.out}", outputs=["out"])).result()
        for rnd in range(args.rounds):
            t = []
            for i in range(args.n):
                t0 = time.perf_counter()
                subprocess.run(bare_cmd + [f"echo {rnd}-{i} > /tmp/out"], check=True, capture_output=True)
                t.append(time.perf_counter() - t0)
            bare.append(sum(t) / args.n * 1000)
            t = []
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            for i in range(args.n):
                task = make_task(ctx, cmd=f"echo {rnd}-{i} > ${{outputs.out}}", outputs=["out"])
                t0 = time.perf_counter()
                res = backend.submit(task).result()
                t.append(time.perf_counter() - t0)
                assert res.status.ok, res.error + res.log
            mine.append(sum(t) / args.n * 1000)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu_mine.append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / args.n * 1000)
            shutil.rmtree(apply_dir / ".mlspec", ignore_errors=True)
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "mlspec", "-C", str(apply_dir), "apply", "--auto-approve",
                                "backend=docker", "++backend.network_mode=none", "--parallelism", "1"],
                               env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode != 0 or f"Apply complete: {args.n} ran" not in r.stdout:
                print(r.stdout + r.stderr, file=sys.stderr)
                return 2
            recs = json.loads((apply_dir / ".mlspec/state/default.state.json").read_text())["resources"].values()
            span = max(x["finished"] for x in recs) - min(x["finished"] - x["duration"] for x in recs)
            marginal.append(span / args.n * 1000)
            fixed.append(wall - span)
            print(f"round {rnd + 1}: bare {bare[-1]:.0f} ms, backend {mine[-1]:.0f} ms, apply {marginal[-1]:.0f} ms "
                  f"per step (apply {wall:.1f} s, of which {wall - span:.1f} s before the first and after the "
                  "last step)", file=sys.stderr)
        # what no bare `docker run` of a shell command has: the runner's Python in the container (CPU seconds)
        runner_cpu = []
        if os.path.exists("/usr/bin/time"):
            imports = "from mlspec import worker; from mlspec.runner import execute; from mlspec.artifacts import ArtifactStore"
            env_args = [a for k, v in backend.environment("").items() if k in ("PYTHONPATH",) for a in ("-e", f"{k}={v}")]
            for _ in range(5):
                r = subprocess.run(bare_cmd[:-3] + env_args + [image, "/usr/bin/time", "-f", "%U %S", backend.python,
                                                               "-c", imports], capture_output=True, text=True)
                u, s_ = r.stderr.strip().splitlines()[-1].split()
                runner_cpu.append((float(u) + float(s_)) * 1000)
        backend.close()

        b, m, a = statistics.median(bare), statistics.median(mine), statistics.median(marginal)
        print(f"# Docker backend per-step overhead ({args.n} steps per measurement, {args.rounds} rounds, medians)\n")
        print("| measurement | ms per step | vs bare docker run | target |")
        print("|---|---|---|---|")
        print(f"| bare `docker run --rm` (CLI) | {b:.0f} | — | — |")
        for name, v in (("DockerBackend.submit().result()", m), ("`mlspec apply`, steps' span / N", a)):
            diff = v - b
            verdict = "PASS" if diff <= TARGET_MS else "FAIL"
            print(f"| {name} | {v:.0f} | {diff:+.0f} ms ({v / b:.2f}x) | <= +{TARGET_MS:.0f} ms: {verdict} |")
        print(f"\n`mlspec apply` start-up, plan, preflight and wrap-up (not per step): {statistics.median(fixed):.1f} s")
        print(f"\nCPU per step in the mlspec process (DockerBackend loop): {statistics.median(cpu_mine):.1f} ms")
        if runner_cpu:
            print(f"CPU of the runner's Python start-up and imports in the container: {statistics.median(runner_cpu):.0f} ms "
                  "(a bare `sh -c 'echo'` has none of it)")
        load = os.getloadavg()
        print(f"load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
        print(f"\nimage {image}; engine {os.environ['DOCKER_HOST']}; reproduce: python benchmarks/bench_docker.py "
              f"-n {args.n} --rounds {args.rounds}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if daemon is not None:
            os.environ.pop("DOCKER_HOST", None)
            daemon.stop()


if __name__ == "__main__":
    raise SystemExit(main())
