"""No-op `mlspec plan` with interpolations in every step vs the same spec without, whole process.

Two projects per shape and size, the same graph as bench_plan (common.write_mlspec_project): *plain*, and
*interp*, where every step also has `description: "${project} step ${.params.i}"` (absolute and relative
interpolation inside a string) and `params.scale: ${x-bench.scale}` (a whole value from a top-level
`x-bench: {scale: 1.0}`), so both resolve to the same params. Each project's state is recorded by a real
`mlspec apply --auto-approve` (not timed); the timed runs alternate plain, interp, plain, interp, ...
Target (issue 10, item 9): interp within 1.2x of plain (CPU medians) at 500 and 2,000 steps. Also printed:
`MLSPEC_COMPOSE=hydra` on the interp project, what every interpolation used to cost.

    python benchmarks/bench_interp.py [--quick] [--repeat N] [--sizes 500,2000] [--shapes chain,fanout]
"""

from __future__ import annotations

import sys

import common as c

TARGET = 1.2


def write_interp(d, shape: str, n: int):
    d = c.write_mlspec_project(d, shape, n)
    spec = d / "mlspec.yaml"
    out = ["x-bench: {scale: 1.0}"]
    for line in spec.read_text().splitlines():
        if line == "      scale: 1.0":
            line = "      scale: ${x-bench.scale}"
        out.append(line)
        if line == "    run: bench.steps:step":
            out.append('    description: "${project} step ${.params.i}"')
    spec.write_text("\n".join(out) + "\n")
    return d


def main() -> int:
    ap = c.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="500,2000")
    ap.add_argument("--shapes", default="chain,fanout")
    args = ap.parse_args()
    sizes = [500] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = max(1, args.repeat if not args.quick else min(args.repeat, 3))
    mlspec = c.mlspec_bin()
    env = c.mlspec_env()
    hydra_env = dict(env, MLSPEC_COMPOSE="hydra")
    rows, cmds = [], []
    for shape in args.shapes.split(","):
        for n in sizes:
            plain = c.write_mlspec_project(c.WORK / "interp" / f"plain-{shape}-{n}", shape, n)
            interp = write_interp(c.WORK / "interp" / f"interp-{shape}-{n}", shape, n)
            for d in (plain, interp):
                c.say(f"[interp] set-up: mlspec apply in {c.rel(d)}")
                c.run([mlspec, "apply", "--auto-approve"], d, env)
                cmds.append(c.gen_cmd("mlspec", shape, n, d) + ("  # then the interp edit (bench_interp.write_interp)"
                                                                if d is interp else ""))
                cmds.append(c.cmdline([mlspec, "apply", "--auto-approve"], d) + "  # set-up, not timed")
            c.say(f"[interp] {shape} {n:,}: no-op plan, plain and interp alternating")
            stats = {"plain": c.Stat(), "interp": c.Stat()}
            for d in (plain, interp):
                c.run([mlspec, "plan"], d, env)  # warm-up
            for _ in range(repeat):
                stats["plain"].add(c.run([mlspec, "plan"], plain, env))
                stats["interp"].add(c.run([mlspec, "plan"], interp, env))
            hydra = c.measure([mlspec, "plan"], interp, hydra_env, max(1, min(repeat, 3)))
            r = stats["interp"].cpu / stats["plain"].cpu
            out = c.run([mlspec, "plan"], interp, env).stdout
            noop = "No changes" in out
            rows.append([shape, f"{n:,}", c.fmt_s(stats["plain"].median), c.fmt_s(stats["plain"].cpu),
                         c.fmt_s(stats["interp"].median), c.fmt_s(stats["interp"].cpu), f"{r:.2f}x",
                         c.fmt_s(hydra.cpu), f"<= {TARGET}x", c.verdict(r <= TARGET and noop)])
            for d in (plain, interp):
                cmds.append(c.cmdline([mlspec, "plan"], d))
            cmds.append(c.cmdline(["env", "MLSPEC_COMPOSE=hydra", mlspec, "plan"], interp))
    print(c.header("bench_interp: no-op `mlspec plan`, interpolation in every step vs none", args))
    print(c.table(["shape", "steps", "plain wall", "plain CPU", "interp wall", "interp CPU", "interp / plain (CPU)",
                   "interp via Hydra (CPU)", "target", "result"], rows))
    print("\nresult: PASS when the CPU ratio is within the target and the interp plan is a no-op ('No changes').")
    print("\nReproduce (from the repository root; the projects stay in benchmarks/.work/interp). " + c.ENV_NOTE + "\n")
    print("```console\n" + "\n".join(dict.fromkeys(cmds)) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
