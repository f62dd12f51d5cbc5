"""No-op `mlspec plan` (state recorded, nothing to do) vs `dvc status`, chains and fan-outs, whole process.

Graphs of N steps in total: chain = each step reads the previous step's output; fan-out = one source
step, N-1 steps all reading it. Every step is trivial (`run: bench.steps:step`, a few bytes out). The
state is recorded once per graph by `mlspec apply --auto-approve` (timed once, shown for information),
and for DVC by writing every stage's output, its cache object and dvc.lock exactly as `dvc repro` would
(byte-identical: `python benchmarks/common.py` checks it; `dvc repro` and even `dvc commit --force` of
hundreds of stages take many minutes here); `dvc status` is then "up to date" on the same graph.
DVC's slowest sizes get fewer timed runs (--dvc-budget seconds per measurement; n is shown).

Targets: no-op plan at 500 steps < 0.5 s, at 2,000 steps < 1 s, growing linearly (ms per step shown).
Also checked: a re-plan over unchanged data reads no data bytes (`HashCache.bytes_read` of an in-process
`Project.open(dir).plan()`) and does not rewrite `.mlspec/cache/hashes.json` (mtime unchanged).

    python benchmarks/bench_plan.py [--quick] [--repeat N] [--no-dvc] [--fresh] [--profile]
                                   [--dvc-budget S] [--dvc-max N]

--quick: 10 / 100 / 500 steps (else also 2,000), DVC up to 100 stages (else 500). Set-ups are kept in benchmarks/.work/plan and reused
when the generated project is identical (--fresh redoes them).
"""

from __future__ import annotations

import hashlib
import json
import sys

import common as c

TARGETS = {500: 0.5, 2000: 1.0}

PROBE = r"""
import json, os, sys
from mlspec.project import Project
d = sys.argv[1]
cache = os.path.join(d, ".mlspec", "cache", "hashes.json")
before = os.stat(cache).st_mtime_ns if os.path.exists(cache) else None
p = Project.open(d)
plan = p.plan()[0]
after = os.stat(cache).st_mtime_ns if os.path.exists(cache) else None
print(json.dumps({"bytes_read": p.cache.bytes_read, "has_changes": plan.has_changes,
                  "cache_rewritten": before != after, "cache_entries": len(p.cache.entries)}))
"""


def digest(d) -> str:
    h = hashlib.sha256()
    for f in ("mlspec.yaml", "dvc.yaml", "params.yaml", "bench/steps.py", "step.py"):
        p = d / f
        if p.exists():
            h.update(f.encode() + p.read_bytes())
    return h.hexdigest()


def setup_mlspec(shape: str, n: int, fresh: bool, mlspec: str):
    d = c.WORK / "plan" / f"mlspec-{shape}-{n}"
    marker = d / ".bench-ready"
    probe = c.WORK / "plan" / "probe"
    c.write_mlspec_project(probe, shape, n)
    want = digest(probe)
    if not fresh and marker.exists() and marker.read_text() == want:
        return d, None
    c.write_mlspec_project(d, shape, n)
    c.say(f"[plan] setting up {c.rel(d)}: mlspec apply --auto-approve ({n} steps) ...")
    t = c.run([mlspec, "apply", "--auto-approve"], d, c.mlspec_env())
    marker.write_text(want)
    return d, t


def setup_dvc(shape: str, n: int, dvc: c.Dvc):
    d = c.WORK / "plan" / f"dvc-{shape}-{n}"
    c.write_dvc_project(d, shape, n, dvc)
    c.say(f"[plan] setting up {c.rel(d)}: outputs, cache and dvc.lock as dvc repro writes them ({n} stages)")
    return d, c.dvc_record_without_running(d, shape, n, dvc)


def main() -> int:
    ap = c.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true", help="redo the recorded state of every graph")
    ap.add_argument("--sizes", default="", help="comma-separated graph sizes instead of the defaults")
    ap.add_argument("--profile", action="store_true", help="cProfile the no-op plan at the largest size")
    ap.add_argument("--dvc-budget", type=float, default=60.0, metavar="S",
                    help="seconds per DVC measurement before repeats are cut (default 60)")
    ap.add_argument("--dvc-max", type=int, default=None, metavar="N",
                    help="largest graph to run DVC on (default 500, 100 with --quick: `dvc status` grows "
                         "superlinearly, over a minute at 500 stages here)")
    args = ap.parse_args()
    sizes = [10, 100, 500] if args.quick else [10, 100, 500, 2000]
    if args.dvc_max is None:
        args.dvc_max = 100 if args.quick else 500
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    mlspec = c.mlspec_bin()
    env = c.mlspec_env()
    dvc = c.ensure_dvc(args.no_dvc)
    rows, probe_rows, setup_rows, cmds, probe_cmds = [], [], [], [], []
    res: dict = {}
    for shape in ("chain", "fanout"):
        for n in sizes:
            d, setup = setup_mlspec(shape, n, args.fresh, mlspec)
            cmd = [mlspec, "plan"]
            out = c.run(cmd, d, env).stdout
            if "No changes" not in out and setup is None:  # a kept set-up from older code: redo it
                d, setup = setup_mlspec(shape, n, True, mlspec)
                out = c.run(cmd, d, env).stdout
            noop = "No changes" in out
            if not noop:
                c.say(f"  WARNING: plan is not a no-op in {d}:\n{out[-600:]}")
            c.say(f"[plan] mlspec plan, {shape} {n}")
            st = c.measure(cmd, d, env, args.repeat)
            res[(shape, n)] = st
            cmds.append(c.cmdline(cmd, d))
            # the re-plan reads no data: CLI re-plan leaves hashes.json alone, in-process bytes_read is 0
            cache = d / ".mlspec" / "cache" / "hashes.json"
            m0 = cache.stat().st_mtime_ns
            c.run(cmd, d, env)
            cli_rewrote = cache.stat().st_mtime_ns != m0
            pr = json.loads(c.run([c.PYTHON, "-c", PROBE, str(d)], None, env).stdout.strip().splitlines()[-1])
            probe_cmds.append(f"{c.PYTHON} -c 'from mlspec.project import Project; p = Project.open(\"{c.rel(d)}\"); "
                              "p.plan(); print(p.cache.bytes_read)'")
            probe_rows.append([shape, f"{n:,}", pr["bytes_read"], "yes" if (cli_rewrote or pr["cache_rewritten"]) else "no",
                               pr["cache_entries"], c.verdict(pr["bytes_read"] == 0 and not cli_rewrote
                                                              and not pr["cache_rewritten"])])
            dvc_cell = dvc_cpu = ratio_cell = "—"
            if dvc.ok and n <= args.dvc_max:
                dd, dsetup = setup_dvc(shape, n, dvc)
                dcmd = [dvc.bin, "status"]
                dout = c.run(dcmd, dd, dvc.env()).stdout
                if "up to date" not in dout:
                    c.say(f"  WARNING: dvc status is not clean in {dd}:\n{dout[-600:]}")
                c.say(f"[plan] dvc status, {shape} {n}")
                dst = c.measure(dcmd, dd, dvc.env(), args.repeat, budget=args.dvc_budget)
                res[("dvc", shape, n)] = dst
                dvc_cell, dvc_cpu = c.fmt_s(dst.median), c.fmt_s(dst.cpu)
                ratio_cell = f"{c.ratio(dst.median, st.median)} ({c.ratio(dst.cpu, st.cpu)})"
                cmds.append(c.cmdline(dcmd, dd))
                if dsetup:
                    setup_rows.append([shape, f"{n:,}", "dvc: outputs, cache and dvc.lock written directly", c.fmt_s(dsetup.wall)])
            elif dvc.ok:
                dvc_cell = "not run (--dvc-max)"
            if setup:
                setup_rows.append([shape, f"{n:,}", "mlspec apply --auto-approve (first run)", c.fmt_s(setup.wall)])
            target = TARGETS.get(n)
            rows.append([shape, f"{n:,}" + ("" if noop else " (**not a no-op!**)"), c.fmt_s(st.median), c.fmt_s(st.cpu), st.spread, c.fmt_ms(st.median / n, 2),
                         dvc_cell, dvc_cpu, ratio_cell, f"< {c.fmt_s(target)}" if target else "—",
                         c.verdict(st.median < target) if target else "—",
                         c.verdict(st.cpu < target) if target else "—"])

    print(c.header("bench_plan: no-op `mlspec plan` vs `dvc status`, whole process", args))
    print(f"- peer: {dvc.version if dvc.ok else dvc.note}\n")
    print(c.table(["shape", "steps", "mlspec plan (median)", "CPU", "range", "per step", "dvc status", "DVC CPU",
                   "DVC / mlspec wall (CPU)", "target", "result (wall)", "result (CPU)"], rows))
    print(c.CPU_NOTE)
    print("\nLinearity: marginal cost per added step between sizes (wall median; CPU median in brackets)\n")
    lin = []
    for shape in ("chain", "fanout"):
        for a, b in zip(sizes, sizes[1:]):
            sa, sb = res[(shape, a)], res[(shape, b)]
            cell = (f"{c.fmt_ms((sb.median - sa.median) / (b - a), 3)} "
                    f"({c.fmt_ms((sb.cpu - sa.cpu) / (b - a), 3)})")
            dcell = "—"
            if ("dvc", shape, a) in res and ("dvc", shape, b) in res:
                da, db = res[("dvc", shape, a)], res[("dvc", shape, b)]
                dcell = f"{c.fmt_ms((db.median - da.median) / (b - a), 3)} ({c.fmt_ms((db.cpu - da.cpu) / (b - a), 3)})"
            lin.append([shape, f"{a:,} -> {b:,}", cell, dcell])
    print(c.table(["shape", "sizes", "mlspec per added step", "DVC per added step"], lin))
    import math

    for shape in ("chain", "fanout"):
        have = sorted(n for (t, s_, n) in [k for k in res if k[0] == "dvc"] if s_ == shape)
        if dvc.ok and have and have[-1] < sizes[-1]:
            b = have[-1]
            text = f"\n`dvc status` on the {shape} was not run above {b:,} stages (--dvc-max)"
            if len(have) >= 2 and have[-2] >= 100:  # below 100 stages the fixed cost hides the growth
                a = have[-2]
                ta, tb = res[("dvc", shape, a)].cpu, res[("dvc", shape, b)].cpu
                k = math.log(tb / ta) / math.log(b / a)
                est = tb * (sizes[-1] / b) ** k
                text += (f"; its CPU time grows as n^{k:.2f} between {a:,} and {b:,}, which extrapolates to about "
                         f"{c.fmt_s(est) if est < 120 else f'{est / 60:.0f} min'} at {sizes[-1]:,}")
            print(text + ".")
    print("\nRe-plan over unchanged data (after the timed runs): data bytes read by an in-process "
          "`Project.open(d).plan()` (HashCache.bytes_read) and whether `.mlspec/cache/hashes.json` was rewritten "
          "by a CLI re-plan or by the in-process one\n")
    print(c.table(["shape", "steps", "bytes_read", "hashes.json rewritten", "cache entries", "result"], probe_rows))
    if setup_rows:
        print("\nSet-up runs (once; not part of the measurement)\n")
        print(c.table(["shape", "steps", "how", "wall"], setup_rows))
    print("\nReproduce (from the repository root; the recorded projects stay in benchmarks/.work/plan). "
          + c.ENV_NOTE + "\n")
    print("```console\n" + "\n".join(cmds + probe_cmds) + "\n```")
    if args.profile:
        n = sizes[-1]
        for shape in ("chain", "fanout"):
            profile(c.WORK / "plan" / f"mlspec-{shape}-{n}", f"{shape} {n}")
    return 0


def profile(d, label) -> None:
    code = ("import cProfile, pstats, io, sys\n"
            "from mlspec.cli import main\n"
            "pr = cProfile.Profile(); pr.enable(); main(['-C', sys.argv[1], 'plan']); pr.disable()\n"
            "s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('cumulative').print_stats(35)\n"
            "sys.stderr.write(s.getvalue())\n")
    import subprocess

    p = subprocess.run([c.PYTHON, "-c", code, str(d)], capture_output=True, text=True, env=c.mlspec_env())
    print(f"\n### cProfile of no-op `mlspec plan`, {label} (in-process, cumulative)\n")
    print("```text\n" + "\n".join(p.stderr.strip().splitlines()[:70]) + "\n```")


if __name__ == "__main__":
    sys.exit(main())
