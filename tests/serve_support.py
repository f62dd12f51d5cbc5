"""Shared by the prediction-service tests: a model stored as skops in a real artifact store, a worker config
as the deployer writes it, and a small HTTP client on http.client (keep-alive, no dependency)."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

SIGNATURE = {"inputs": [{"name": "age", "dtype": "int64"}, {"name": "income", "dtype": "float64"},
                        {"name": "tenure", "dtype": "int64"}],
             "output": {"name": "churned", "dtype": "int64"}}


def training_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.integers(18, 80, n).astype("int64"), "income": rng.normal(50.0, 12.0, n),
                       "tenure": rng.integers(0, 12, n).astype("int64")})
    df["churned"] = ((df.age < 35) & (df.tenure < 4) | (df.income < 35)).astype("int64")
    return df


def numeric_model():
    from sklearn.linear_model import LogisticRegression

    df = training_frame()
    return LogisticRegression(max_iter=500).fit(df[["age", "income", "tenure"]], df["churned"])


def pipeline_model():
    """A ColumnTransformer selecting columns by name: only a DataFrame works."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = training_frame()
    df["plan"] = np.where(df.age > 50, "gold", np.where(df.tenure > 6, "silver", "basic"))
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                             ("cat", OneHotEncoder(handle_unknown="error"), ["plan"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])
    return model.fit(df[["age", "income", "plan"]], df["churned"])


def store_model(model, root: Path, fmt: str = "skops") -> tuple[str, str]:
    """Save through mlspec.formats into an artifact store under ``root``; returns (store url, hash)."""
    from mlspec import formats
    from mlspec.artifacts import ArtifactStore

    root.mkdir(parents=True, exist_ok=True)
    path, _ = formats.save(model, root / "model", fmt)
    store_url = str(root / "store")
    digest, _ = ArtifactStore(store_url).put_file(path)
    os.unlink(path)
    return store_url, digest


def write_config(path: Path, store_url: str, digest: str, *, model: str = "churn-clf", version=3,
                 signature=SIGNATURE, log_url: str | None = None, fmt: str = "skops", token_env=None,
                 max_body: int = 1_048_576, flush_seconds: float = 0.2, drain_seconds: float = 10,
                 max_bytes: int = 64 << 20) -> Path:
    cfg = {"deployment": "churn-api", "model": model, "version": version,
           "artifact": {"hash": digest, "format": fmt},
           "store": {"url": store_url, "options_env": "MLSPEC_SERVE_STORE_OPTIONS"},
           "signature": signature,
           "log": None if log_url is None else {"url": log_url, "options_env": "MLSPEC_SERVE_STORE_OPTIONS",
                                                "max_bytes": max_bytes, "flush_rows": 1000,
                                                "flush_seconds": flush_seconds},
           "limits": {"max_body_bytes": max_body}, "token_env": token_env, "drain_seconds": drain_seconds}
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers as a dict of lower-case names, decoded JSON body or raw bytes)."""
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self.conn.close()
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            payload = data
        return resp.status, hdrs, payload

    def post_json(self, path: str, doc, headers: dict | None = None):
        return self.request("POST", path, json.dumps(doc).encode(),
                            {"Content-Type": "application/json", **(headers or {})})

    def predict(self, rows: list, headers: dict | None = None):
        return self.post_json("/predict", {"instances": rows}, headers)

    def close(self):
        self.conn.close()


def rows_of(df: pd.DataFrame) -> list:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in df.to_dict("records")]
