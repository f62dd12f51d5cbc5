"""Tables for `mlspec plots show`: what Kedro's reporting pipeline draws with plotly and matplotlib."""

from __future__ import annotations

import pandas as pd


def compare_passenger_capacity(preprocessed_shuttles: pd.DataFrame) -> pd.DataFrame:
    """Mean passenger capacity by shuttle type (a bar chart)."""
    return (preprocessed_shuttles.groupby("shuttle_type", as_index=False)["passenger_capacity"].mean()
            .round(3))


def price_predictions(regressor, X_test: pd.DataFrame, y_test: pd.DataFrame) -> pd.DataFrame:
    """Actual against predicted price on the test set, for the selected model (a scatter plot)."""
    return pd.DataFrame({"actual": y_test["price"].to_numpy(),
                         "predicted": regressor.predict(X_test).round(1)})
