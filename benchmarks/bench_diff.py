"""`mlspec diff` between two git revisions of a generated spec of 500 / 2,000 steps, whole process, medians.

The spec is the validate benchmark's (a chain with a 3-value matrix leaf after every 9th step). The branch
changes one param in the middle of the chain and adds one step. Measured: `mlspec diff --base main --head
branch` (both sides exported from git and composed), `mlspec diff --base main` (head: the working tree),
and as floors `git diff main branch` (a text diff) and `mlspec validate` (one composition + checks).
Target: 2,000 steps < 1 s.

    python benchmarks/bench_diff.py [--quick] [--repeat N]
"""

from __future__ import annotations

import json
import subprocess
import sys

import common as c

TARGET_2000 = 1.0


def git(d, *args: str) -> None:
    subprocess.run(["git", *args], cwd=d, check=True, capture_output=True)


def make_repo(n: int):
    d = c.write_mlspec_project(c.WORK / "diff" / f"mlspec-{n}", "chain", n, matrix_every=9)
    git(d, "init", "-q", "-b", "main")
    git(d, "config", "user.email", "bench@example.com")
    git(d, "config", "user.name", "bench")
    git(d, "add", "-A")
    git(d, "commit", "-qm", "main")
    git(d, "checkout", "-qb", "branch")
    middle = c.stage_names(n)[n // 3]
    c.set_mlspec_param(d, middle, "scale", 3.0)
    with open(d / "mlspec.yaml", "a") as fh:
        fh.write(f"  added:\n    run: bench.steps:step\n    inputs:\n      src: step.{middle}.out\n"
                 "    outputs: [out]\n")
    git(d, "commit", "-qam", "branch")
    return d


def main() -> int:
    ap = c.parser(__doc__.split("\n\n")[0])
    args = ap.parse_args()
    sizes = [500] if args.quick else [500, 2000]
    mlspec, env = c.mlspec_bin(), c.mlspec_env()
    rows, cmds, results = [], [], {}
    for n in sizes:
        d = make_repo(n)
        out = json.loads(c.run([mlspec, "diff", "--base", "main", "--head", "branch", "--format", "json"], d,
                               env).stdout)
        got = (out["summary"]["changed"], out["summary"]["added"])
        if got != (1, 1):
            c.say(f"  unexpected diff at {n} steps: {out['summary']}")
        for label, cmd in (("mlspec diff --base main --head branch", [mlspec, "diff", "--base", "main", "--head",
                                                                       "branch"]),
                           ("mlspec diff --base main (head: working tree)", [mlspec, "diff", "--base", "main"]),
                           ("floor: git diff main branch", ["git", "diff", "main", "branch"]),
                           ("floor: mlspec validate", [mlspec, "validate"])):
            c.say(f"[diff] {label}, {n} steps")
            st = c.measure(cmd, d, env, args.repeat)
            results[(n, label)] = st
            rows.append([label, n, c.fmt_s(st.median), c.fmt_s(st.cpu), st.spread])
            cmds.append(c.cmdline(cmd, d))
    print(c.header("mlspec diff", args))
    print(c.table(["command", "steps", "wall (median)", "CPU (median)", "spread"], rows))
    key = (sizes[-1], "mlspec diff --base main --head branch")
    st = results[key]
    print()
    print(f"Target: diff between two revisions of a {sizes[-1]:,}-step spec < {TARGET_2000:.0f} s: "
          f"wall {c.fmt_s(st.median)} {c.verdict(st.median < TARGET_2000)}, "
          f"CPU {c.fmt_s(st.cpu)} {c.verdict(st.cpu < TARGET_2000)}"
          + ("" if sizes[-1] == 2000 else " (--quick: 2,000 not measured)"))
    print(c.CPU_NOTE)
    print("\nReproduce (generated projects are under benchmarks/.work/diff):\n")
    print("```console")
    for cmd in dict.fromkeys(cmds):
        print(cmd)
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
