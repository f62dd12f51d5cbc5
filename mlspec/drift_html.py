"""The drift report as one self-contained HTML page: the summary table and, per feature, a histogram of the
reference against the current window, drawn as inline SVG. No script, no network: it opens in any browser
offline and can be mailed or attached to a CI run."""

from __future__ import annotations

from html import escape

W, H, PAD = 420, 150, 26
REF, CUR = "#9aa5b1", "#2f6fdf"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def _svg(feature: dict) -> str:
    h = feature.get("histogram")
    if not h:
        return '<p class="note">no values to draw</p>'
    ref, cur = h["reference"], h["current"]
    labels = h.get("categories")
    n = len(ref)
    top = max(max(ref or [0]), max(cur or [0])) or 1.0
    bw = (W - 2 * PAD) / max(n, 1)
    parts = [f'<svg class="histogram" data-feature="{escape(feature["feature"])}" width="{W}" height="{H + 30}" '
             f'viewBox="0 0 {W} {H + 30}" role="img" aria-label="histogram of {escape(feature["feature"])}">',
             f'<line x1="{PAD}" y1="{H}" x2="{W - PAD}" y2="{H}" stroke="#444"/>']
    for i in range(n):
        x = PAD + i * bw
        for j, (share, color) in enumerate(((ref[i], REF), (cur[i], CUR))):
            bh = (H - 10) * share / top
            parts.append(f'<rect x="{x + j * bw / 2 + 0.5:.2f}" y="{H - bh:.2f}" width="{max(bw / 2 - 1, 0.5):.2f}" '
                         f'height="{bh:.2f}" fill="{color}"><title>{"reference" if j == 0 else "current"}'
                         f'{": " + escape(str(labels[i])) if labels else ""} {share:.2%}</title></rect>')
    if labels:
        for i, lab in enumerate(labels[:12]):
            parts.append(f'<text x="{PAD + (i + 0.5) * bw:.1f}" y="{H + 14}" font-size="10" text-anchor="middle">'
                         f'{escape(str(lab))[:10]}</text>')
    else:
        e = h["edges"]
        parts.append(f'<text x="{PAD}" y="{H + 14}" font-size="10">{e[0]:.4g}</text>')
        parts.append(f'<text x="{W - PAD}" y="{H + 14}" font-size="10" text-anchor="end">{e[-1]:.4g}</text>')
    parts.append(f'<text x="{W - PAD}" y="12" font-size="10" text-anchor="end">'
                 f'<tspan fill="{REF}">&#9632; reference</tspan> <tspan fill="{CUR}">&#9632; current</tspan></text>')
    parts.append("</svg>")
    return "".join(parts)


def render(report: dict) -> str:
    from mlspec.drift import summary_rows

    name = escape(str(report.get("monitor", "drift")))
    rows = summary_rows(report)
    table = "".join(
        "<tr" + (' class="drift"' if r[-1] == "DRIFT" else "") + ">" + "".join(f"<td>{escape(c)}</td>" for c in r)
        + "</tr>" for r in rows)
    feats = report["features"] + ([report["prediction"]] if report.get("prediction") else [])
    cards = "".join(
        f'<section class="feature{" drift" if f.get("drifted") else ""}"><h3>{escape(f["feature"])} '
        f'<small>{escape(f.get("method") or "-")} = {_fmt(f.get("statistic"))}'
        f'{", p = " + _fmt(f.get("p_value")) if f.get("p_value") is not None else ""}'
        f' (threshold {_fmt(f.get("threshold"))}){" &mdash; DRIFT" if f.get("drifted") else ""}</small></h3>'
        f'{_svg(f)}<p class="note">{f.get("n_reference")} reference, {f.get("n_current")} current values</p>'
        "</section>" for f in feats)
    perf = report.get("performance")
    perf_html = ""
    if perf:
        perf_html = "<h2>Performance</h2><p>" + ", ".join(
            f"{escape(k)}: {_fmt(v)}" for k, v in perf.items()) + "</p>"
    verdict = ("DRIFT" if report.get("dataset_drift") else "no data drift")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {name}</title>
<link rel="icon" href="data:,">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
tr.drift td {{ background: #fde8e8; font-weight: 600; }}
section.feature {{ display: inline-block; vertical-align: top; margin: 0.5em; padding: 0.5em;
  border: 1px solid #ddd; border-radius: 4px; }}
section.feature.drift {{ border-color: #d33; }}
h3 small {{ font-weight: normal; color: #555; }} .note {{ color: #666; font-size: 12px; margin: 0; }}
</style></head>
<body>
<h1>Drift report: {name}</h1>
<p id="verdict">{verdict}: {len(report.get("drifted_features", []))} of {len(report["features"])} features drifted
(share {report.get("share_drifted", 0):.0%}, data drift at {report.get("drift_share", 0.5):.0%}).
Reference {escape(str(report.get("reference_address", "")))} ({report["reference"]["rows"]} rows), current
{escape(str(report.get("current_source", "")))} ({report["current"]["rows"]} rows), method {escape(report["method"])}.</p>
<h2>Summary</h2>
<table id="summary"><thead><tr><th>feature</th><th>kind</th><th>method</th><th>statistic</th><th>threshold</th>
<th>drift</th></tr></thead><tbody>{table}</tbody></table>
{perf_html}
<h2>Features</h2>
{cards}
</body></html>
"""
