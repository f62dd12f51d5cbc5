"""Clean the raw tables (percentages, "t"/"f" flags, "$1,325.0" prices) and join them."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)


def _is_true(column: pd.Series) -> pd.Series:
    return column == "t"


def _parse_percentage(column: pd.Series) -> pd.Series:
    return column.str.rstrip("%").astype(float) / 100


def _parse_money(column: pd.Series) -> pd.Series:
    return column.str.replace("$", "", regex=False).str.replace(",", "", regex=False).astype(float)


def preprocess_companies(companies: pd.DataFrame) -> pd.DataFrame:
    companies = companies.copy()
    companies["iata_approved"] = _is_true(companies["iata_approved"])
    companies["company_rating"] = _parse_percentage(companies["company_rating"])
    return companies


def preprocess_shuttles(shuttles: pd.DataFrame) -> pd.DataFrame:
    shuttles = shuttles.copy()
    shuttles["d_check_complete"] = _is_true(shuttles["d_check_complete"])
    shuttles["moon_clearance_complete"] = _is_true(shuttles["moon_clearance_complete"])
    shuttles["price"] = _parse_money(shuttles["price"])
    return shuttles


def create_model_input_table(shuttles: pd.DataFrame, companies: pd.DataFrame,
                             reviews: pd.DataFrame) -> pd.DataFrame:
    """One row per reviewed shuttle, with its company's columns; rows with a missing value are dropped."""
    rated = shuttles.merge(reviews, left_on="id", right_on="shuttle_id").drop(columns="id")
    table = rated.merge(companies, left_on="company_id", right_on="id").drop(columns="id")
    complete = table.dropna().reset_index(drop=True)
    log.info("model input table: %d rows (%d dropped for missing values)", len(complete), len(table) - len(complete))
    return complete
