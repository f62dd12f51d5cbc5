"""`mlspec validate` on generated specs of 10 / 100 / 1,000 steps, whole process, median of repeats.

The spec: one dataset, a chain of steps each reading the previous step's output, with params, and after
every 9th chain step a leaf step with a 3-value `matrix` (so 10% of the steps are matrix steps).
Floors: the interpreter's start-up (`python -c pass`) and `mlspec --help`.
Peer: `dvc stage list` on the same graph as a dvc.yaml (DVC has no validate; this is the command that
parses and schema-checks dvc.yaml). Target: 1,000 steps < 1 s.

    python benchmarks/bench_validate.py [--quick] [--repeat N] [--no-dvc] [--profile]
"""

from __future__ import annotations

import sys

import common as c

TARGET_1000 = 1.0


def main() -> int:
    ap = c.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of validate at the largest size")
    args = ap.parse_args()
    sizes = [10, 100, 1000]
    repeat = args.repeat
    mlspec = c.mlspec_bin()
    env = c.mlspec_env()
    dvc = c.ensure_dvc(args.no_dvc)
    root = c.WORK / "validate"

    rows, cmds = [], []

    def floor(label, cmd, cwd=None):
        c.say(f"[validate] floor: {label}")
        st = c.measure(cmd, cwd, env, repeat)
        rows.append([label, "—", c.fmt_s(st.median), c.fmt_s(st.cpu), st.spread, "—", "—", "—", "—", "—", "—", "—"])
        cmds.append(c.cmdline(cmd, cwd))
        return st

    floor("python -c pass (interpreter start-up)", [c.PYTHON, "-c", "pass"])
    floor("mlspec --help (CLI start-up)", [mlspec, "--help"])

    results = {}
    for n in sizes:
        d = c.write_mlspec_project(root / f"mlspec-{n}", "chain", n, matrix_every=9)
        cmd = [mlspec, "validate"]
        c.say(f"[validate] mlspec validate, {n} steps")
        st = c.measure(cmd, d, env, repeat)
        out = c.run(cmd, d, env).stdout
        if f"{n} steps" not in out:
            c.say(f"  unexpected output: {out.strip()[:300]}")
        results[n] = st
        cmds.append(c.cmdline(cmd, d))
        dvc_cell, dvc_cpu, ratio_cell = "—", "—", "—"
        if dvc.ok:
            dd = c.write_dvc_project(root / f"dvc-{n}", "chain", n, dvc)
            dcmd = [dvc.bin, "stage", "list"]
            c.say(f"[validate] dvc stage list, {n} stages")
            dst = c.measure(dcmd, dd, dvc.env(), repeat, budget=45)
            dvc_cell, dvc_cpu = c.fmt_s(dst.median), c.fmt_s(dst.cpu)
            ratio_cell = f"{c.ratio(dst.median, st.median)} ({c.ratio(dst.cpu, st.cpu)})"
            cmds.append(c.cmdline(dcmd, dd))
        target = TARGET_1000 if n == 1000 else None
        rows.append(["mlspec validate", f"{n:,}", c.fmt_s(st.median), c.fmt_s(st.cpu), st.spread,
                     c.fmt_ms(st.median / n, 2), dvc_cell, dvc_cpu, ratio_cell,
                     f"< {c.fmt_s(target)}" if target else "—",
                     c.verdict(st.median < target) if target else "—",
                     c.verdict(st.cpu < target) if target else "—"])

    # the same at 1,000 steps with this environment's PYTHONDONTWRITEBYTECODE=1 (no bytecode cache)
    d = root / "mlspec-1000"
    nobc = c.mlspec_env(bytecode_cache=False)
    c.say("[validate] mlspec validate, 1,000 steps, environment as is (no bytecode cache)")
    st = c.measure([mlspec, "validate"], d, nobc, repeat)
    rows.append(["mlspec validate, no bytecode cache (env as is)", "1,000", c.fmt_s(st.median), c.fmt_s(st.cpu),
                 st.spread, c.fmt_ms(st.median / 1000, 2), "—", "—", "—", f"< {c.fmt_s(TARGET_1000)}",
                 c.verdict(st.median < TARGET_1000), c.verdict(st.cpu < TARGET_1000)])
    cmds.append(f"(cd {c.rel(d)} && env -u PYTHONPYCACHEPREFIX PYTHONDONTWRITEBYTECODE=1 {mlspec} validate)")

    print(c.header("bench_validate: `mlspec validate`, whole process", args))
    if dvc.ok:
        print(f"- peer: {dvc.version} (`dvc stage list` on the same graph; DVC has no validate command)\n")
    else:
        print(f"- peer: {dvc.note}\n")
    print(c.table(["command", "steps", "wall (median)", "CPU", "range", "per step", "dvc stage list", "DVC CPU",
                   "DVC / mlspec wall (CPU)", "target", "result (wall)", "result (CPU)"], rows))
    print(c.CPU_NOTE)
    base = results[10].median
    slope = (results[1000].median - results[100].median) / 900
    print(f"\nFixed cost (10 steps) {c.fmt_s(base)}; marginal cost 100 -> 1,000 steps "
          f"{c.fmt_ms(slope, 3)} per step.")
    print("\nReproduce (from the repository root; the projects stay in benchmarks/.work/validate). " + c.ENV_NOTE + "\n")
    print("```console\n" + "\n".join(dict.fromkeys(cmds)) + "\n```")
    if args.profile:
        profile_validate(root / "mlspec-1000")
    return 0


def profile_validate(d) -> None:
    code = ("import cProfile, pstats, io, sys\n"
            "from mlspec.cli import main\n"
            "pr = cProfile.Profile(); pr.enable(); main(['-C', sys.argv[1], 'validate']); pr.disable()\n"
            "s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('cumulative').print_stats(30)\n"
            "print(s.getvalue())\n")
    out = c.run([c.PYTHON, "-c", code, str(d)], None, c.mlspec_env()).stdout
    print("\n### cProfile of `mlspec validate` at 1,000 steps (in-process, cumulative)\n")
    print("```text\n" + "\n".join(out.strip().splitlines()[:60]) + "\n```")


if __name__ == "__main__":
    sys.exit(main())
