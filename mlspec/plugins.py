"""Entry points of mlspec's plugin groups, read once per process.

Scanning the installed distributions costs 5-8 ms a group here; backends (``mlspec.backends``) and
resource kinds (``mlspec.kinds``) share one scan.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _all():
    from importlib.metadata import entry_points

    return entry_points()  # every group, one scan (select() below only filters)


def entry_points_of(group: str) -> list:
    """The entry points of ``group`` (e.g. "mlspec.backends"), sorted by name."""
    return sorted(_all().select(group=group), key=lambda e: e.name)
