"""Evaluating a monitor: read its reference (profiled once per fingerprint) and its current window, compare
them with the drift engine (mlspec.drift), and write the JSON and HTML reports.

:func:`evaluate` is what ``mlspec monitor`` calls, and what the monitor resource kind calls when it lands.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mlspec.errors import MlspecError

PREDICTION = "_prediction"
REPORTS_DIR = ".mlspec/reports/monitors"


def _data_address(project, address: str) -> tuple[str, str, dict | None, str]:
    """(path, format, fsspec options, fingerprint) of `dataset.X` or `step.S.O` (its recorded output)."""
    from mlspec.addresses import parse_address
    from mlspec.fingerprint import dataset_fact

    spec = project.spec
    a = parse_address(address)
    if a.kind == "dataset":
        ds = spec.datasets.get(a.name)
        if ds is None:
            raise MlspecError(f"no dataset '{a.name}' in the spec")
        fact = dataset_fact(spec, ds, project.cache)
        uri = ds.uri
        path = uri if "://" in uri or os.path.isabs(uri) else str(spec.project_dir / uri)
        return path, ds.format, dict(ds.options), fact["hash"]
    if a.kind == "step" and a.output:
        st = project.read_state()
        rec = st.resources.get(a.resource)
        if rec is None:
            found = sorted(k for k in st.resources if k.startswith(a.resource + "["))
            rec = st.resources[found[0]] if len(found) == 1 else None
        out = ((rec or {}).get("outputs") or {}).get(a.output)
        if not isinstance(out, dict):
            raise MlspecError(f"{address} has no recorded output yet",
                              hint="run `mlspec apply` first (the monitor's reference is a step output)")
        path = str(project.artifacts.local_path(out["hash"], produced_by=address))
        return path, out.get("format") or "auto", None, out["hash"]
    raise MlspecError(f"{address}: a reference is dataset.NAME or step.NAME.OUTPUT")


def _read(path: str, fmt: str, options=None):
    from mlspec.contracts import ReadProblem, read_table

    try:
        return read_table(path, fmt, options)
    except ReadProblem as p:
        raise MlspecError(f"cannot read {path}: {p.check}: {p.detail}") from None


def request_log_url(project, deployment: str) -> str:
    try:
        from mlspec.kinds.deployment import request_log_url as url_of  # the deployment kind owns the layout
    except ImportError:
        return f"{project.artifacts.url.rstrip('/')}/requests/{project.spec.storage.workspace}/{deployment}"
    return url_of(project.artifacts.url, project.spec.storage.workspace, deployment)


def window_args(window) -> dict:
    """`window: 5000` -> the newest 5000 rows; `window: 24h` -> rows of the last 24 hours."""
    if window is None:
        return {}
    if isinstance(window, int):
        return {"last": window}
    from mlspec.units import parse_duration

    return {"since": time.time() - parse_duration(str(window))}


def current_data(project, monitor, current: str | None = None):
    if current:
        df = _read(current, "auto")
        if isinstance(monitor.window, int):
            df = df.tail(monitor.window)
        return df, current
    try:
        from mlspec.serve.reqlog import read_requests
    except ImportError:
        raise MlspecError(f"monitor '{monitor.name}': this mlspec has no prediction service to read requests from",
                          hint="compare a file instead: mlspec monitor NAME --current PATH") from None
    url = request_log_url(project, monitor.deployment)
    df = read_requests(url, dict(project.spec.storage.options), **window_args(monitor.window))
    if not len(df):
        raise MlspecError(f"monitor '{monitor.name}': deployment {monitor.deployment} has logged no requests "
                          f"{'in its window ' if monitor.window else ''}yet ({url})",
                          hint="send it traffic, or compare a file: mlspec monitor NAME --current PATH")
    return df, url


def evaluate(project, monitor, *, current: str | None = None) -> dict:
    """The drift report of one monitor (spec.monitors[NAME])."""
    from mlspec import drift

    path, fmt, options, fp = _data_address(project, monitor.reference)
    cache_dir = project.spec.project_dir / ".mlspec" / "cache" / "drift"
    ref_df: list = []

    def load():
        if not ref_df:
            ref_df.append(_read(path, fmt, options))
        return ref_df[0]

    def load_features():  # every column but the target (and mlspec's own `_` columns) when none are named
        df = load()
        return df.drop(columns=[monitor.target]) if monitor.target and monitor.target in df.columns else df

    features = list(monitor.features) or None
    key = f"{fp}:without:{monitor.target}" if monitor.target and features is None else fp
    profile, cached = drift.cached_profile(load_features, key, cache_dir, features)
    cur, source = current_data(project, monitor, current)
    pred_ref = None
    if monitor.target:
        pred_ref, _ = drift.cached_profile(lambda: _target_frame(load(), monitor.target),
                                           fp + ":target", cache_dir, [monitor.target])
        pred_ref = pred_ref.features[monitor.target]
        if pred_ref.kind == "categorical" and PREDICTION in cur.columns:
            cur = cur.assign(**{PREDICTION: cur[PREDICTION].map(_label)})
    labels = None
    if monitor.labels:
        lp, lf, lo, _h = _data_address(project, monitor.labels["from"])
        labels = (_read(lp, lf, lo), monitor.labels["key"], monitor.labels.get("target") or monitor.target)
    report = drift.compare(profile, cur, features or list(profile.features), monitor.method, monitor.threshold,
                           prediction_reference=pred_ref, labels=labels)
    if report.get("prediction"):
        report["prediction"]["feature"] = PREDICTION
        report["prediction"]["reference_column"] = monitor.target
    report.update(monitor=monitor.name, deployment=monitor.deployment, reference_address=monitor.reference,
                  current_source=source, window=monitor.window, profile_cached=cached,
                  evaluated=round(time.time(), 3))
    return report


def _label(v):
    """Class labels compare as text: 1, 1.0 and "1" are the same class."""
    if v is None or (isinstance(v, float) and v != v):
        return v
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _target_frame(df, target: str):
    import pandas as pd

    if target not in df.columns:
        raise MlspecError(f"the reference data has no target column {target}", hint="fix the monitor's `target`")
    s = df[target]
    if s.nunique() <= 20:  # classes: compared as categories
        s = s.map(_label).astype(object)
    return pd.DataFrame({target: s})


def write_reports(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """NAME.json and NAME.html (self-contained) under out_dir; written atomically."""
    from mlspec.drift_html import render
    from mlspec.state import json_safe

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    name = report["monitor"]
    paths = []
    for suffix, text in ((".json", json.dumps(json_safe(report), indent=1, sort_keys=True)),
                         (".html", render(report))):
        p = d / f"{name}{suffix}"
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, p)
        paths.append(p)
    return paths[0], paths[1]
