"""Feature encoding shared by training and (later) serving: a change here re-runs `features`."""

from __future__ import annotations

import pandas as pd


def encode(df: pd.DataFrame) -> pd.DataFrame:
    out = df.drop(columns=["customer_id", "region"])
    out = pd.get_dummies(out, columns=["plan"], prefix="plan", dtype=float)
    out["charges_per_tenure"] = out["monthly_charges"] / (out["tenure_months"] + 1)
    return out
