"""Parsing of durations ("1h30m", 90) and sizes ("2GiB", 512) used in specs."""

from __future__ import annotations

import re

_DUR = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DUR_FULL = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+$")
_DUR_FACTOR = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$")
_SIZE_FACTOR = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_duration(value) -> float:
    """Seconds from a number or a string like '30s', '10m', '1h30m'. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    text = str(value).strip()
    if not _DUR_FULL.match(text):
        raise ValueError(f"not a duration: {value!r} (use seconds, or forms like 30s, 10m, 1h30m)")
    total = sum(float(n) * _DUR_FACTOR[u] for n, u in _DUR.findall(text))
    if total <= 0:
        raise ValueError("a duration must be positive")
    return total


def parse_size(value) -> int:
    """Bytes from an integer or a string like '512MiB', '2GB'. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    m = _SIZE.match(str(value).strip())
    if not m:
        raise ValueError(f"not a size: {value!r} (use bytes, or forms like 512MiB, 2GiB)")
    return int(float(m.group(1)) * _SIZE_FACTOR[m.group(2)])
