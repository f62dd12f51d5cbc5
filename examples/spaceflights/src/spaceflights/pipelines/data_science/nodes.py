"""Split the model input table, train candidate regressors of the price, evaluate them, keep the best."""

from __future__ import annotations

import logging

import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.metrics import max_error, mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)


def split_data(model_input_table: pd.DataFrame, test_size: float, random_state: int, features: list[str]):
    """Return (X_train, X_test, y_train, y_test), as Kedro's node does; y is a one-column DataFrame."""
    X = model_input_table[features]
    y = model_input_table[["price"]]
    return tuple(train_test_split(X, y, test_size=test_size, random_state=random_state))


def _make(model_type: str, random_state: int):
    if model_type == "linear_regression":
        return LinearRegression()
    if model_type == "random_forest":
        return RandomForestRegressor(n_estimators=40, max_depth=8, random_state=random_state, n_jobs=1)
    raise ValueError(f"unknown model_type {model_type!r} (known: linear_regression, random_forest)")


def train_model(X_train: pd.DataFrame, y_train: pd.DataFrame, model_type: str, random_state: int):
    return _make(model_type, random_state).fit(X_train, y_train["price"])


def evaluate_model(regressor, X_test: pd.DataFrame, y_test: pd.DataFrame) -> dict:
    """Log the R^2 and return the scores: recorded as metrics, and as the `scores` output for select_model."""
    y_true = y_test["price"]
    y_pred = regressor.predict(X_test)
    scores = {"r2_score": float(r2_score(y_true, y_pred)),
              "mae": float(mean_absolute_error(y_true, y_pred)),
              "max_error": float(max_error(y_true, y_pred))}
    log.info("Model %s has a coefficient R^2 of %.3f on test data.", type(regressor).__name__, scores["r2_score"])
    return {"scores": scores, **scores}


def select_model(scores: dict, regressors: dict):
    """Keep the candidate with the best R^2: return (regressor, selection)."""
    best = max(scores, key=lambda model_type: scores[model_type]["r2_score"])
    log.info("selected %s (R^2 %.3f)", best, scores[best]["r2_score"])
    return regressors[best], {"selected": best, "candidates": scores}
