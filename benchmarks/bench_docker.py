"""Per-step overhead of mlspec's Docker backend against a bare `docker run --rm` of the same command.

Uses DOCKER_HOST, or starts a private dockerd for the run (mlspec_docker.daemon.LocalDockerd: its own data
root and socket, no bridge, stopped by its pid). The image is the backend's default (the host environment:
a minimal root with this machine's /usr and Python mounted read-only); the bare runs use the same image,
the same mounts and the same network mode. Three measurements, interleaved round by round:

    bare      `docker run --rm ... IMAGE sh -c 'echo N > /tmp/out'` (the docker CLI), one after the other
    backend   DockerBackend.submit(task).result() of a `cmd:` step running the same shell command (the
              runner in the container, the task on stdin, the output stored in the artifact store, the
              container removed), one after the other
    apply     `mlspec apply --auto-approve backend=docker --parallelism 1` of N and of 2N independent
              `cmd:` steps with a fresh state: the marginal cost per step, (T(2N) - T(N)) / N, so that
              mlspec's start-up and preflight are not counted per step

and prints the medians, the differences per step against the bare run, and PASS/FAIL against the target:
at most 150 ms more per step than a bare `docker run`.

    python benchmarks/bench_docker.py               # 20 steps per round, 3 rounds
    python benchmarks/bench_docker.py -n 40 --rounds 5
"""

from __future__ import annotations

import argparse
import os
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
        apply_dirs = {}
        for size in (args.n, 2 * args.n):
            d = work / f"apply{size}"
            d.mkdir()
            (d / "mlspec.yaml").write_text(_spec(size))
            apply_dirs[size] = d

        bare, mine, marginal = [], [], []
        # warm-up: the engine's first container, the image's first use, page cache
        subprocess.run(bare_cmd + ["echo warm > /tmp/out"], check=True, capture_output=True)
        backend.submit(make_task(ctx, cmd="echo warm > ${outputs.out}", outputs=["out"])).result()
        for rnd in range(args.rounds):
            t = []
            for i in range(args.n):
                t0 = time.perf_counter()
                subprocess.run(bare_cmd + [f"echo {rnd}-{i} > /tmp/out"], check=True, capture_output=True)
                t.append(time.perf_counter() - t0)
            bare.append(statistics.median(t) * 1000)
            t = []
            for i in range(args.n):
                task = make_task(ctx, cmd=f"echo {rnd}-{i} > ${{outputs.out}}", outputs=["out"])
                t0 = time.perf_counter()
                res = backend.submit(task).result()
                t.append(time.perf_counter() - t0)
                assert res.status.ok, res.error + res.log
            mine.append(statistics.median(t) * 1000)
            walls = {}
            for size, d in apply_dirs.items():
                shutil.rmtree(d / ".mlspec", ignore_errors=True)
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "mlspec", "-C", str(d), "apply", "--auto-approve",
                                    "backend=docker", "++backend.network_mode=none", "--parallelism", "1"],
                                   env=env, capture_output=True, text=True)
                walls[size] = time.perf_counter() - t0
                if r.returncode != 0 or f"Apply complete: {size} ran" not in r.stdout:
                    print(r.stdout + r.stderr, file=sys.stderr)
                    return 2
            marginal.append((walls[2 * args.n] - walls[args.n]) / args.n * 1000)
            print(f"round {rnd + 1}: bare {bare[-1]:.0f} ms, backend {mine[-1]:.0f} ms, apply marginal "
                  f"{marginal[-1]:.0f} ms per step (apply {args.n}: {walls[args.n]:.1f} s, "
                  f"{2 * args.n}: {walls[2 * args.n]:.1f} s)", file=sys.stderr)
        backend.close()

        b, m, a = statistics.median(bare), statistics.median(mine), statistics.median(marginal)
        print(f"# Docker backend per-step overhead ({args.n} steps per measurement, {args.rounds} rounds, medians)\n")
        print("| measurement | ms per step | vs bare docker run | target |")
        print("|---|---|---|---|")
        print(f"| bare `docker run --rm` (CLI) | {b:.0f} | — | — |")
        for name, v in (("DockerBackend.submit().result()", m), ("`mlspec apply` marginal per step", a)):
            diff = v - b
            verdict = "PASS" if diff <= TARGET_MS else "FAIL"
            print(f"| {name} | {v:.0f} | {diff:+.0f} ms ({v / b:.2f}x) | <= +{TARGET_MS:.0f} ms: {verdict} |")
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
