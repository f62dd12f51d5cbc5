"""The churn example's drift scenario: a new customer segment arrives.

    python drift.py [--url http://127.0.0.1:8080] [--rows 2000] [--seed 11]

It generates customers who differ from the ones the model was trained on (older, on pricier plans, calling
support more, newer to the service), writes them with their outcome as the warehouse's next export
(data/exports/0001-drifted.csv, which the `ingest` step reads), and sends them to the deployment's
`POST /predict` in batches of 100, as production traffic would. The deployment logs that traffic; the
`churn-drift` monitor compares it with the training data, and `mlspec reconcile` retrains on the new export.
No network beyond the local service, nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))


def drifted_customers(rows: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(45, 90, rows)
    tenure = rng.integers(0, 24, rows)
    plan = rng.choice(["basic", "pro", "team"], rows, p=[0.2, 0.5, 0.3])
    region = rng.choice(["north", "south", "east", "west"], rows)
    charges = np.round(rng.normal(95, 20, rows).clip(5, 200), 2)
    support_calls = rng.poisson(3.5, rows)
    # in this segment, support calls decide: a clear signal the retrained model learns
    logit = -6.0 + 2.2 * support_calls - 0.05 * tenure + 0.01 * (charges - 95)
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"customer_id": np.arange(100_000, 100_000 + rows), "age": age, "tenure_months": tenure,
                         "plan": plan, "region": region, "monthly_charges": charges,
                         "support_calls": support_calls, "churned": churned.astype(int)})


def features_of(customers, regions):
    from churn.features import encode

    X = encode(customers.merge(regions, on="region", how="left")).drop(columns=["churned"])
    for plan in ("plan_basic", "plan_pro", "plan_team"):  # every column the model was trained with
        if plan not in X.columns:
            X[plan] = 0.0
    return X


def send(url: str, X, batch: int = 100) -> int:
    sent = 0
    for start in range(0, len(X), batch):
        rows = X.iloc[start:start + batch].to_dict(orient="records")
        body = json.dumps({"instances": rows}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            json.loads(resp.read())
        sent += len(rows)
    return sent


def main(argv=None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="the churn-api deployment")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    customers = drifted_customers(args.rows, args.seed)
    export = HERE / "data" / "exports" / "0001-drifted.csv"
    export.parent.mkdir(parents=True, exist_ok=True)
    tmp = export.with_suffix(".tmp")
    customers.to_csv(tmp, index=False)
    tmp.replace(export)
    X = features_of(customers, pd.read_csv(HERE / "data" / "regions.csv"))
    n = send(args.url, X)
    print(f"wrote {len(customers)} new customers to {export.relative_to(HERE)}; sent {n} requests' rows to "
          f"{args.url}/predict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
