"""Synthetic raw data, so that the example needs no download."""
