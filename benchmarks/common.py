"""Shared helpers for the mlspec benchmarks.

Timing is whole-process (wall time of a CLI subprocess), reported as the median over repeats, with the
CPU time (user + sys of the process and its children) next to it: the machine is shared and noisy, and
CPU time is far less sensitive to other load than wall time. Peers (DVC) run side by side in the same
run, on the same generated graphs. Every number comes with the exact command that reproduces it.

These are harnesses that print numbers and compare them with targets; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"
PYTHON = sys.executable  # the interpreter running the benchmark (the mlspec venv's python)


# --- command line -------------------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a fast smoke run")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="repeats per measurement (median; default 5)")
    p.add_argument("--no-dvc", action="store_true", help="skip the DVC column")
    return p


# --- tools --------------------------------------------------------------------------------------
def mlspec_bin() -> str:
    env = os.environ.get("MLSPEC_BIN")
    if env:
        return env
    cand = Path(sys.executable).parent / "mlspec"
    if cand.exists():
        return str(cand)
    found = shutil.which("mlspec")
    if not found:
        sys.exit("mlspec is not installed next to this python, nor on PATH: run with the venv's python "
                 "(e.g. .venv/bin/python benchmarks/bench_plan.py, from the repository root) or set MLSPEC_BIN")
    return found


DVC_VENV = WORK / "dvc-venv"


@dataclass
class Dvc:
    """The DVC peer, installed only in its own venv under benchmarks/.work (created on first use)."""

    bin: str | None
    version: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.bin is not None

    def env(self) -> dict:
        WORK.mkdir(parents=True, exist_ok=True)
        return proc_env(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(WORK / "dvc-site-cache"))


def ensure_dvc(disabled: bool = False) -> Dvc:
    if disabled:
        return Dvc(None, note="DVC column skipped (--no-dvc)")
    dvc = DVC_VENV / "bin" / "dvc"
    if not dvc.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        log = WORK / "dvc-install.log"
        say(f"[setup] creating {rel(DVC_VENV)} and installing dvc (once; log in {rel(log)}) ...")
        with open(log, "wb") as fh:
            ok = subprocess.run([sys.executable, "-m", "venv", str(DVC_VENV)], stdout=fh, stderr=fh).returncode == 0
            ok = ok and subprocess.run([str(DVC_VENV / "bin" / "pip"), "install", "dvc"], stdout=fh,
                                       stderr=fh).returncode == 0
        if not ok or not dvc.exists():
            return Dvc(None, note=f"DVC could not be installed (see {rel(log)}): DVC column skipped")
    try:
        out = subprocess.run([str(dvc), "--version"], capture_output=True, text=True, timeout=120,
                             env=Dvc(str(dvc)).env())
        version = out.stdout.strip()
        if out.returncode != 0 or not version:
            raise RuntimeError(out.stderr.strip())
    except Exception as exc:  # noqa: BLE001 - report and skip, never crash the harness
        return Dvc(None, note=f"DVC is installed but does not run ({exc}): DVC column skipped")
    return Dvc(str(dvc), version=version)


# --- running and timing -------------------------------------------------------------------------
class CommandFailed(RuntimeError):
    pass


@dataclass
class Timing:
    wall: float
    cpu: float
    stdout: str = ""


def run(cmd: Sequence[str], cwd: str | os.PathLike | None = None, env: dict | None = None,
        check: bool = True, ok_codes: Iterable[int] = (0,)) -> Timing:
    """Run one command to completion; wall time and CPU time (user+sys of it and all its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = p.stdout.decode("utf-8", "replace")
    if check and p.returncode not in tuple(ok_codes):
        tail = "\n".join(out.strip().splitlines()[-25:])
        raise CommandFailed(f"command failed (exit {p.returncode}) in {cwd}: {shlex.join(map(str, cmd))}\n{tail}")
    return Timing(wall, cpu, out)


@dataclass
class Stat:
    walls: list = field(default_factory=list)
    cpus: list = field(default_factory=list)

    def add(self, t: Timing) -> None:
        self.walls.append(t.wall)
        self.cpus.append(t.cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus) if self.cpus else float("nan")

    @property
    def spread(self) -> str:
        if len(self.walls) < 2:
            return "n=1"
        return f"{fmt_s(min(self.walls))}–{fmt_s(max(self.walls))} (n={len(self.walls)})"


def measure(cmd: Sequence[str], cwd=None, env=None, repeat: int = 5, warmup: int = 1, before=None,
            ok_codes: Iterable[int] = (0,), budget: float | None = None) -> Stat:
    """Median-ready samples of a command. ``before(i)`` runs (untimed) before each timed run.

    ``budget`` (seconds): when the warm-up shows that ``repeat`` runs would take longer, run fewer (at
    least 1); the table then shows n. Used for the peer's slowest commands only."""
    st = Stat()
    warm = 0.0
    for _ in range(warmup):
        if before:
            before(-1)
        warm = run(cmd, cwd, env, ok_codes=ok_codes).wall
    if budget and warm * repeat > budget:
        repeat = max(1, int(budget // max(warm, 1e-9)))
        say(f"  (slow: {fmt_s(warm)} per run; {repeat} timed run(s) to stay within {budget:.0f} s)")
    for i in range(repeat):
        if before:
            before(i)
        st.add(run(cmd, cwd, env, ok_codes=ok_codes))
    return st


# --- formatting ---------------------------------------------------------------------------------
def fmt_s(x: float) -> str:
    if x != x:  # nan
        return "—"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    if x < 100:
        return f"{x:.2f} s"
    return f"{x:.0f} s"


def fmt_ms(x: float, digits: int = 1) -> str:
    return "—" if x != x else f"{x * 1000:.{digits}f} ms"


def ratio(a: float, b: float) -> str:
    """a / b as 'N.Nx' (how many times a is of b)."""
    if a != a or b != b or b == 0:
        return "—"
    return f"{a / b:.1f}x" if a / b < 100 else f"{a / b:.0f}x"


CPU_NOTE = ("\n`result (wall)` judges the wall-time median, as the targets are stated; `result (CPU)` judges the "
            "CPU-time median (user+sys), which is what the wall time would be on an idle machine for a "
            "single-threaded command: on this shared 2-core machine other jobs inflate wall time.")


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "**FAIL**")


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def say(msg: str) -> None:
    """Progress goes to stderr; stdout holds only the report (Markdown)."""
    print(msg, file=sys.stderr, flush=True)


def rel(p: str | os.PathLike) -> str:
    try:
        return os.path.relpath(p, REPO)
    except ValueError:
        return str(p)


def cmdline(cmd: Sequence[str], cwd: str | os.PathLike | None = None) -> str:
    """A copy-pasteable command, run from the repository root."""
    text = shlex.join(map(str, cmd))
    return f"(cd {shlex.quote(rel(cwd))} && {text})" if cwd else text


def code_version() -> str:
    """The mlspec commit measured, and whether mlspec's code had uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cI"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "mlspec", "configs", "schemas"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    import hashlib

    h = hashlib.sha256()
    for sub in ("mlspec", "configs", "schemas"):
        for p in sorted((REPO / sub).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".json", ".yaml") and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return f"{rev}" + (" + uncommitted changes" if dirty else "") + f" (code digest {h.hexdigest()[:10]})"


START_VERSION = code_version()
START_TIME = time.strftime("%Y-%m-%d %H:%M")


def header(title: str, args) -> str:
    load = os.getloadavg()
    end = code_version()
    version = (f"mlspec commit {end}" if end == START_VERSION else
               f"mlspec commit {START_VERSION} at the start, {end} at the end (**the code changed during the run**)")
    return (f"## {title}\n\n"
            f"- {version}; run {START_TIME} – {time.strftime('%H:%M %Z')}\n"
            f"- machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average at the end of the run {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}\n"
            f"- mode: {'--quick' if args.quick else 'full'}, median of {args.repeat} repeats (after 1 warm-up run "
            f"unless stated); wall time of the whole process; CPU = user+sys of the process and its children\n")


# --- generated projects -------------------------------------------------------------------------
STEPS_PY = '''"""Trivial benchmark steps: read a little of the input, write a small output."""


def step(src: str = "", i: int = 0, scale: float = 1.0) -> dict:
    head = b""
    if src:
        with open(src, "rb") as fh:
            head = fh.read(64)
    return {"out": f"{i}:{scale}:".encode() + head}


def sleep(seconds: float = 1.0, i: int = 0) -> dict:
    import time

    time.sleep(seconds)
    return {"out": f"{i}".encode()}
'''

# the same work for DVC: a script (tracked as a dep, as mlspec tracks the step's code)
DVC_STEP_PY = '''import sys

src, dst, i, scale = sys.argv[1:5]
with open(src, "rb") as fh:
    head = fh.read(64)
with open(dst, "wb") as fh:
    fh.write(f"{i}:{float(scale)}:".encode() + head)
'''


def stage_names(n: int) -> list[str]:
    return [f"s{i:04d}" for i in range(n)]


def graph(shape: str, n: int) -> list[tuple[str, str | None]]:
    """(stage, upstream stage or None for the source) for a chain or a fan-out of n steps in total.

    chain: s0000 <- s0001 <- ... (each reads the previous one's output);
    fan-out: s0000 is the source, s0001..s{n-1} all read it (n-1 wide).
    """
    names = stage_names(n)
    if shape == "chain":
        return [(s, names[k - 1] if k else None) for k, s in enumerate(names)]
    if shape == "fanout":
        return [(s, names[0] if k else None) for k, s in enumerate(names)]
    raise ValueError(shape)


def _reset(d: Path) -> Path:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def write_mlspec_project(d: Path, shape: str, n: int, *, params: dict | None = None, matrix_every: int = 0,
                         extra_steps: str = "") -> Path:
    """A project with a dataset and n trivial `run: bench.steps:step` steps in the given shape.

    matrix_every=k adds, after every k-th chain step, a leaf step with a 3-value matrix reading it (these
    leaves count towards n). ``params`` overrides per-stage params: {stage: {"scale": 2.0}}.
    """
    d = _reset(d)
    (d / "bench").mkdir()
    (d / "bench" / "__init__.py").write_text("")
    (d / "bench" / "steps.py").write_text(STEPS_PY)
    (d / "data").mkdir()
    (d / "data" / "seed.txt").write_text("seed data for the mlspec benchmarks\n")
    params = params or {}
    lines = ["project: bench", "datasets:", "  seed:", "    uri: data/seed.txt", "    format: text", "steps:"]
    if matrix_every:
        n_leaves = n // (matrix_every + 1)
        chain = graph("chain", n - n_leaves)
    else:
        chain = graph(shape, n)
    for k, (name, up) in enumerate(chain):
        src = f"step.{up}.out" if up else "dataset.seed"
        p = {"i": k, "scale": 1.0, **params.get(name, {})}
        lines += [f"  {name}:", "    run: bench.steps:step", "    inputs:", f"      src: {src}",
                  "    outputs: [out]", "    params:"] + [f"      {pk}: {pv!r}" for pk, pv in p.items()]
        if matrix_every and k % matrix_every == matrix_every - 1:
            lines += [f"  m{name[1:]}:", "    run: bench.steps:step", "    inputs:", f"      src: step.{name}.out",
                      "    outputs: [out]", "    params:", f"      i: {k}", "    matrix:", "      scale: [0.5, 1.0, 2.0]"]
    (d / "mlspec.yaml").write_text("\n".join(lines) + "\n" + extra_steps)
    return d


def set_mlspec_param(d: Path, stage: str, key: str, value) -> None:
    """Change one param of one stage in a generated mlspec.yaml (a text edit, as a user would)."""
    path = d / "mlspec.yaml"
    lines = path.read_text().splitlines()
    inside = False
    for k, ln in enumerate(lines):
        if ln == f"  {stage}:":
            inside = True
        elif inside and ln.startswith("  ") and not ln.startswith("   "):
            break
        elif inside and ln.strip().startswith(f"{key}:"):
            lines[k] = ln.split(":", 1)[0] + f": {value!r}"
            path.write_text("\n".join(lines) + "\n")
            return
    raise KeyError(f"{stage}.{key}")


def write_dvc_project(d: Path, shape: str, n: int, dvc: Dvc) -> Path:
    """The same graph as a dvc.yaml pipeline: one stage per step, params in params.yaml, a git repo."""
    d = _reset(d)
    (d / "data").mkdir()
    (d / "data" / "seed.txt").write_text("seed data for the mlspec benchmarks\n")
    (d / "out").mkdir()
    (d / "step.py").write_text(DVC_STEP_PY)
    stages, params = [], []
    for k, (name, up) in enumerate(graph(shape, n)):
        src = f"out/{up}" if up else "data/seed.txt"
        stages += [f"  {name}:", f"    cmd: {PYTHON} step.py {src} out/{name} {k} ${{{name}.scale}}",
                   "    deps:", "      - step.py", f"      - {src}", "    params:", f"      - {name}",
                   "    outs:", f"      - out/{name}"]
        params += [f"{name}:", f"  i: {k}", "  scale: 1.0"]
    (d / "dvc.yaml").write_text("stages:\n" + "\n".join(stages) + "\n")
    (d / "params.yaml").write_text("\n".join(params) + "\n")
    env = dvc.env()
    run(["git", "init", "-q"], d, env)
    run([dvc.bin, "init", "-q"], d, env)
    run([dvc.bin, "config", "core.analytics", "false"], d, env)
    run([dvc.bin, "config", "core.check_update", "false"], d, env, check=False)
    return d


def set_dvc_param(d: Path, stage: str, key: str, value) -> None:
    path = d / "params.yaml"
    lines = path.read_text().splitlines()
    k = lines.index(f"{stage}:")
    for j in range(k + 1, len(lines)):
        if lines[j].strip().startswith(f"{key}:"):
            lines[j] = f"  {key}: {value!r}"
            path.write_text("\n".join(lines) + "\n")
            return
    raise KeyError(f"{stage}.{key}")


def dvc_record_without_running(d: Path, shape: str, n: int, dvc: Dvc) -> Timing:
    """Record DVC's state for a pipeline without running it: write every stage's output exactly as its
    command would, put the outputs in DVC's cache and write dvc.lock exactly as `dvc repro` writes it
    (checked byte for byte against a real `dvc repro` at 10 stages by `python benchmarks/common.py`).

    `dvc repro` of hundreds of stages takes many minutes here, and so does `dvc commit --force` (the
    documented way to record commands run outside DVC: over 4 minutes for 500 stages, superlinear), so
    the graphs `dvc status` is measured on are recorded this way. Returns the time spent."""
    import hashlib

    t0 = time.perf_counter()
    md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
    step = (d / "step.py").read_bytes()
    seed = (d / "data" / "seed.txt").read_bytes()
    outs: dict = {}
    lock = ["schema: '2.0'", "stages:"]
    ignore = []
    for k, (name, up) in enumerate(graph(shape, n)):
        src_path, src = (f"out/{up}", outs[up]) if up else ("data/seed.txt", seed)
        data = f"{k}:{1.0}:".encode() + src[:64]
        outs[name] = data
        (d / "out" / name).write_bytes(data)
        h = md5(data)
        obj = d / ".dvc" / "cache" / "files" / "md5" / h[:2] / h[2:]
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        obj.chmod(0o444)
        ignore.append(f"/{name}")
        deps = sorted([(src_path, src), ("step.py", step)])
        lock += [f"  {name}:", f"    cmd: {PYTHON} step.py {src_path} out/{name} {k} 1.0", "    deps:"]
        for p, b in deps:
            lock += [f"    - path: {p}", "      hash: md5", f"      md5: {md5(b)}", f"      size: {len(b)}"]
        lock += ["    params:", "      params.yaml:", f"        {name}:", f"          i: {k}", "          scale: 1.0",
                 "    outs:", f"    - path: out/{name}", "      hash: md5", f"      md5: {h}", f"      size: {len(data)}"]
    (d / "dvc.lock").write_text("\n".join(lock) + "\n")
    (d / "out" / ".gitignore").write_text("\n".join(ignore) + "\n")
    return Timing(time.perf_counter() - t0, 0.0)


def _selfcheck() -> int:
    """Check dvc_record_without_running against a real `dvc repro` (10-stage chain and fan-out)."""
    dvc = ensure_dvc()
    if not dvc.ok:
        print(dvc.note)
        return 1
    bad = 0
    for shape in ("chain", "fanout"):
        real = write_dvc_project(WORK / "selfcheck" / f"repro-{shape}", shape, 10, dvc)
        run([dvc.bin, "repro", "-q"], real, dvc.env())
        fake = write_dvc_project(WORK / "selfcheck" / f"written-{shape}", shape, 10, dvc)
        dvc_record_without_running(fake, shape, 10, dvc)
        same = (real / "dvc.lock").read_bytes() == (fake / "dvc.lock").read_bytes()
        status = run([dvc.bin, "status"], fake, dvc.env()).stdout.strip().splitlines()[-1]
        print(f"{shape}: dvc.lock identical to dvc repro's: {same}; dvc status: {status}")
        bad += (not same) or ("up to date" not in status)
    return 1 if bad else 0


PYCACHE = WORK / "pycache"


def proc_env(bytecode_cache: bool = True, **extra) -> dict:
    """Environment of every measured process (mlspec and DVC alike).

    With ``bytecode_cache`` (the default) compiled bytecode is cached under benchmarks/.work/pycache
    (PYTHONPYCACHEPREFIX), so nothing is written outside benchmarks/ and modules are not recompiled on
    every start: this machine's environment sets PYTHONDONTWRITEBYTECODE=1, and mlspec is installed
    editable (no .pyc shipped), so without this every mlspec process would compile its own source each
    time, which a user's normal install never does. ``bytecode_cache=False`` keeps the environment as is.
    """
    env = dict(os.environ, NO_COLOR="1")
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra)
    return env


def mlspec_env(**kw) -> dict:
    return proc_env(**kw)


def state_doc(d: Path) -> dict:
    return json.loads((d / ".mlspec" / "state" / "default.state.json").read_text())


ENV_NOTE = ("Run the commands with the benchmark's environment: `env -u PYTHONDONTWRITEBYTECODE "
            "PYTHONPYCACHEPREFIX=benchmarks/.work/pycache NO_COLOR=1 ...` (DVC commands also `DVC_NO_ANALYTICS=1 "
            "DVC_SITE_CACHE_DIR=benchmarks/.work/dvc-site-cache`). Generate a project with "
            "`python benchmarks/common.py gen mlspec|dvc chain|fanout N DIR`.")


def gen_cmd(tool: str, shape: str, n: int, d) -> str:
    return f"{PYTHON} benchmarks/common.py gen {tool} {shape} {n} {rel(d)}"


def _main(argv: list[str]) -> int:
    """`python benchmarks/common.py` checks the DVC shortcut; `... gen mlspec|dvc SHAPE N DIR` generates a
    project as the benchmarks do (for dvc, add `--record` to write its state as `dvc repro` would)."""
    if not argv:
        return _selfcheck()
    if argv[0] == "gen" and len(argv) >= 5:
        tool, shape, n, d = argv[1], argv[2], int(argv[3]), Path(argv[4]).resolve()
        if tool == "mlspec":
            write_mlspec_project(d, shape, n)
        elif tool == "dvc":
            dvc = ensure_dvc()
            if not dvc.ok:
                print(dvc.note)
                return 1
            write_dvc_project(d, shape, n, dvc)
            if "--record" in argv:
                dvc_record_without_running(d, shape, n, dvc)
        else:
            return 2
        print(d)
        return 0
    print(_main.__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
