"""Spaceflights: predict the price of a space shuttle trip (a port of Kedro's spaceflights starter)."""
