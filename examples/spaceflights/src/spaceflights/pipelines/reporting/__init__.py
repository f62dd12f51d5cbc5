"""Kedro's reporting pipeline: tables drawn by `mlspec plots show`."""
