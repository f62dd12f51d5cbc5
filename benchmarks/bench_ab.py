"""Before and after: the same mlspec measurements on two commits, side by side, alternating A and B.

A is --base REV, B is --head (default: the working tree). Each measurement runs A, B, A, B, ... (after one
untimed warm-up of each side where it is cheap) and reports the median wall time and the median CPU time
(user+sys of the process and its children, RUSAGE_CHILDREN delta) of each side, the ratios B/A and a
verdict: PASS when B/A of the CPU median <= 1 + --tolerance (default 0.10). CPU time is judged because this
machine is shared and noisy; the wall ratio is shown next to it, with the load average.

Measurements (steps are the trivial `run: bench.steps:step` of benchmarks/common.py):
  first     first full `mlspec apply --auto-approve`, 100-step chain and fan-out (a fresh project each run)
  noop      no-op `mlspec apply --auto-approve`, 500-step fan-out
  plan      no-op `mlspec plan`, fan-out and chain at --sizes (default 500,2000)
  param     one param changed in a 500-step fan-out, then `mlspec apply --auto-approve` (1 step re-runs)
  validate  `mlspec validate`, 1,000 steps (10% matrix steps, as bench_validate)
  large     cold `mlspec plan --no-preflight` at 50,000 steps, chain and fan-out: .mlspec/cache removed
            before each run (nothing cached, not even the spec's parse: the first command after an edit,
            or a fresh CI machine). About 10 s a run here: only when asked for (--only large), not in `all`
(--only apply = first,noop,param)

How each side runs its own code: a REV is checked out with `git worktree add --detach` in
benchmarks/.work/ab/<sha12> (reused when present); the working tree is copied (the files git lists:
tracked and untracked-not-ignored) to benchmarks/.work/ab/w<digest11> at the start, so edits made by
others during the run cannot change B half-way. Every measured process runs `python -m mlspec ...` with
PYTHONPATH=<tree>:benchmarks/.work/ab/boot/<key>, where boot/<key>/sitecustomize.py puts an import finder
in front of sys.meta_path that maps the packages of that tree's pyproject.toml (mlspec, and the
package-dir entries mlspec.schemas -> schemas/, mlspec.configs -> configs/, mlspec.templates -> examples/)
to that tree. This is needed because mlspec is installed editable: the venv's finder maps
mlspec.schemas/configs/templates to the main checkout, and PYTHONPATH alone would give the base side the
working tree's schemas and configs. Both sides use the same mechanism; at the start each side's env is
checked (mlspec.__file__, importlib.resources.files() of every mapped package, builtin_configs_dir(), and
mlspec.__file__ in a child process, started as the local backend starts its workers) and the harness
stops if anything resolves outside that side's tree; then a 3-step apply and plan must run on each side.
Measured processes get TMPDIR=benchmarks/.work/ab/tmp (workers' temp dirs, crash logs).

    python benchmarks/bench_ab.py --base REV [--head REV|WORKTREE] [--repeat N] [--quick]
                                  [--sizes 500,2000] [--only first,noop,plan,param,validate,large]
                                  [--tolerance 0.10] [--fresh]

--quick: --repeat 3 (unless given), plan at 500 steps only, first full apply on the chain only.
Nothing is written outside benchmarks/.work/ (except git's own worktree records under .git/worktrees).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import common as c

AB = c.WORK / "ab"
BOOT = AB / "boot"
PROJ = AB / "proj"
TMP = AB / "tmp"  # TMPDIR of the measured processes (workers' temp dirs, crash logs): same file system as /tmp here
GROUPS = ("first", "noop", "plan", "param", "validate", "large")
ALIASES = {"apply": ("first", "noop", "param"), "all": GROUPS[:-1]}

SITECUSTOMIZE = '''"""Written by benchmarks/bench_ab.py: import mlspec from {tree!r}.

An import finder in front of sys.meta_path maps the packages of that tree's pyproject.toml to its
directories (the editable install of the venv would map mlspec.schemas/configs/templates to the main
checkout). Then the next sitecustomize on sys.path, if any, runs as it would have.
"""
import os as _os
import sys as _sys
from importlib.machinery import ModuleSpec as _ModuleSpec
from importlib.util import spec_from_file_location as _spec_from_file_location

MAP = {mapping!r}


class BenchABTreeFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        d = MAP.get(fullname)
        if d is None:
            return None
        init = _os.path.join(d, "__init__.py")
        if _os.path.isfile(init):
            return _spec_from_file_location(fullname, init, submodule_search_locations=[d])
        spec = _ModuleSpec(fullname, None, is_package=True)
        spec.submodule_search_locations = [d]
        return spec


_sys.meta_path.insert(0, BenchABTreeFinder)


def _chain():
    here = _os.path.dirname(_os.path.abspath(__file__))
    for p in _sys.path:
        f = _os.path.join(_os.path.abspath(p or "."), "sitecustomize.py")
        if _os.path.dirname(f) != here and _os.path.isfile(f):
            with open(f, "rb") as fh:
                exec(compile(fh.read(), f, "exec"), {{"__name__": "sitecustomize", "__file__": f}})
            return


_chain()
'''

VERIFY = r"""
import json, subprocess, sys
from importlib import resources
import mlspec
out = {"mlspec": mlspec.__file__}
for pkg in sys.argv[1:]:
    try:
        out[pkg] = str(resources.files(pkg))
    except Exception as exc:  # noqa: BLE001
        out[pkg] = "error: %r" % (exc,)
import importlib
for mod in ("mlspec.compose", "mlspec.compose.sources"):
    try:
        out["builtin_configs_dir()"] = str(importlib.import_module(mod).builtin_configs_dir())
        break
    except Exception as exc:  # noqa: BLE001
        out["builtin_configs_dir()"] = "error: %r" % (exc,)
child = subprocess.run([sys.executable, "-c", "import mlspec; print(mlspec.__file__)"], capture_output=True, text=True)
out["mlspec in a child process"] = child.stdout.strip() or child.stderr.strip()[-300:]
print(json.dumps(out))
"""


# --- the two sides ------------------------------------------------------------------------------
def git(*args: str, cwd: Path = c.REPO, check: bool = True) -> str:
    for attempt in range(30):
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
        if p.returncode == 0 or not check:
            return p.stdout.strip()
        if "index.lock" in p.stderr and attempt < 29:
            c.say("[ab] .git/index.lock exists (another git command is running): retrying in 2 s")
            time.sleep(2)
            continue
        raise SystemExit(f"git {' '.join(args)} failed: {p.stderr.strip()}")
    raise AssertionError("unreachable")


def package_map(tree: Path) -> dict:
    """{package: directory} as the tree's pyproject.toml lays the packages out (setuptools package-dir)."""
    mapping = {"mlspec": str(tree / "mlspec")}
    try:
        import tomllib

        conf = tomllib.loads((tree / "pyproject.toml").read_text())
    except Exception as exc:  # noqa: BLE001 - a tree without a readable pyproject: plain layout
        c.say(f"[ab] WARNING: cannot read {tree / 'pyproject.toml'} ({exc}); mapping only mlspec -> mlspec/")
        return mapping
    st = conf.get("tool", {}).get("setuptools", {})
    pkgdir = st.get("package-dir", {}) or {}
    for pkg in st.get("packages") or []:
        parts = pkg.split(".")
        for k in range(len(parts), 0, -1):
            head = ".".join(parts[:k])
            if head in pkgdir:
                d = Path(pkgdir[head], *parts[k:])
                break
        else:
            d = Path(pkgdir.get("", "."), *parts)
        if (tree / d).is_dir():
            mapping[pkg] = str(tree / d)
    return mapping


@dataclass
class Side:
    label: str  # "A" or "B"
    spec: str  # as given on the command line
    desc: str  # for the report
    key: str  # 12 characters: names the tree, its boot dir and its projects
    tree: Path
    sha: str | None = None
    env: dict = field(default_factory=dict)
    pypath: str = ""
    checked: dict = field(default_factory=dict)

    @property
    def proj(self) -> Path:
        # per side as well as per tree: `--base X --head X` (an A/A run, to see the noise) gets two projects
        return PROJ / self.label / self.key

    def cmd(self, *args: str) -> list[str]:
        return [c.PYTHON, "-m", "mlspec", *args]


def snapshot_worktree() -> tuple[Path, str, str]:
    """Copy the working tree's files (tracked and untracked, not ignored) to benchmarks/.work/ab/w<digest>."""
    files = [f for f in git("ls-files", "-z", "-c", "-o", "--exclude-standard").split("\0") if f]
    h = hashlib.sha256()
    present = []
    for f in sorted(set(files)):
        p = c.REPO / f
        if f.startswith("benchmarks/.work/") or not p.is_file() or p.is_symlink():
            continue
        present.append(f)
        h.update(f.encode() + b"\0" + p.read_bytes() + b"\0")
    digest = h.hexdigest()
    dest = AB / ("w" + digest[:11])
    if not (dest / ".bench-ab-complete").exists():
        tmp = AB / (dest.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for f in present:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(c.REPO / f, tmp / f)
        (tmp / ".bench-ab-complete").write_text(digest + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    os.utime(dest)
    prune_copies(keep=dest.name)
    head = git("log", "-1", "--format=%h")
    dirty = git("status", "--porcelain", "--untracked-files=all", "--", ".")
    desc = f"working tree (HEAD {head}" + (" + uncommitted changes" if dirty else ", clean") + \
           f"), copied at the start to {c.rel(dest)}"
    return dest, dest.name, desc


def prune_copies(keep: str, days: float = 1.0) -> None:
    """Copies of the working tree pile up (one per state of the code): drop those unused for a day, with their
    projects (a 2,000-step recorded project is tens of MB)."""
    for d in AB.glob("w" + "?" * 11):
        if d.name != keep and d.is_dir() and time.time() - d.stat().st_mtime > days * 86400:
            c.say(f"[ab] removing {c.rel(d)} and its projects (unused for over {days:g} day)")
            for x in (d, PROJ / "A" / d.name, PROJ / "B" / d.name, BOOT / d.name):
                shutil.rmtree(x, ignore_errors=True)


def worktree(rev: str) -> tuple[Path, str, str]:
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = AB / sha[:12]
    ok = False
    if path.exists():
        got = git("-C", str(path), "rev-parse", "HEAD", check=False)
        clean = git("-C", str(path), "status", "--porcelain", "--untracked-files=no", check=False) == ""
        ok = got == sha and clean
        if not ok:
            c.say(f"[ab] {c.rel(path)} is not a clean checkout of {sha[:12]}: recreating it")
            git("worktree", "remove", "--force", str(path), check=False)
            shutil.rmtree(path, ignore_errors=True)
            git("worktree", "prune")
    if not ok:
        AB.mkdir(parents=True, exist_ok=True)
        c.say(f"[ab] git worktree add --detach {c.rel(path)} {sha[:12]}")
        git("worktree", "add", "--detach", str(path), sha)
    subject = git("log", "-1", "--format=%h %cI %s", sha)
    return path, sha, subject


def make_side(label: str, spec: str) -> Side:
    if spec.upper() in ("WORKTREE", "WORKING-TREE", "."):
        tree, key, desc = snapshot_worktree()
        side = Side(label, spec, desc, key, tree)
    else:
        tree, sha, subject = worktree(spec)
        side = Side(label, spec, f"`{spec}` = {subject[:110]}", sha[:12], tree, sha)
    mapping = package_map(side.tree)
    boot = BOOT / side.key
    boot.mkdir(parents=True, exist_ok=True)
    text = SITECUSTOMIZE.format(tree=str(side.tree), mapping=mapping)
    f = boot / "sitecustomize.py"
    if not f.exists() or f.read_text() != text:
        f.write_text(text)
    side.pypath = f"{side.tree}{os.pathsep}{boot}"
    old = os.environ.get("PYTHONPATH")
    TMP.mkdir(parents=True, exist_ok=True)
    side.env = c.mlspec_env(PYTHONPATH=side.pypath + (os.pathsep + old if old else ""), TMPDIR=str(TMP))
    side.checked = verify(side, mapping)
    smoke(side)
    return side


def smoke(side: Side) -> None:
    """A 3-step apply and plan, so that a tree that does not run stops the harness at once."""
    d = c.write_mlspec_project(side.proj / "smoke" / "p", "chain", 3)
    for args in (("apply", "--auto-approve"), ("plan",)):
        try:
            c.run(side.cmd(*args), d, side.env)
        except c.CommandFailed as exc:
            raise SystemExit(f"side {side.label} ({side.spec}, {c.rel(side.tree)}): `mlspec {' '.join(args)}` does "
                             f"not run on a 3-step project, nothing to compare:\n{exc}")


def verify(side: Side, mapping: dict) -> dict:
    """Run the side's env once: every mapped package and mlspec in a child process resolve into its tree."""
    pkgs = [p for p in mapping if p != "mlspec"]
    AB.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([c.PYTHON, "-c", VERIFY, *pkgs], cwd=AB, env=side.env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"side {side.label} ({side.spec}): mlspec does not import from {side.tree}:\n{p.stderr[-2000:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    want = {"mlspec": str(Path(mapping["mlspec"]) / "__init__.py"),
            "mlspec in a child process": str(Path(mapping["mlspec"]) / "__init__.py")}
    want.update({pkg: mapping[pkg] for pkg in pkgs})
    if got.get("builtin_configs_dir()", "").startswith("error"):  # not in every commit: resources.files suffices
        got.pop("builtin_configs_dir()")
    elif "mlspec.configs" in mapping:
        want["builtin_configs_dir()"] = mapping["mlspec.configs"]
    bad = [f"{k}: {got.get(k)!r} (expected {v!r})" for k, v in want.items()
           if os.path.realpath(str(got.get(k))) != os.path.realpath(v)]
    extra = {k: v for k, v in got.items() if k not in want}
    for k, v in extra.items():  # e.g. builtin_configs_dir() where configs is not a package of this tree
        if not os.path.realpath(v).startswith(os.path.realpath(side.tree) + os.sep):
            bad.append(f"{k}: {v!r} (outside {side.tree})")
    if bad:
        raise SystemExit(f"side {side.label} ({side.spec}) does not import its own tree {side.tree}:\n  "
                         + "\n  ".join(bad))
    return got


# --- measurements -------------------------------------------------------------------------------
@dataclass
class Measure:
    group: str
    label: str
    args: tuple
    setup: Callable[[Side], Path]  # untimed, once per side: the project directory
    before: Callable[[Side, Path, int], None] | None = None  # untimed, before every run (warm-up: i = -1)
    expect: str = ""  # text the output should contain (a warning otherwise: commits may word it differently)
    warmup: int = 1
    note: str = ""


@dataclass
class Result:
    m: Measure
    stats: dict = field(default_factory=dict)  # label -> c.Stat
    dirs: dict = field(default_factory=dict)
    error: str = ""
    load: tuple = ()
    pairs: list = field(default_factory=list)  # CPU ratio B/A of each adjacent pair


def fresh(shape: str, n: int, **kw):
    def setup(side: Side) -> Path:
        return side.proj / f"{shape}-{n}" / "p"

    def before(side: Side, d: Path, i: int) -> None:
        c.write_mlspec_project(d, shape, n, **kw)

    return setup, before


def recorded(name: str, shape: str, n: int, args, reuse: bool):
    """A project whose state was recorded by the side's own `mlspec apply --auto-approve` (untimed).

    Plan projects are reused between runs when the generated spec is identical and the tree is the same
    (a no-op plan does not change them); --fresh redoes them."""

    done: dict = {}

    def setup(side: Side) -> Path:
        d = side.proj / name / "p"
        if side.label in done:  # set up already in this run (the param change follows the no-op apply)
            return d
        done[side.label] = True
        marker = d.parent / "ready"
        probe = c.write_mlspec_project(side.proj / "probe", shape, n)
        want = hashlib.sha256((probe / "mlspec.yaml").read_bytes()).hexdigest()
        if reuse and not args.fresh and marker.exists() and marker.read_text() == want:
            return d
        marker.unlink(missing_ok=True)
        c.write_mlspec_project(d, shape, n)
        c.say(f"[ab] set-up {side.label}: {c.rel(d)}: mlspec apply --auto-approve ({shape}, {n} steps)")
        t = c.run(side.cmd("apply", "--auto-approve"), d, side.env)
        c.say(f"       {c.fmt_s(t.wall)} (CPU {c.fmt_s(t.cpu)})")
        marker.write_text(want)
        return d

    return setup


def measurements(args) -> list[Measure]:
    ms: list[Measure] = []
    on = set(args.only)
    if "first" in on:
        for shape in (("chain",) if args.quick else ("chain", "fanout")):
            setup, before = fresh(shape, 100)
            ms.append(Measure("first", f"first full apply, {shape} 100", ("apply", "--auto-approve"), setup, before,
                              expect="100 ran", warmup=0, note="fresh project each run"))
    big = recorded("apply-fanout-500", "fanout", 500, args, reuse=False)
    if "noop" in on:
        ms.append(Measure("noop", "no-op apply, fanout 500", ("apply", "--auto-approve"), big, expect="No changes"))
    if "plan" in on:
        for n in args.sizes:
            for shape in ("fanout", "chain"):
                ms.append(Measure("plan", f"no-op plan, {shape} {n:,}", ("plan",),
                                  recorded(f"plan-{shape}-{n}", shape, n, args, reuse=True), expect="No changes"))
    if "param" in on:
        stage = "s0250"

        def change(side: Side, d: Path, i: int) -> None:
            # a value never used before: no run-cache hit, exactly one step re-runs
            c.set_mlspec_param(d, stage, "scale", round(3.0 + i + (time.time() % 1), 6))

        # the project of the no-op apply (if it ran, it was set up already; it is not needed afterwards)
        ms.append(Measure("param", "one param changed, fanout 500, apply", ("apply", "--auto-approve"), big, change,
                          expect="1 ran", note=f"steps.{stage}.params.scale edited before each run"))
    if "validate" in on:
        def vsetup(side: Side) -> Path:
            return c.write_mlspec_project(side.proj / "validate-1000" / "p", "chain", 1000, matrix_every=9)

        ms.append(Measure("validate", "validate, 1,000 steps", ("validate",), vsetup, expect="1000 steps"))
    if "large" in on:
        for shape in ("chain", "fanout"):
            def lsetup(side: Side, shape=shape) -> Path:
                d = side.proj / f"large-{shape}-50000" / "p"
                if not (d / "mlspec.yaml").exists():  # the same spec every time: generated once
                    c.write_mlspec_project(d, shape, 50000)
                return d

            def cold(side: Side, d: Path, i: int) -> None:
                shutil.rmtree(d / ".mlspec" / "cache", ignore_errors=True)

            ms.append(Measure("large", f"cold plan, {shape} 50,000", ("plan", "--no-preflight"), lsetup, cold,
                              expect="50000 to run", note="rm -rf .mlspec/cache before each run"))
    return ms


class SideFailed(RuntimeError):
    pass


def run_side(s: Side, m: Measure, d: Path) -> c.Timing:
    try:
        return c.run(s.cmd(*m.args), d, s.env)
    except c.CommandFailed as exc:
        raise SideFailed(s.label, exc) from None


def run_measure(m: Measure, sides: list[Side], repeat: int) -> Result:
    r = Result(m)
    load0 = os.getloadavg()[0]
    try:
        for s in sides:
            try:
                r.dirs[s.label] = m.setup(s)
            except c.CommandFailed as exc:
                raise SideFailed(s.label, exc) from None
            r.stats[s.label] = c.Stat()
        for w in range(m.warmup):
            for s in sides:
                if m.before:
                    m.before(s, r.dirs[s.label], -1 - w)
                out = run_side(s, m, r.dirs[s.label]).stdout
                if m.expect and m.expect not in out:
                    c.say(f"  WARNING ({s.label}): expected {m.expect!r} in the output of {m.label}:\n"
                          + "\n".join(out.strip().splitlines()[-5:]))
        for i in range(repeat):
            row = {}
            for s in sides:
                if m.before:
                    m.before(s, r.dirs[s.label], i)
                t = run_side(s, m, r.dirs[s.label])
                if m.expect and m.expect not in t.stdout and (i == 0 or m.warmup == 0):
                    c.say(f"  WARNING ({s.label}): expected {m.expect!r} in the output of {m.label}:\n"
                          + "\n".join(t.stdout.strip().splitlines()[-5:]))
                r.stats[s.label].add(t)
                row[s.label] = t
            r.pairs.append(row["B"].cpu / row["A"].cpu if row["A"].cpu else float("nan"))
            c.say(f"[ab] {m.label} ({i + 1}/{repeat}): A {c.fmt_s(row['A'].wall)} (CPU {c.fmt_s(row['A'].cpu)}), "
                  f"B {c.fmt_s(row['B'].wall)} (CPU {c.fmt_s(row['B'].cpu)})")
    except SideFailed as exc:
        label, err = exc.args
        lines = str(err).splitlines()
        why = next((ln.strip() for ln in lines[1:] if ln.strip()), lines[0])
        r.error = f"side {label}: {why[:160]}"
        c.say(f"  FAILED on side {label}: {err}")
    r.load = (load0, os.getloadavg()[0])
    return r


# --- report -------------------------------------------------------------------------------------
def rat(b: float, a: float) -> float:
    return b / a if a and a == a and b == b else float("nan")


def fmt_ratio(x: float) -> str:
    return "—" if x != x else f"{x:.3f} ({(x - 1) * 100:+.1f} %)"


def report(results: list[Result], sides: list[Side], args, t0: float, load_start: tuple, argv: list[str]) -> str:
    A, B = sides
    tol = args.tolerance
    rows, detail = [], []
    fails = errors = 0
    failed_groups: list[str] = []
    for r in results:
        a, b = r.stats.get("A"), r.stats.get("B")
        if r.error or not a or not a.walls or not b.walls:
            errors += 1
            rows.append([r.m.label, "—", "—", "—", "—", "—", "—", f"ERROR: {r.error or 'no samples'}"])
            continue
        wr, cr = rat(b.median, a.median), rat(b.cpu, a.cpu)
        ok = cr <= 1 + tol
        fails += not ok
        paired = statistics.median(r.pairs) if r.pairs else float("nan")
        verdict = c.verdict(ok)
        if not ok and paired <= 1 + tol:
            verdict += f" (paired {(paired - 1) * 100:+.1f} %: noise?)"
        rows.append([r.m.label, c.fmt_s(a.median), c.fmt_s(b.median), fmt_ratio(wr), c.fmt_s(a.cpu), c.fmt_s(b.cpu),
                     fmt_ratio(cr), verdict])
        if not ok:
            failed_groups.append(r.m.group)
        detail.append([r.m.label, f"n={len(a.walls)}", a.spread.split(" (")[0], b.spread.split(" (")[0],
                       f"{c.fmt_s(min(a.cpus))}–{c.fmt_s(max(a.cpus))}", f"{c.fmt_s(min(b.cpus))}–{c.fmt_s(max(b.cpus))}",
                       fmt_ratio(statistics.median(r.pairs)) if r.pairs else "—",
                       f"{r.load[0]:.2f} → {r.load[1]:.2f}", r.m.note or ""])
    load = os.getloadavg()
    pinned = ["--base", A.sha or A.spec, "--head", B.sha or "WORKTREE"] + drop_opts(argv, {"--base", "--head"})
    out = [
        "## bench_ab: before (A) and after (B), side by side\n",
        f"- **A** (`--base`): {A.desc}",
        f"- **B** (`--head`): {B.desc}",
        *(["- A and B are the same code: an A/A run, whose ratios show the noise of this machine"]
          if A.tree == B.tree else []),
        f"- mlspec imported from: A `{c.rel(A.checked['mlspec'])}`, B `{c.rel(B.checked['mlspec'])}` "
        "(checked at the start, with schemas/configs/templates and a child process)",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} at the start, "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end",
        f"- {args.repeat} timed run{'s' if args.repeat > 1 else ''} per side per measurement, alternating A, B, A, B, ... (after one untimed "
        "warm-up of each side, except first full applies); medians; wall = whole process, CPU = user+sys of the "
        "process and its children",
        f"- verdict: PASS when B/A of the CPU median <= {1 + tol:.2f} (--tolerance {tol:g}); the wall ratio is "
        "shown for information (other jobs on this shared machine inflate wall time, not CPU time)",
        f"- total time {time.time() - t0:.0f} s\n",
        c.table(["measurement", "A wall", "B wall", "B/A wall", "A CPU", "B CPU", "B/A CPU", "verdict"], rows),
        f"\n{len(rows) - fails - errors} of {len(rows)} within tolerance" + (f"; **{fails} over**" if fails else "")
        + (f"; **{errors} not measured** (a command failed)" if errors else "") + "."
        + (" Confirm a FAIL before believing it, with more runs: `python benchmarks/bench_ab.py "
           + shlex.join(drop_opts(pinned, {"--only", "--repeat"})
                        + ["--only", ",".join(dict.fromkeys(failed_groups)), "--repeat", "9"]) + "`."
           if failed_groups else "") + "\n",
        "Spread (min–max of the timed runs), the median of the per-pair CPU ratios (each B run against the A run "
        "just before it; less sensitive to load that drifts during the run) and the 1-minute load average at the "
        "start → end of each measurement:\n",
        c.table(["measurement", "runs", "A wall range", "B wall range", "A CPU range", "B CPU range",
                 "paired B/A CPU", "load", "note"], detail),
        "\nReproduce (from the repository root, in the activated venv):\n",
        "```console",
        "python benchmarks/bench_ab.py " + shlex.join(argv),
        "# the same commits, pinned:" if B.sha else "# A pinned (B is the working tree):",
        "python benchmarks/bench_ab.py " + shlex.join(pinned),
    ]
    ex = next((r for r in results if "A" in r.dirs and r.m.group != "first"), None) or \
        next((r for r in results if "A" in r.dirs), None)
    if ex:
        gen = ""
        if ex.m.group == "first":
            shape, n = ex.m.label.split(", ")[1].split()
            gen = f"python benchmarks/common.py gen mlspec {shape} {n} {c.rel(ex.dirs['A'])} && "
        out += [f"# one measured command by hand ({ex.m.label}), side A (side B: {c.rel(B.proj)} and {B.key} in PYTHONPATH):",
                f"{gen}(cd {c.rel(ex.dirs['A'])} && env -u PYTHONDONTWRITEBYTECODE "
                f"PYTHONPYCACHEPREFIX=\"$OLDPWD/benchmarks/.work/pycache\" NO_COLOR=1 "
                f"PYTHONPATH=\"$OLDPWD/{c.rel(A.tree)}:$OLDPWD/{c.rel(BOOT / A.key)}\" "
                f"python -m mlspec {shlex.join(ex.m.args)})"]
    out.append("```")
    changed = [s for s in sides if s.sha is None and c.code_version() != START]
    if changed:
        out.append("\nNote: the working tree's mlspec code changed during the run; B measured the copy taken at the "
                   "start.")
    return "\n".join(out)


def drop_opts(argv: list[str], names: set) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if a.split("=", 1)[0] in names:
            continue
        out.append(a)
    return out


START = c.START_VERSION


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--base", required=True, metavar="REV", help="commit A (any git revision)")
    ap.add_argument("--head", default="WORKTREE", metavar="REV|WORKTREE",
                    help="commit B (default: WORKTREE, the working tree, copied at the start)")
    ap.add_argument("--repeat", type=int, default=None, metavar="N", help="timed runs per side (default 5, 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="--repeat 3, plan at 500 steps only, first apply on the chain only")
    ap.add_argument("--sizes", default=None, help="no-op plan sizes, comma-separated (default 500,2000; 500 with --quick)")
    ap.add_argument("--only", default="all", help=f"comma-separated: {','.join(GROUPS)}, apply (= first,noop,param), all (= all but large)")
    ap.add_argument("--tolerance", type=float, default=0.10, metavar="T", help="PASS when B/A CPU <= 1 + T (default 0.10)")
    ap.add_argument("--fresh", action="store_true", help="redo the recorded state of the plan projects")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    args.sizes = [int(x) for x in (args.sizes or ("500" if args.quick else "500,2000")).split(",") if x.strip()]
    only: list[str] = []
    for g in args.only.split(","):
        g = g.strip()
        if g in ALIASES:
            only += ALIASES[g]
        elif g in GROUPS:
            only.append(g)
        elif g:
            ap.error(f"--only: unknown measurement {g!r} (choose from {', '.join(GROUPS)}, apply, all)")
    args.only = only

    t0 = time.time()
    load_start = os.getloadavg()
    c.say(f"[ab] load average {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}")
    sides = [make_side("A", args.base), make_side("B", args.head)]
    for s in sides:
        c.say(f"[ab] {s.label}: {s.desc}")
        for k, v in s.checked.items():
            c.say(f"       {k:<28} {c.rel(v)}")
    if sides[0].tree == sides[1].tree:
        c.say("[ab] note: A and B are the same code")
    results = [run_measure(m, sides, args.repeat) for m in measurements(args)]
    print(report(results, sides, args, t0, load_start, argv))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
