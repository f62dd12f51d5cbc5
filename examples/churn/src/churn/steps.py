"""Step functions of the churn example: plain Python, inputs and params arrive as keyword arguments.

Annotations tell mlspec how to load an input (a DataFrame from parquet/csv, an object from a model file);
what a step returns is saved by type (DataFrame -> parquet, scikit-learn model -> skops, numbers listed under
`metrics:` -> metrics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from churn.features import encode

PLANS = ["basic", "pro", "team"]


def ingest(rows: int, seed: int, exports: Path | None = None) -> dict:
    """The customer table: a seeded synthetic base (it stands in for the warehouse's history) plus every
    export the warehouse has delivered since, as CSV files in ``exports`` (a directory: new customers with
    their outcome; `python drift.py` delivers one)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows)
    tenure = rng.integers(0, 72, rows)
    plan = rng.choice(PLANS, rows, p=[0.6, 0.3, 0.1])
    region = rng.choice(["north", "south", "east", "west"], rows)
    charges = np.round(rng.normal(60, 20, rows).clip(5, 200), 2)
    support_calls = rng.poisson(1.5, rows)
    logit = -1.2 + 0.45 * support_calls - 0.04 * tenure + 0.012 * (charges - 60) + (plan == "basic") * 0.6
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame({"customer_id": np.arange(rows), "age": age, "tenure_months": tenure, "plan": plan,
                       "region": region, "monthly_charges": charges, "support_calls": support_calls,
                       "churned": churned.astype(int)})
    if exports is not None:
        new = [pd.read_csv(f) for f in sorted(Path(exports).glob("*.csv"))]
        df = pd.concat([df] + [n for n in new if len(n)], ignore_index=True)
    return {"raw": df}


def features(customers: pd.DataFrame, regions: pd.DataFrame, test_size: float, seed: int) -> dict:
    from sklearn.model_selection import train_test_split

    df = encode(customers.merge(regions, on="region", how="left"))
    train, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=df["churned"])
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def train(train: pd.DataFrame, C: float, max_iter: int, target: str = "churned"):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = train.drop(columns=[target]), train[target]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    model.fit(X, y)
    return {"model": model}


def evaluate(model, test: pd.DataFrame) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score, roc_curve

    X, y = test.drop(columns=["churned"]), test["churned"]
    proba = model.predict_proba(X)[:, 1]
    fpr, tpr, _ = roc_curve(y, proba, drop_intermediate=True)
    roc = [{"fpr": round(float(f), 4), "tpr": round(float(t), 4)} for f, t in zip(fpr, tpr)]
    scores = {"accuracy": float(accuracy_score(y, proba >= 0.5)), "roc_auc": float(roc_auc_score(y, proba))}
    return {"report": scores, "roc": roc, **scores}


def select(reports: dict, models: dict, metric: str) -> dict:
    """Pick the candidate with the best ``metric``. ``reports`` and ``models`` map each value of C to that
    candidate's report and model (a gather over the matrix); the winner's scores are this step's metrics,
    which the model registry gates on."""
    best = max(reports, key=lambda c: reports[c][metric])
    candidates = {"by": metric, "best": {"C": best, **reports[best]},
                  "all": [{"C": c, **r} for c, r in sorted(reports.items())]}
    return {"model": models[best], "candidates": candidates, **reports[best]}
