"""`mlspec plots show|diff`: one self-contained HTML page (charts as SVG, each Vega-Lite spec as JSON, images as
data URIs, nothing fetched at view time) and a Markdown summary, from the outputs steps declare under `plots:`."""

from __future__ import annotations

import base64
import json
import re

import pytest

SPEC = """
project: demo
datasets:
  nums: {uri: data/nums.csv}
steps:
  evaluate:
    run: demo.ev:evaluate
    inputs: {raw: dataset.nums}
    outputs: [roc, loss, confusion, table, blob]
    params: {k: 1}
    matrix: {C: [1, 2]}
    metrics: [auc]
    plots:
      roc: {x: fpr, y: tpr, template: scatter, title: ROC curve}
      loss: {x: epoch, y: [train.loss, val_loss]}
      confusion: {}
      table: {template: bar}
"""

EV = '''
import struct, zlib
import pandas as pd


def png(path, shade):
    rows = b"".join(b"\\x00" + bytes([shade, 0, 0]) * 2 for _ in range(2))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    with open(path, "wb") as fh:
        fh.write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def evaluate(raw, k=1, C=1):
    roc = [{"fpr": i / 4, "tpr": round(min(1.0, i / 4 * (1 + k / 10 + C / 100)), 4)} for i in range(5)]
    loss = f"loss-{k}-{C}.csv"  # matrix instances run at once: one file each
    with open(loss, "w") as fh:
        fh.write("epoch,train.loss,val_loss\\n" + "".join(f"{e},{k * 10 + e},{k * 20 + e}\\n" for e in range(3)))
    return {"roc": roc, "loss": loss, "confusion": png(f"conf-{k}-{C}.png", 10 * k), "auc": 0.5 + k / 100,
            "table": pd.DataFrame({"label": ["a", "b"], "count": [k, 2 * k]}), "blob": b"\\x00\\x01\\x02"}
'''


@pytest.fixture
def plotted(project):
    project.write("mlspec.yaml", SPEC)
    project.write("src/demo/ev.py", EV)
    assert project.apply().returncode == 0
    r = project.apply("steps.evaluate.params.k=2")
    assert r.returncode == 0, r.stderr
    return project


def _offline(page: str) -> None:
    """Nothing in the page is fetched: no remote src/href/url(), no script with a src, no link or iframe."""
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I), "a remote src/href"
    assert not re.search(r"""url\(\s*['"]?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<script[^>]*\ssrc\s*=", page, re.I)
    assert not re.search(r"<(?:link|iframe|object|embed)\b", page, re.I)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def _specs(page: str) -> dict:
    blocks = re.findall(r'<script type="application/json" class="vega-lite" data-address="([^"]+)">(.*?)</script>',
                        page, re.S)
    return {addr: json.loads(text) for addr, text in blocks}


def test_show_writes_one_self_contained_page(plotted):
    r = plotted.run("plots", "show")
    assert r.returncode == 0, r.stderr
    assert "Wrote 8 plots to plots.html" in r.stdout, r.stdout
    page = (plotted.root / "plots.html").read_text(encoding="utf-8")
    _offline(page)
    specs = _specs(page)
    assert set(specs) == {f"step.evaluate[C={c}].{o}" for c in (1, 2) for o in ("roc", "loss", "table")}
    roc = specs["step.evaluate[C=2].roc"]
    assert roc["mark"]["type"] == "point" and roc["title"] == {"text": "ROC curve",
                                                               "subtitle": "step.evaluate[C=2].roc"}
    assert [v["tpr"] for v in roc["data"]["values"]] == [0.0, 0.3050, 0.61, 0.915, 1.0]  # the series, k=2
    loss = specs["step.evaluate[C=1].loss"]
    assert [(v["epoch"], v["train.loss"], v["val_loss"]) for v in loss["data"]["values"]] == [
        (0, 20, 40), (1, 21, 41), (2, 22, 42)]
    assert loss["transform"][0]["fold"] == ["train\\.loss", "val_loss"]  # a dotted column is not nested data
    table = specs["step.evaluate[C=1].table"]  # a returned DataFrame (Parquet), x = the row number
    assert [(v["step"], v["count"]) for v in table["data"]["values"]] == [(0, 2), (1, 4)]
    assert page.count("<svg") >= 6  # each chart drawn, inline
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 2 and all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "blob" not in page  # not declared under plots:


def test_diff_overlays_the_base_and_summarises_for_a_pull_request(plotted):
    r = plotted.run("plots", "diff", "--format", "markdown", "-o", "diff.html")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert md.startswith("### Plots of demo, state serial 2 against state serial 1"), md
    assert "| `step.evaluate[C=1].roc` | scatter | changed |" in md
    assert "| `step.evaluate[C=1].confusion` | image | changed: compare the images in the HTML page |" in md
    page = (plotted.root / "diff.html").read_text(encoding="utf-8")
    _offline(page)
    loss = _specs(page)["step.evaluate[C=1].loss"]
    rows = {(v["revision"], v["epoch"]): v["train.loss"] for v in loss["data"]["values"]}
    assert rows[("state serial 1", 0)] == 10 and rows[("state serial 2", 0)] == 20
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 4  # base and current, side by side
    # one plot, as data; an unchanged plot says so
    r = plotted.run("plots", "diff", "step.evaluate[C=1].roc", "--base", "2", "--format", "json")
    data = json.loads(r.stdout)
    assert [p["address"] for p in data["plots"]] == ["step.evaluate[C=1].roc"]
    assert data["plots"][0]["status"] == "unchanged" and data["page"] is None
    assert not (plotted.root / "plots.html").exists()  # json and markdown write a page only with -o


def test_plot_errors_are_one_line(plotted):
    def error(r, *words):
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("Error: ") and all(w in r.stderr for w in words), r.stderr

    error(plotted.run("plots", "show", "steps.evaluate.plots.roc.y=tp"),
          "steps.evaluate.plots.roc.y: column 'tp' is not in step.evaluate[C=1].roc (columns: fpr, tpr)")
    error(plotted.run("plots", "show", "+steps.evaluate.plots.blob={}"),
          "steps.evaluate.plots.blob: cannot plot step.evaluate[C=1].blob", "it is binary")
    error(plotted.run("plots", "show", "step.evaluate.rco"), "no recorded plot matches step.evaluate.rco",
          "did you mean 'step.evaluate.roc'", "plots: step.evaluate.confusion, step.evaluate.loss")
    error(plotted.run("plots", "show", "~steps.evaluate.plots"), "no step declares `plots:`")
    r = plotted.run("validate", "+steps.evaluate.plots.model={}")
    assert r.returncode == 1 and "plot of 'model', which step 'evaluate' does not declare under `outputs:`" \
        in r.stderr and "[unknown-output]" in r.stderr, r.stderr
