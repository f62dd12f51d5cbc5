"""`mlspec apply --auto-approve` vs `dvc repro`, whole process, on trivial steps.

(a) overhead per trivial step: first full run of a 100-step chain and a 100-step fan-out (fresh project
    each repeat, so nothing is cached), per step = total / steps; DVC `dvc repro` on the same graphs.
(b) parallel speed-up: 8 independent steps of `time.sleep(1)`, default parallelism (the local backend
    uses the CPU count, 2 here) vs `--parallelism 1`. Target >= 1.8x.
(c) 500 steps: first full apply (target < 15 s), no-op apply (target < 0.6 s; `dvc repro` with nothing
    to do for comparison) and one param changed in one stage of a 500-step fan-out (target: apply wall
    minus the re-run step's own time (its recorded duration) < 1 s; DVC: `dvc repro` after changing the
    same param in params.yaml). DVC's first full `dvc repro` of 500 stages takes many minutes: it runs
    once (n=1) unless --skip-dvc-500; DVC's no-op and param-change rows use a state recorded by writing
    the outputs, cache objects and dvc.lock exactly as `dvc repro` does (see bench_plan.py).
(d) per-step overhead at 10 / 100 / 500 steps (chain and fan-out, first full run): total / steps, and net
    of the fixed cost ((first run - no-op apply) / steps), which must not grow with the graph.

    python benchmarks/bench_apply.py [--quick] [--repeat N] [--no-dvc] [--skip-dvc-500] [--dvc-repeat N]
                                    [--dvc-budget S]

Repeats: cheap measurements use --repeat (default 5). First full runs need a fresh project each time,
so they use min(--repeat, 3) for 100 steps and min(--repeat, 2) for 500 steps (1 with --quick), and DVC
first runs use --dvc-repeat (default 1: `dvc repro` of 100 stages takes 1-2 minutes here).
--quick: one run per first full run, (c) and (d) at 500 with the fan-out only, DVC only at 100 stages.
"""

from __future__ import annotations

import argparse
import sys
import time

import common as c

TARGET_SPEEDUP = 1.8
TARGET_FIRST_500 = 15.0
TARGET_NOOP_500 = 0.6
TARGET_PARAM_500 = 1.0


class Bench:
    def __init__(self, args):
        self.args = args
        self.mlspec = c.mlspec_bin()
        self.env = c.mlspec_env()
        self.dvc = c.ensure_dvc(args.no_dvc)
        self.cmds: list[str] = []
        self.root = c.WORK / "apply"
        self.first: dict = {}  # (tool, shape, n) -> Stat
        self.noop: dict = {}
        self.sizes = [int(x) for x in args.sizes.split(",")]  # small, mid (a), big (c)

    # --- helpers ----------------------------------------------------------------------------------
    def first_run_mlspec(self, shape: str, n: int, repeat: int) -> c.Stat:
        st = c.Stat()
        d = self.root / f"mlspec-{shape}-{n}"
        cmd = [self.mlspec, "apply", "--auto-approve"]
        for i in range(repeat):
            c.write_mlspec_project(d, shape, n)  # fresh: no state, no run-cache
            c.say(f"[apply] mlspec first full apply, {shape} {n} ({i + 1}/{repeat})")
            t = c.run(cmd, d, self.env)
            if f"{n} ran" not in t.stdout:
                c.say(f"  WARNING: unexpected apply summary: {t.stdout.strip().splitlines()[-1]}")
            st.add(t)
        self.cmds.append(c.gen_cmd("mlspec", shape, n, d) + " && " + c.cmdline(cmd, d))
        self.first[("mlspec", shape, n)] = st
        return st

    def first_run_dvc(self, shape: str, n: int, repeat: int) -> c.Stat | None:
        if not self.dvc.ok or repeat < 1:
            return None
        st = c.Stat()
        d = self.root / f"dvc-{shape}-{n}"
        cmd = [self.dvc.bin, "repro"]
        for i in range(repeat):
            c.write_dvc_project(d, shape, n, self.dvc)
            c.say(f"[apply] dvc repro first full run, {shape} {n} ({i + 1}/{repeat})")
            st.add(c.run(cmd, d, self.dvc.env()))
        self.cmds.append(c.gen_cmd("dvc", shape, n, d) + " && " + c.cmdline(cmd, d))
        self.first[("dvc", shape, n)] = st
        return st

    def noop_mlspec(self, shape: str, n: int) -> c.Stat:
        """No-op apply on the project left by the last first run."""
        d = self.root / f"mlspec-{shape}-{n}"
        cmd = [self.mlspec, "apply", "--auto-approve"]
        c.say(f"[apply] mlspec no-op apply, {shape} {n}")
        st = c.measure(cmd, d, self.env, self.args.repeat)
        out = c.run(cmd, d, self.env).stdout
        if "No changes" not in out:
            c.say(f"  WARNING: no-op apply did something:\n{out[-500:]}")
        self.cmds.append(c.cmdline(cmd, d))
        self.noop[("mlspec", shape, n)] = st
        return st

    # --- (a) + (d) --------------------------------------------------------------------------------
    def overhead(self) -> str:
        a = self.args
        heavy100 = 1 if a.quick else max(1, min(a.repeat, 3))
        heavy500 = 1 if a.quick else max(1, min(a.repeat, 2))
        shapes_500 = ["fanout"] if a.quick else ["chain", "fanout"]
        small, mid, big = self.sizes
        for shape in ("chain", "fanout"):
            self.first_run_mlspec(shape, small, a.repeat)
            self.noop_mlspec(shape, small)
            self.first_run_mlspec(shape, mid, heavy100)
            self.noop_mlspec(shape, mid)
            self.first_run_dvc(shape, mid, a.dvc_repeat)
        for shape in shapes_500:
            self.first_run_mlspec(shape, big, heavy500)
            self.noop_mlspec(shape, big)
        rows = []
        for shape in ("chain", "fanout"):
            m = self.first[("mlspec", shape, mid)]
            d = self.first.get(("dvc", shape, mid))
            rows.append([shape, f"{mid}", c.fmt_s(m.median), c.fmt_s(m.cpu), f"n={len(m.walls)}",
                         c.fmt_ms(m.median / mid), c.fmt_ms(m.cpu / mid),
                         c.fmt_s(d.median) if d else "—", c.fmt_ms(d.median / mid) if d else "—",
                         f"n={len(d.walls)}" if d else "—", c.ratio(d.median, m.median) if d else "—"])
        out = [f"### (a) Overhead per trivial step, first full run ({mid} steps)\n",
               c.table(["shape", "steps", "mlspec apply", "CPU", "repeats", "per step", "CPU per step",
                        "dvc repro", "DVC per step", "DVC repeats", "DVC / mlspec"], rows)]
        if not self.dvc.ok:
            out.append(f"\n{self.dvc.note}")
        # (d)
        rows = []
        per = {}
        for shape in ("chain", "fanout"):
            for n in self.sizes:
                m = self.first.get(("mlspec", shape, n))
                z = self.noop.get(("mlspec", shape, n))
                if not m:
                    continue
                net = (m.median - z.median) / n
                net_cpu = (m.cpu - z.cpu) / n
                per[(shape, n)] = (net, net_cpu)
                rows.append([shape, f"{n:,}", c.fmt_s(m.median), f"n={len(m.walls)}", c.fmt_s(z.median),
                             c.fmt_ms(m.median / n), c.fmt_ms(net), c.fmt_ms(net_cpu), "", "", ""])
        for k, r in enumerate(rows):
            shape = r[0]
            sizes = [n for (s, n) in per if s == shape]
            base, base_cpu = per[(shape, mid)]
            n = int(r[1].replace(",", ""))
            if n == max(sizes) and n > mid:
                grow, grow_cpu = per[(shape, n)][0] / base, per[(shape, n)][1] / base_cpu
                r[8] = f"{grow:.2f}x ({grow_cpu:.2f}x) of {mid}"
                r[9] = c.verdict(grow <= 1.25)
                r[10] = c.verdict(grow_cpu <= 1.25)
        out += ["\n### (d) Per-step overhead vs graph size (first full run; net = (first - no-op) / steps)\n",
                c.table(["shape", "steps", "first apply", "repeats", "no-op apply", "per step (total/n)",
                         "per step, net", "CPU per step, net", "growth wall (CPU)", "result wall (<= 1.25x)",
                         "result CPU (<= 1.25x)"], rows)]
        return "\n".join(out)

    # --- (b) ---------------------------------------------------------------------------------------
    def parallel(self) -> str:
        a = self.args
        repeat = 1 if a.quick else max(1, min(a.repeat, 3))
        extra = "".join(f"  w{k}:\n    run: bench.steps:sleep\n    outputs: [out]\n    params:\n      seconds: 1.0\n"
                        f"      i: {k}\n" for k in range(8))
        res = {}
        for label, flags in (("default (parallel)", []), ("--parallelism 1", ["--parallelism", "1"])):
            st = c.Stat()
            d = self.root / "sleep8"
            cmd = [self.mlspec, "apply", "--auto-approve", *flags]
            for i in range(repeat):
                c.write_mlspec_project(d, "chain", 0, extra_steps=extra)  # fresh: no run-cache
                c.say(f"[apply] 8 x sleep(1), {label} ({i + 1}/{repeat})")
                st.add(c.run(cmd, d, self.env))
            res[label] = st
            self.cmds.append(f"# fresh each time: {c.rel(d)} = the 8 `w0..w7` steps of bench_apply.parallel()\n"
                             + c.cmdline(cmd, d))
        par, seq = res["default (parallel)"], res["--parallelism 1"]
        speed = seq.median / par.median
        rows = [["8 x sleep(1), default parallelism", c.fmt_s(par.median), c.fmt_s(par.cpu), par.spread, "", ""],
                ["8 x sleep(1), --parallelism 1", c.fmt_s(seq.median), c.fmt_s(seq.cpu), seq.spread, "", ""],
                ["speed-up", f"{speed:.2f}x", "", "", f">= {TARGET_SPEEDUP}x", c.verdict(speed >= TARGET_SPEEDUP)]]
        ideal = f"(ideal on 2 CPUs: 8 s / 4 s = 2.0x; floors 8 s and 4 s of sleeping; n={repeat} each)"
        return "\n".join(["### (b) Parallel speed-up, 8 independent 1-second steps " + ideal + "\n",
                          c.table(["run", "wall (median)", "CPU", "range", "target", "result"], rows)])

    # --- (c) ---------------------------------------------------------------------------------------
    def at_500(self) -> str:
        a = self.args
        n = self.sizes[2]
        rows = []
        # first full apply (from overhead(): fan-out and, unless --quick, chain)
        dvc500 = None
        if self.dvc.ok and not a.skip_dvc_500 and not a.quick:
            dvc500 = self.first_run_dvc("fanout", n, 1)
        for shape in ("chain", "fanout"):
            m = self.first.get(("mlspec", shape, n))
            if not m:
                continue
            d = dvc500 if shape == "fanout" else None
            rows.append([f"first full apply, {shape}", c.fmt_s(m.median), c.fmt_s(m.cpu), f"n={len(m.walls)}",
                         c.fmt_s(d.median) + " (n=1)" if d else ("skipped" if shape == "fanout" else "—"),
                         c.ratio(d.median, m.median) if d else "—", f"< {c.fmt_s(TARGET_FIRST_500)}",
                         c.verdict(m.median < TARGET_FIRST_500)])
        # no-op apply
        for shape in ("chain", "fanout"):
            z = self.noop.get(("mlspec", shape, n))
            if not z:
                continue
            dz = None
            if self.dvc.ok and shape == "fanout" and not a.quick:
                dd = self.dvc_recorded("fanout", n)
                c.say("[apply] dvc repro no-op, fanout 500")
                dz = c.measure([self.dvc.bin, "repro"], dd, self.dvc.env(), a.repeat, budget=a.dvc_budget)
                self.cmds.append(c.cmdline([self.dvc.bin, "repro"], dd))
            rows.append([f"no-op apply, {shape}", c.fmt_s(z.median), c.fmt_s(z.cpu), z.spread,
                         f"{c.fmt_s(dz.median)} (n={len(dz.walls)})" if dz else "—", c.ratio(dz.median, z.median) if dz else "—",
                         f"< {c.fmt_s(TARGET_NOOP_500)}", c.verdict(z.median < TARGET_NOOP_500)])
        # one param changed in the fan-out
        d = self.root / f"mlspec-fanout-{n}"
        stage = f"s{n // 2:04d}"
        cmd = [self.mlspec, "apply", "--auto-approve"]
        st, own, net = c.Stat(), [], []
        for i in range(a.repeat):
            c.set_mlspec_param(d, stage, "scale", 2.0 + i + time.time() % 1)  # a value never seen: no run-cache hit
            c.say(f"[apply] mlspec apply after one param change, fanout 500 ({i + 1}/{a.repeat})")
            t = c.run(cmd, d, self.env)
            if "1 ran" not in t.stdout:
                c.say(f"  WARNING: expected exactly 1 step to run: {t.stdout.strip().splitlines()[-1]}")
            rec = c.state_doc(d)["resources"][f"step.{stage}"]
            st.add(t)
            own.append(float(rec.get("duration") or 0))
            net.append(t.wall - own[-1])
        import statistics

        net_med, own_med = statistics.median(net), statistics.median(own)
        self.cmds.append(f"# edit steps.{stage}.params.scale in mlspec.yaml, then:\n" + c.cmdline(cmd, d))
        dcell = rcell = "—"
        if self.dvc.ok and not a.quick:
            dd = self.dvc_recorded("fanout", n)
            dst = c.Stat()
            reps = a.repeat
            i = 0
            while i < reps:
                c.set_dvc_param(dd, stage, "scale", 2.0 + i + time.time() % 1)
                c.say(f"[apply] dvc repro after one param change, fanout 500 ({i + 1}/{reps})")
                t = c.run([self.dvc.bin, "repro"], dd, self.dvc.env())
                dst.add(t)
                if i == 0 and t.wall * a.repeat > a.dvc_budget:
                    reps = max(1, int(a.dvc_budget // t.wall))
                i += 1
            dcell, rcell = f"{c.fmt_s(dst.median)} (n={len(dst.walls)})", c.ratio(dst.median, st.median)
            self.cmds.append(f"# edit {stage}.scale in params.yaml, then:\n" + c.cmdline([self.dvc.bin, "repro"], dd))
        rows.append([f"one param changed (1 of {n} re-runs): apply wall", c.fmt_s(st.median), c.fmt_s(st.cpu), st.spread,
                     dcell, rcell, "", ""])
        rows.append(["  of which the re-run step's own time", c.fmt_s(own_med), "", "", "", "", "", ""])
        rows.append(["  apply minus the step's own time", c.fmt_s(net_med), "", "", "", "",
                     f"< {c.fmt_s(TARGET_PARAM_500)}", c.verdict(net_med < TARGET_PARAM_500)])
        note = "" if dvc500 or not self.dvc.ok else (
            f"\nDVC first full run of {n} stages skipped (--skip-dvc-500 or --quick): it takes many minutes here."
            + (f" With --quick DVC is not run at {n} stages at all (each `dvc repro` of {n} stages takes over a "
               "minute here)." if a.quick else "") + "\n")
        return "\n".join(["### (c) 500 steps\n",
                          c.table(["measurement", "mlspec (median)", "CPU", "range", "DVC", "DVC / mlspec", "target",
                                   "result"], rows), note])

    def dvc_recorded(self, shape: str, n: int):
        d = self.root / f"dvc-{shape}-{n}-recorded"
        if not (d / "dvc.lock").exists():
            c.write_dvc_project(d, shape, n, self.dvc)
            c.say(f"[apply] recording DVC state for {shape} {n} (outputs, cache, dvc.lock as dvc repro writes them)")
            c.dvc_record_without_running(d, shape, n, self.dvc)
        return d


def main() -> int:
    ap = c.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--skip-dvc-500", action="store_true", help="skip DVC's first full run of 500 stages")
    ap.add_argument("--sizes", default="10,100,500", help=argparse.SUPPRESS)  # small,mid,big (for smoke tests)
    ap.add_argument("--dvc-repeat", type=int, default=1, metavar="N", help="repeats of DVC first full runs (default 1)")
    ap.add_argument("--dvc-budget", type=float, default=120.0, metavar="S",
                    help="seconds per DVC measurement at 500 stages before repeats are cut (default 120)")
    args = ap.parse_args()
    b = Bench(args)
    t0 = time.time()
    parts = [b.overhead(), b.parallel(), b.at_500()]
    print(c.header("bench_apply: `mlspec apply --auto-approve` vs `dvc repro`, whole process", args))
    print(f"- peer: {b.dvc.version if b.dvc.ok else b.dvc.note}; DVC stages run `{c.PYTHON} step.py IN OUT I SCALE` "
          "(the same interpreter and the same work as mlspec's `run: bench.steps:step`)\n"
          f"- total benchmark time {time.time() - t0:.0f} s\n")
    for p in parts:
        print(p + "\n")
    print("Reproduce (from the repository root). " + c.ENV_NOTE + " The DVC 500-stage project is recorded with "
          "`python benchmarks/common.py gen dvc fanout 500 DIR --record`.\n")
    print("```console\n" + "\n".join(dict.fromkeys(b.cmds)) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
