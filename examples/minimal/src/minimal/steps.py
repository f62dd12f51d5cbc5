"""Steps of the minimal example. `data` arrives as a DataFrame because of its annotation."""

from __future__ import annotations

import pandas as pd


def train(data: pd.DataFrame, n_estimators: int, seed: int):
    from sklearn.ensemble import RandomForestClassifier

    X, y = data.drop(columns=["target"]), data["target"]
    return {"model": RandomForestClassifier(n_estimators=n_estimators, random_state=seed).fit(X, y)}


def score(model, data: pd.DataFrame) -> dict:
    X, y = data.drop(columns=["target"]), data["target"]
    return {"accuracy": float((model.predict(X) == y).mean())}
