"""A data contract on 1,000,000 rows x 21 columns with 1 % of the rows violating it: mlspec's check (the
contract as a pandera schema, its checks run vectorised, one summarised line per violated check) against
pandera's own lazy validation (which collects one failure case per failing cell), side by side in the same
run on the same in-memory DataFrame. Great Expectations is measured only if it is importable here.

Target: under 0.3 s including the summarised report.

    python benchmarks/bench_contract.py [--rows N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": np.arange(rows, dtype=np.int64)})
    for i in range(15):
        df[f"x{i:02d}"] = rng.normal(50, 10, rows)
    df["age"] = rng.integers(18, 90, rows)
    df["plan"] = rng.choice(["basic", "pro", "team"], rows)
    df["code"] = rng.choice(["AB-1", "CD-2", "EF-3"], rows)
    df["start"] = rng.integers(0, 100, rows)
    df["end"] = df["start"] + rng.integers(0, 10, rows)
    bad = rng.random(rows) < 0.01  # 1 % of the rows break one check each, spread over five checks
    kind = rng.integers(0, 5, rows)
    df.loc[bad & (kind == 0), "x00"] = 1000.0
    df.loc[bad & (kind == 1), "age"] = 7
    df.loc[bad & (kind == 2), "plan"] = "gold"
    df.loc[bad & (kind == 3), "code"] = "zz"
    df.loc[bad & (kind == 4), "end"] = -1
    contract = {"strict": True, "rows": {"min": 1000},
                "columns": {"id": {"dtype": "int64", "unique": True, "nullable": False},
                            **{f"x{i:02d}": {"dtype": "float64", "min": 0, "max": 100} for i in range(15)},
                            "age": {"dtype": "int64", "min": 18, "max": 100},
                            "plan": {"dtype": "string", "values": ["basic", "pro", "team"]},
                            "code": {"dtype": "string", "regex": r"^[A-Z]{2}-\d$"},
                            "start": {"dtype": "int64"}, "end": {"dtype": "int64"}},
                "checks": ["end >= start"]}
    return df, contract, int(bad.sum())


def timed(fn, repeat):
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import pandera.pandas as pa

    from mlspec.contracts import check_frame, to_schema

    df, contract, nbad = make(args.rows)
    schema = to_schema(contract)
    check_frame(contract, df, "dataset.bench", schema=schema)  # warm-up: pandera's check registry, imports

    def ours():
        report = check_frame(contract, df, "dataset.bench", schema=schema)
        return report, report.text()

    def theirs():
        try:
            schema.validate(df, lazy=True)
        except pa.errors.SchemaErrors as exc:
            return exc.failure_cases, str(exc)
        return None, ""

    w1, c1, (report, text) = timed(ours, args.repeat)
    w2, c2, (cases, msg) = timed(theirs, args.repeat)
    rows = [("mlspec check_frame (summarised report)", w1, c1, f"{len(report.violations)} lines, "
             f"{sum(v.count for v in report.violations)} failing rows counted, {len(text):,} characters"),
            ("pandera lazy validation (SchemaErrors)", w2, c2, f"{0 if cases is None else len(cases):,} failure "
             f"cases, message {len(msg):,} characters")]
    try:
        import great_expectations  # noqa: F401
        ge = "importable, not measured by this script"
    except ImportError:
        ge = "not installed in this venv (not measured)"
    print(f"\n## Contract check: {args.rows:,} rows x 21 columns, {nbad:,} bad rows (1 %), median of {args.repeat}\n")
    print("| implementation | wall s | CPU s | vs mlspec (wall) | report |")
    print("|---|---|---|---|---|")
    for name, w, c, what in rows:
        print(f"| {name} | {w:.3f} | {c:.3f} | {w / w1:.2f}x | {what} |")
    print(f"\nGreat Expectations: {ge}.")
    print("\nmlspec's report:\n" + text)
    print(f"\nTarget: < 0.3 s including the report: {'MET' if w1 < 0.3 else 'NOT MET'} ({w1:.3f} s wall, "
          f"{c1:.3f} s CPU)")
    import os

    print(f"Load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall time grows with the load; CPU time much less)")
    print(f"Reproduce: python benchmarks/bench_contract.py --rows {args.rows} --repeat {args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
