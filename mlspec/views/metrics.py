"""The views of `mlspec metrics show` and `metrics diff`: rows of plain data rendered as aligned text or Markdown.

Integers (counts: epochs, rows, a dvclive ``step``) print as integers; other numbers with four decimals; a
missing value as ``-``; NaN and infinities as ``nan``, ``inf``, ``-inf``.
"""

from __future__ import annotations

import math

from mlspec.views.formats import markdown_table, text_table


def number(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if v != v else ("inf" if v > 0 else "-inf")
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def delta(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:+d}"
    if isinstance(v, float) and not math.isfinite(v):
        return number(v) if v != v or v < 0 else "+inf"
    return f"{v:+.4f}"


def change(old, new):
    """new - old, an int when both are ints; None when either is missing (or not a number)."""
    if old is None or new is None or isinstance(old, bool) or isinstance(new, bool):
        return None
    if not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
        return None
    return new - old


def show_text(rows: list[dict]) -> str:
    if not rows:
        return "No metrics recorded yet."
    return text_table(["RESOURCE", "METRIC", "VALUE"], [[r["address"], r["metric"], number(r["value"])]
                                                         for r in rows], align_right=(2,))


def show_markdown(rows: list[dict]) -> str:
    return markdown_table(["resource", "metric", "value"], [[f"`{r['address']}`", r["metric"], number(r["value"])]
                                                             for r in rows], align_right=(2,))


def diff_text(data: dict) -> str:
    head = f"Metrics of {data['current']['label']} against {data['base']['label']}:"
    if not data["rows"]:
        return head + "\nNo metrics recorded in either."
    rows = [[r["address"], r["metric"], number(r["base"]), number(r["current"]), delta(r["change"])]
            for r in data["rows"]]
    return head + "\n" + text_table(["RESOURCE", "METRIC", "BASE", "CURRENT", "CHANGE"], rows, align_right=(2, 3, 4))


def diff_markdown(data: dict) -> str:
    rows = [[f"`{r['address']}`", r["metric"], number(r["base"]), number(r["current"]), delta(r["change"])]
            for r in data["rows"]]
    return (f"Metrics of {data['current']['label']} against {data['base']['label']}\n\n"
            + markdown_table(["resource", "metric", "base", "current", "change"], rows, align_right=(2, 3, 4)))
