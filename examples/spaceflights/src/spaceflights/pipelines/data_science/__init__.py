"""Kedro's data_science pipeline: split, train, evaluate (here: two candidate models, and the best one kept)."""
