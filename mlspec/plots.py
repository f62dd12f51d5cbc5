"""Plots of step outputs: read a recorded series or image, describe it as a Vega-Lite chart, and render one
self-contained HTML page (charts as inline SVG, images as data URIs, each chart's Vega-Lite spec embedded as
JSON) or a Markdown summary for a pull request.

Everything here works on bytes and plain data; the command (mlspec.commands.plots) reads the state and the
artifact store. The SVG comes from vl-convert (Vega and Vega-Lite compiled into a Python extension): it
renders in-process and offline, so the page needs no JavaScript and no network to be viewed. It is imported
only when a chart is drawn.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass

from mlspec.errors import MlspecError

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
IMAGE_TYPES = (("png", b"\x89PNG\r\n\x1a\n"), ("jpeg", b"\xff\xd8\xff"), ("gif", b"GIF87a"), ("gif", b"GIF89a"))
_MARKS = {"line": {"type": "line", "point": True, "tooltip": True},
          "scatter": {"type": "point", "filled": True, "tooltip": True},
          "bar": {"type": "bar", "tooltip": True}}


@dataclass(frozen=True)
class Content:
    """What a recorded output holds: a table (rows of column -> value) or an image (its MIME type)."""

    rows: list | None = None
    mime: str = ""


# --- reading --------------------------------------------------------------------------------------------
def image_type(raw: bytes) -> str:
    """The MIME type of an image's bytes (PNG, JPEG, GIF, SVG), or ""."""
    for name, magic in IMAGE_TYPES:
        if raw.startswith(magic):
            return f"image/{name}"
    head = raw[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") and b"<svg" in head:
        return "image/svg+xml"
    return ""


def _scalar(text: str):
    if text == "":
        return None
    for conv in (int, float):
        try:
            v = conv(text)
        except ValueError:
            continue
        return v if conv is int or math.isfinite(v) else None
    return text


def _delimited(text: str) -> list[dict]:
    lines = text.splitlines()
    if not lines:
        raise ValueError("it is empty")
    delim = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delim)
    if not reader.fieldnames or len(reader.fieldnames) < 1:
        raise ValueError("it has no header row")
    rows = [{k: _scalar(v or "") for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise ValueError("it has a header but no rows")
    return rows


def _json_rows(doc) -> list[dict]:
    if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        return doc
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(doc) == 1 and lists and all(isinstance(r, dict) for r in lists[0]):
            return lists[0]  # {"roc": [{"fpr": 0, "tpr": 0}, ...]}, as DVC writes plots
        if doc and len(lists) == len(doc) and len({len(v) for v in lists}) == 1:
            cols = list(doc)
            return [dict(zip(cols, vals)) for vals in zip(*lists)]  # {"fpr": [...], "tpr": [...]}
    raise ValueError("its JSON is not a table: use a list of objects ([{\"x\": 1, \"y\": 2}, ...]) or an object "
                     "of equal-length lists ({\"x\": [...], \"y\": [...]})")


def read_content(raw: bytes, fmt: str) -> Content:
    """A recorded output's bytes as a table or an image; ValueError saying why it is neither."""
    content = _read(raw, fmt)
    if content.rows is None:
        return content
    if not all(isinstance(r, dict) for r in content.rows):
        raise ValueError("its rows are not all objects (column -> value)")
    finite = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
              for r in content.rows]
    return Content(rows=finite)


def _read(raw: bytes, fmt: str) -> Content:
    mime = image_type(raw)
    if mime:
        return Content(mime=mime)
    if fmt == "parquet" or raw.startswith(b"PAR1"):
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(raw))
        return Content(rows=json.loads(frame.to_json(orient="records")))
    try:
        text = raw.decode("utf-8-sig")
        if "\x00" in text[:8192]:
            raise UnicodeDecodeError("utf-8", raw, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise ValueError(f"it is binary ({fmt}), not a table (CSV, TSV, JSON, JSONL, Parquet) or an image "
                         "(PNG, JPEG, GIF, SVG)") from None
    stripped = text.lstrip()
    if fmt == "jsonl" or (stripped.startswith("{") and "\n{" in stripped.rstrip()):
        try:
            return Content(rows=[json.loads(ln) for ln in text.splitlines() if ln.strip()])
        except ValueError:
            if fmt == "jsonl":
                raise ValueError("a line of it is not JSON") from None
    if fmt == "json" or stripped[:1] in ("[", "{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise ValueError("it is not valid JSON") from None
        return Content(rows=_json_rows(doc))
    return Content(rows=_delimited(text))


# --- charts ---------------------------------------------------------------------------------------------
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def columns(rows: list) -> list[str]:
    seen: dict = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def axes(plot, rows: list, where: str, address: str) -> tuple[str, list[str], bool]:
    """(x column, y columns, whether x is the row number) for a plot of ``rows``; MlspecError naming the key."""
    cols = columns(rows)
    listed = ", ".join(cols) or "none"
    x = plot.x
    if x and x not in cols:
        raise MlspecError(f"{where}.x: column '{x}' is not in {address} (columns: {listed})",
                          hint="name one of its columns, or leave x out to plot against the row number")
    index = not x and "step" not in cols
    x = x or "step"
    y = list(plot.y)
    for col in y:
        if col not in cols:
            raise MlspecError(f"{where}.y: column '{col}' is not in {address} (columns: {listed})",
                              hint="name columns the output has")
    if not y:
        y = [c for c in cols if c != x and any(_number(r.get(c)) for r in rows)]
        if not y:
            raise MlspecError(f"{where}: {address} has no numeric column to plot (columns: {listed})",
                              hint="set y to the column to plot")
    return x, y, index


def _field(name: str) -> str:
    """A column name as a Vega-Lite field: '.', '[' and ']' are escaped, or they would read nested data."""
    return name.replace("\\", "\\\\").replace(".", "\\.").replace("[", "\\[").replace("]", "\\]")


def vega_lite(plot, title: str, series: list[tuple[str, list]], x: str, y: list[str], index: bool) -> dict:
    """The Vega-Lite spec of a chart, data inline. ``series`` is [(revision label, rows)]: more than one
    overlays the revisions, told apart by colour (or by colour per column and revision)."""
    overlay = len(series) > 1
    values = []
    for label, rows in series:
        for i, r in enumerate(rows):
            v = {x: i if index else r.get(x)}
            v.update({c: r.get(c) for c in y})
            if overlay:
                v["revision"] = label
            values.append(v)
    xs = [v[x] for v in values if v[x] is not None]
    x_type = "quantitative" if plot.template != "bar" and xs and all(_number(v) for v in xs) else "ordinal"
    enc: dict = {"x": {"field": _field(x), "type": x_type, "title": x}}
    transform: list = []
    if len(y) > 1:
        transform.append({"fold": [_field(c) for c in y], "as": ["column", "value"]})
        enc["y"] = {"field": "value", "type": "quantitative", "title": ", ".join(y)}
        colour = "column"
        if overlay:
            transform.append({"calculate": "datum.column + ' (' + datum.revision + ')'", "as": "series"})
            colour = "series"
    else:
        enc["y"] = {"field": _field(y[0]), "type": "quantitative", "title": y[0]}
        colour = "revision" if overlay else ""
    if colour:
        enc["color"] = {"field": colour, "type": "nominal", "title": None}
        if plot.template == "bar":
            enc["xOffset"] = {"field": colour}
    spec = {"$schema": VEGA_LITE_SCHEMA, "title": title, "width": 480, "height": 280,
            "data": {"values": values}, "mark": dict(_MARKS[plot.template]), "encoding": enc}
    if transform:
        spec["transform"] = transform
    if plot.template == "line" and len(values) > 60:
        spec["mark"]["point"] = False
    return spec


def svg(spec: dict) -> str:
    """The chart as SVG, rendered in-process (no browser, no network)."""
    import vl_convert

    return vl_convert.vegalite_to_svg(spec)


# --- the page and the summary ---------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}
h2{font-size:1.1em;font-family:monospace;margin-top:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.status{color:#555}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:.9em;color:#555}
figure img{max-width:640px;border:1px solid #eee}"""


def _json_block(data) -> str:
    text = json.dumps(data, sort_keys=True, allow_nan=False, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def page(title: str, entries: list[dict], images: dict[str, bytes]) -> str:
    """One HTML file that shows everything without fetching anything: a Content-Security-Policy forbids any
    load but data: images, charts are inline SVG, images data URIs, specs JSON in inert script blocks."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
           "style-src 'unsafe-inline'\">",
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", "<table><tr><th>plot</th><th>type</th><th>status</th></tr>"]
    for e in entries:
        out.append(f'<tr><td><a href="#{html.escape(e["id"])}">{html.escape(e["address"])}</a></td>'
                   f'<td>{html.escape(e["type"])}</td><td>{html.escape(e["status"])}</td></tr>')
    out.append("</table>")
    for e in entries:
        out.append(f'<section id="{html.escape(e["id"])}"><h2>{html.escape(e["address"])}</h2>'
                   f'<p class="status">{html.escape(e["status"])}</p>')
        if e["type"] == "image":
            for im in e["images"]:
                data = base64.b64encode(images[im["hash"]]).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(e["address"])} ({html.escape(im["revision"])})" '
                           f'src="data:{im["mime"]};base64,{data}"><figcaption>{html.escape(im["revision"])}'
                           "</figcaption></figure>")
        else:
            out.append(f"<figure>{e['svg']}</figure>")
            out.append(f'<script type="application/json" class="vega-lite" data-address="'
                       f'{html.escape(e["address"])}">{_json_block(e["vega_lite"])}</script>')
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def markdown(title: str, entries: list[dict], page_file: str | None) -> str:
    from mlspec.views.formats import markdown_table

    rows = []
    for e in entries:
        status = e["status"]
        if e["type"] == "image" and status == "changed":
            status += ": compare the images in the HTML page"
        rows.append([f"`{e['address']}`", e["type"], status])
    out = [f"### {title}", "", markdown_table(["plot", "type", "status"], rows)]
    if page_file:
        out += ["", f"Charts and images: `{page_file}` (one self-contained HTML file)."]
    return "\n".join(out)
