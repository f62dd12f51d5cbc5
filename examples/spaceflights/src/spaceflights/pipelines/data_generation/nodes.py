"""Write the three raw tables of the spaceflights tutorial, seeded: companies, reviews and shuttles.

They look like the raw files Kedro's starter ships (the same columns, the same awkward encodings: ratings
as "90%", booleans as "t"/"f", prices as "$1,325.0", a few missing values), and the price depends on the
shuttle, its company and its reviews, plus noise, so that a model has something to learn.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LOCATIONS = ["Niue", "Anguilla", "Russian Federation", "Barbados", "Sao Tome and Principe", "Moon", "Mars"]
SHUTTLE_TYPES = ["Type V5", "Type V2", "Type F5", "Type A1"]
ENGINE_TYPES = ["Quantum", "Plasma", "Nuclear"]
ENGINE_VENDORS = ["ThetaBase Services", "Banks, Drake and Morales", "Jones Ltd", "Ramirez Co"]
POLICIES = ["strict", "moderate", "flexible"]
SCORES = ["review_scores_comfort", "review_scores_amenities", "review_scores_trip", "review_scores_crew",
          "review_scores_location", "review_scores_price"]


def _flag(values: np.ndarray) -> np.ndarray:
    return np.where(values, "t", "f")


def _with_missing(rng: np.random.Generator, values: pd.Series, share: float) -> pd.Series:
    return values.mask(rng.random(len(values)) < share)


def generate(n_shuttles: int, n_companies: int, seed: int):
    """Return (companies, reviews, shuttles): the outputs in the order the spec declares them."""
    rng = np.random.default_rng(seed)

    rating = rng.integers(50, 101, n_companies)
    iata = rng.random(n_companies) < 0.6
    companies = pd.DataFrame({
        "id": np.arange(1, n_companies + 1) * 7 + 30000,
        "company_rating": _with_missing(rng, pd.Series([f"{r}%" for r in rating]), 0.05),
        "company_location": rng.choice(LOCATIONS, n_companies),
        "total_fleet_count": _with_missing(rng, pd.Series(rng.integers(1, 40, n_companies).astype(float)), 0.02),
        "iata_approved": _flag(iata),
    })

    company = rng.integers(0, n_companies, n_shuttles)
    shuttle_type = rng.choice(SHUTTLE_TYPES, n_shuttles, p=[0.4, 0.3, 0.2, 0.1])
    engines = rng.integers(1, 5, n_shuttles)
    capacity = rng.integers(2, 11, n_shuttles)
    crew = np.clip(capacity // 2 + rng.integers(-1, 2, n_shuttles), 1, None)
    d_check = rng.random(n_shuttles) < 0.7
    moon = rng.random(n_shuttles) < 0.4
    review_rating = np.clip(rng.normal(90, 8, n_shuttles), 20, 100).round()

    price = (250 + 110 * engines + 90 * capacity + 35 * crew + 150 * d_check + 90 * moon
             + 120 * iata[company] + 4 * rating[company] + 3 * review_rating
             + 300 * (capacity >= 8) * (engines >= 3)           # big, powerful shuttles: a premium
             + rng.normal(0, 120, n_shuttles)).clip(100)
    ids = rng.permutation(np.arange(10000, 10000 + 3 * n_shuttles))[:n_shuttles]

    shuttles = pd.DataFrame({
        "id": ids,
        "shuttle_location": rng.choice(LOCATIONS, n_shuttles),
        "shuttle_type": shuttle_type,
        "engine_type": rng.choice(ENGINE_TYPES, n_shuttles),
        "engine_vendor": rng.choice(ENGINE_VENDORS, n_shuttles),
        "engines": engines,
        "passenger_capacity": capacity,
        "cancellation_policy": rng.choice(POLICIES, n_shuttles),
        "crew": _with_missing(rng, pd.Series(crew.astype(float)), 0.02),
        "d_check_complete": _flag(d_check),
        "moon_clearance_complete": _flag(moon),
        "price": [f"${p:,.1f}" for p in price],
        "company_id": companies["id"].to_numpy()[company],
    })

    reviews = pd.DataFrame({"shuttle_id": ids, "review_scores_rating": review_rating})
    for name in SCORES:
        reviews[name] = np.clip(np.round(review_rating / 10 + rng.normal(0, 0.7, n_shuttles)), 2, 10)
    reviews["review_scores_rating"] = _with_missing(rng, reviews["review_scores_rating"], 0.05)
    reviews["number_of_reviews"] = rng.integers(1, 200, n_shuttles)
    reviews["reviews_per_month"] = (reviews["number_of_reviews"] / rng.uniform(6, 60, n_shuttles)).round(2)
    reviews = reviews.sample(frac=1, random_state=seed).reset_index(drop=True)   # not in shuttle order

    log.info("generated %d companies, %d shuttles and %d reviews", len(companies), len(shuttles), len(reviews))
    return companies, reviews, shuttles
