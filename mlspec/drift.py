"""The drift engine: compare current data (a deployment's logged inputs) with reference data, per feature.

A reference :class:`Profile` holds, per feature, what every method needs: numeric features keep their values
sorted (exact Kolmogorov-Smirnov and Wasserstein), their population standard deviation and quantile bin
edges (PSI, Jensen-Shannon, chi-squared on bins); categorical features keep their category counts. It is
built once per reference fingerprint and cached (``.mlspec/cache/drift/<fingerprint>/``, one ``.npy`` per
array, memory-mapped on load), so comparing a window costs only the window's own sort.

:func:`compare` returns a plain report dict (features, share drifted, prediction drift, performance). Every
formula and default is in docs/monitoring.md; the tests check each against scipy (or a hand-worked PSI) to
1e-9.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from mlspec.errors import MlspecError

PROFILE_VERSION = 1
QUANTILE_BINS = 10  # PSI / Jensen-Shannon / chi-squared bins of a numeric feature: reference deciles
PSI_FLOOR = 1e-4  # a bin's share is at least this in PSI (an empty bin would make it infinite)
SMALL_SAMPLE = 1000  # auto: at or below this many current rows, tests (p-values); above, distances
HIST_BINS = 30  # per-feature histogram of the HTML report
TOP_CATEGORIES = 20

METHODS = ("auto", "psi", "ks", "wasserstein", "jensenshannon", "chi2")
TESTS = ("ks", "chi2")  # drift when p < threshold; the others: drift when statistic >= threshold
DEFAULT_THRESHOLD = {"psi": 0.2, "ks": 0.05, "chi2": 0.05, "wasserstein": 0.1, "jensenshannon": 0.05}
DRIFT_SHARE = 0.5  # the data set drifts when at least this share of its features do


@dataclass
class FeatureProfile:
    name: str
    kind: str  # "numeric" | "categorical"
    n: int  # non-null reference values
    nulls: int = 0
    values: object = None  # numeric: sorted float64 array
    std: float = 0.0
    edges: object = None  # numeric: inner quantile bin edges (strictly increasing)
    categories: list = field(default_factory=list)  # categorical: categories by count, descending
    counts: object = None  # categorical: their counts


@dataclass
class Profile:
    fingerprint: str
    rows: int
    features: dict  # name -> FeatureProfile


# --- profiles -----------------------------------------------------------------------------------------------
def _is_numeric(s) -> bool:
    from pandas.api import types as t

    return t.is_numeric_dtype(s.dtype) and not t.is_bool_dtype(s.dtype)


def feature_profile(name: str, s) -> FeatureProfile:
    import numpy as np

    nn = s.dropna() if s.hasnans else s
    if _is_numeric(s):
        v = nn.to_numpy(dtype=np.float64, copy=True)
        v.sort()
        edges = np.unique(np.quantile(v, np.arange(1, QUANTILE_BINS) / QUANTILE_BINS)) if len(v) else np.array([])
        return FeatureProfile(name, "numeric", len(v), int(len(s) - len(nn)), v, float(np.std(v)) if len(v) else 0.0,
                              edges)
    cats, counts = _category_counts(nn)
    return FeatureProfile(name, "categorical", int(counts.sum()), int(len(s) - len(nn)), categories=cats,
                          counts=counts)


def _category_counts(s):
    import numpy as np

    from pandas.api import types as t

    if t.is_string_dtype(s.dtype) and not t.is_object_dtype(s.dtype) or hasattr(s, "cat"):
        vc = s.value_counts(sort=False)  # text and categories count as they are
    else:
        vc = s.astype(str).value_counts(sort=False)  # numbers, booleans, mixed objects: by their text
    vc = vc[vc > 0]
    pairs = sorted(zip(map(str, vc.index), vc.to_numpy()), key=lambda p: (-p[1], p[0]))
    return [p[0] for p in pairs], np.array([p[1] for p in pairs], dtype=np.int64)


def build_profile(df, features: Sequence[str] | None = None, fingerprint: str = "") -> Profile:
    cols = list(features) if features else [c for c in map(str, df.columns) if not c.startswith("_")]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise MlspecError(f"the reference data has no column {', '.join(missing)}",
                          hint="fix the monitor's `features`, or its `reference`")
    return Profile(fingerprint, len(df), {c: feature_profile(c, df[c]) for c in cols})


def profile_dir(cache_dir: str | os.PathLike, fingerprint: str, features: Sequence[str] | None) -> Path:
    import xxhash

    key = xxhash.xxh3_64_hexdigest(json.dumps([PROFILE_VERSION, fingerprint, sorted(features or [])]).encode())
    return Path(cache_dir) / key


def save_profile(p: Profile, d: Path) -> None:
    import numpy as np

    tmp = d.with_name(d.name + f".{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    meta = {"version": PROFILE_VERSION, "fingerprint": p.fingerprint, "rows": p.rows, "features": []}
    for i, (name, f) in enumerate(p.features.items()):
        m = {"name": name, "kind": f.kind, "n": f.n, "nulls": f.nulls, "std": f.std, "file": i}
        if f.kind == "numeric":
            np.save(tmp / f"{i}.values.npy", f.values)
            np.save(tmp / f"{i}.edges.npy", f.edges)
        else:
            m["categories"] = f.categories
            m["counts"] = [int(c) for c in f.counts]
        meta["features"].append(m)
    (tmp / "profile.json").write_text(json.dumps(meta), "utf-8")
    try:
        os.replace(tmp, d)
    except OSError:  # another process cached it first: theirs is as good
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_profile(d: Path) -> Profile | None:
    import numpy as np

    try:
        meta = json.loads((d / "profile.json").read_text("utf-8"))
        if meta.get("version") != PROFILE_VERSION:
            return None
        feats = {}
        for m in meta["features"]:
            if m["kind"] == "numeric":
                feats[m["name"]] = FeatureProfile(m["name"], "numeric", m["n"], m["nulls"],
                                                  np.load(d / f"{m['file']}.values.npy", mmap_mode="r"), m["std"],
                                                  np.load(d / f"{m['file']}.edges.npy"))
            else:
                feats[m["name"]] = FeatureProfile(m["name"], "categorical", m["n"], m["nulls"],
                                                  categories=m["categories"],
                                                  counts=np.array(m["counts"], dtype=np.int64))
        return Profile(meta["fingerprint"], meta["rows"], feats)
    except (OSError, ValueError, KeyError):
        return None


def cached_profile(load_reference, fingerprint: str, cache_dir: str | os.PathLike,
                   features: Sequence[str] | None = None) -> tuple[Profile, bool]:
    """The reference profile for a fingerprint: from the cache, else built from ``load_reference()`` and kept.
    Returns (profile, whether it came from the cache)."""
    d = profile_dir(cache_dir, fingerprint, features)
    p = load_profile(d)
    if p is not None:
        return p, True
    p = build_profile(load_reference(), features, fingerprint)
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        save_profile(p, d)
    except OSError:
        pass  # an unwritable cache only costs rebuilding next time
    return p, False


# --- statistics (each documented in docs/monitoring.md) ---------------------------------------------------
def wasserstein_sorted(a, b) -> float:
    """The 1-Wasserstein distance between two samples given sorted: the integral over u in [0, 1] of
    |Q_a(u) - Q_b(u)|, with Q the empirical quantile functions (step functions). Exact."""
    import numpy as np

    na, nb = len(a), len(b)
    if na == nb:  # the steps line up: the mean absolute difference of the order statistics
        return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))
    # breakpoints of both quantile functions on the common grid u = k / (na * nb), merged
    grid = np.concatenate([np.arange(na, dtype=np.int64) * nb, np.arange(nb, dtype=np.int64) * na,
                           np.array([na * nb], dtype=np.int64)])
    grid.sort(kind="stable")  # two sorted runs: a merge
    width = np.diff(grid)
    keep = width > 0
    lo, width = grid[:-1][keep], width[keep]
    return float(np.dot(width, np.abs(np.asarray(a)[lo // nb] - np.asarray(b)[lo // na]))) / (na * nb)


def psi(ref_share, cur_share) -> float:
    """Population stability index: sum over bins of (c - r) * ln(c / r), shares floored at PSI_FLOOR."""
    import numpy as np

    r = np.maximum(np.asarray(ref_share, dtype=float), PSI_FLOOR)
    c = np.maximum(np.asarray(cur_share, dtype=float), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def _bin_counts_sorted(sorted_values, edges):
    """Counts per quantile bin (-inf, e1], (e1, e2], ..., (ek, inf) of sorted values."""
    import numpy as np

    cuts = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate([[0], cuts, [len(sorted_values)]]))


def _shares(counts):
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    return counts / total if total else counts


def _aligned_categories(fp: FeatureProfile, cur_cats: list, cur_counts):
    """(labels, reference counts, current counts) over the union of categories (reference order first)."""
    import numpy as np

    index = {c: i for i, c in enumerate(fp.categories)}
    labels = list(fp.categories) + [c for c in cur_cats if c not in index]
    full = {c: i for i, c in enumerate(labels)}
    ref = np.zeros(len(labels), dtype=np.int64)
    ref[: len(fp.categories)] = fp.counts
    cur = np.zeros(len(labels), dtype=np.int64)
    for c, n in zip(cur_cats, cur_counts):
        cur[full[c]] = n
    return labels, ref, cur


def feature_drift(fp: FeatureProfile, s, method: str = "auto", threshold: float | None = None) -> dict:
    """Drift of one feature: the current values ``s`` (a Series) against its reference profile."""
    import numpy as np

    nn = s.dropna() if s.hasnans else s
    out = {"feature": fp.name, "kind": fp.kind, "n_reference": fp.n, "n_current": int(len(nn)),
           "nulls_current": int(len(s) - len(nn))}
    if fp.kind == "numeric":
        if len(nn) and not _is_numeric(nn):
            import pandas as pd

            nn = pd.to_numeric(nn, errors="coerce").dropna()
        cur = nn.to_numpy(dtype=np.float64, copy=True)
        cur.sort()  # in place: the window's one sort
        out["n_current"] = int(len(cur))
    else:
        cur_cats, cur_counts = _category_counts(nn)
    if out["n_current"] == 0 or fp.n == 0:
        return dict(out, method=method, statistic=None, threshold=threshold, drifted=False,
                    note="no values to compare")
    if method == "auto":
        small = out["n_current"] <= SMALL_SAMPLE
        method = ("ks" if small else "wasserstein") if fp.kind == "numeric" else ("chi2" if small else "jensenshannon")
    threshold = DEFAULT_THRESHOLD[method] if threshold is None else float(threshold)
    p_value = None
    if fp.kind == "numeric":
        ref = fp.values
        if method == "ks":
            from scipy.stats import ks_2samp

            r = ks_2samp(np.asarray(ref), cur)
            stat, p_value = float(r.statistic), float(r.pvalue)
        elif method == "wasserstein":
            w = wasserstein_sorted(ref, cur)
            stat = w / fp.std if fp.std > 0 else w
        else:
            rc, cc = _bin_counts_sorted(ref, fp.edges), _bin_counts_sorted(cur, fp.edges)
            stat, p_value = _binned(method, rc, cc)
        out["histogram"] = _numeric_hist(ref, cur)
    else:
        labels, rc, cc = _aligned_categories(fp, cur_cats, cur_counts)
        if method in ("ks", "wasserstein"):
            raise MlspecError(f"feature {fp.name} is categorical: method {method} needs numbers",
                              hint="use psi, jensenshannon or chi2 for it (or method: auto)")
        stat, p_value = _binned(method, rc, cc)
        out["histogram"] = _category_hist(labels, rc, cc)
    drifted = (p_value < threshold) if method in TESTS else (stat >= threshold)
    out.update(method=method, statistic=stat, threshold=threshold, drifted=bool(drifted))
    if p_value is not None:
        out["p_value"] = p_value
    return out


def _binned(method: str, rc, cc) -> tuple[float, float | None]:
    import numpy as np

    if method == "psi":
        return psi(_shares(rc), _shares(cc)), None
    if method == "jensenshannon":
        from scipy.spatial.distance import jensenshannon

        return float(jensenshannon(_shares(rc), _shares(cc), base=2)), None
    if method == "chi2":  # two-sample: a 2 x k contingency table, not the current against reference shares
        from scipy.stats import chi2_contingency

        table = np.vstack([rc, cc])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return 0.0, 1.0
        r = chi2_contingency(table, correction=False)
        return float(r.statistic), float(r.pvalue)
    raise MlspecError(f"unknown drift method '{method}'", hint=f"use one of {', '.join(METHODS)}")


def _numeric_hist(ref, cur) -> dict:
    import numpy as np

    lo = min(float(ref[int(0.005 * (len(ref) - 1))]), float(cur[int(0.005 * (len(cur) - 1))]))
    hi = max(float(ref[int(0.995 * (len(ref) - 1))]), float(cur[int(0.995 * (len(cur) - 1))]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    def shares(v):
        c = np.diff(np.searchsorted(v, edges, side="left"))
        c[-1] += int(np.searchsorted(v, hi, side="right") - np.searchsorted(v, hi, side="left"))
        return [round(float(x), 6) for x in c / len(v)]

    return {"edges": [float(e) for e in edges], "reference": shares(ref), "current": shares(cur)}


def _category_hist(labels, rc, cc) -> dict:
    rs, cs = _shares(rc), _shares(cc)
    order = sorted(range(len(labels)), key=lambda i: -(rs[i] + cs[i]))[:TOP_CATEGORIES]
    return {"categories": [labels[i] for i in order], "reference": [round(float(rs[i]), 6) for i in order],
            "current": [round(float(cs[i]), 6) for i in order]}


# --- the report ---------------------------------------------------------------------------------------------
def compare(profile: Profile, current, features: Sequence[str] | None = None, method: str | None = None,
            threshold: float | None = None, *, drift_share: float = DRIFT_SHARE, prediction: str = "_prediction",
            prediction_reference=None, labels=None) -> dict:
    """Drift of every feature of ``current`` (a DataFrame) against the reference profile.

    ``method``: auto (default: tests up to SMALL_SAMPLE current rows, distances above), psi, ks, wasserstein,
    jensenshannon or chi2, for every feature. ``threshold``: the statistic (p-value for tests) at which a
    feature drifts; default per method. ``prediction_reference``: a FeatureProfile the ``prediction``
    column is compared with (prediction drift). ``labels``: (DataFrame with the true values, key column,
    target column) for performance."""
    method = method or "auto"
    if method not in METHODS:
        raise MlspecError(f"unknown drift method '{method}'", hint=f"use one of {', '.join(METHODS)}")
    names = list(features) if features else list(profile.features)
    unknown = [n for n in names if n not in profile.features]
    if unknown:
        raise MlspecError(f"no reference statistics for {', '.join(unknown)}",
                          hint="the monitor's features must be columns of its reference data")
    missing = [n for n in names if n not in current.columns]
    if missing:
        raise MlspecError(f"the current data has no column {', '.join(missing)}",
                          hint="the request log (or --current file) must carry every monitored feature")
    rows = _each(lambda n: feature_drift(profile.features[n], current[n], method, threshold), names)
    compared = [r for r in rows if r.get("statistic") is not None]
    drifted = [r["feature"] for r in compared if r["drifted"]]
    share = len(drifted) / len(compared) if compared else 0.0
    report = {"reference": {"fingerprint": profile.fingerprint, "rows": profile.rows},
              "current": {"rows": int(len(current))}, "method": method,
              "features": rows, "drifted_features": drifted, "share_drifted": share,
              "drift_share": drift_share, "dataset_drift": bool(compared) and share >= drift_share}
    if prediction_reference is not None and prediction in current.columns:
        report["prediction"] = feature_drift(prediction_reference, current[prediction], method if method != "auto"
                                             else "auto", threshold)
    if labels is not None and prediction in current.columns:
        report["performance"] = performance(current, *labels, prediction=prediction)
    return report


def _each(fn, names: list) -> list:
    """fn over the features, in threads (sorting and counting release the GIL), results in order."""
    workers = min(len(names), os.cpu_count() or 1, 8)
    if workers < 2 or len(names) < 4:
        return [fn(n) for n in names]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, names))


def performance(current, labels, key: str, target: str, prediction: str = "_prediction") -> dict:
    """Accuracy (classes) or MAE and RMSE (numbers) of the logged predictions, joined on ``key`` with the
    labels that came in since."""
    import numpy as np
    import pandas as pd

    for col, where in ((key, "the current data"), (key, "the labels"), (target, "the labels")):
        frame = current if where == "the current data" else labels
        if col not in frame.columns:
            raise MlspecError(f"{where} have no column {col}", hint="fix the monitor's `labels` key or target")
    joined = current[[key, prediction]].merge(labels[[key, target]], on=key, how="inner")
    out = {"rows_labelled": int(len(joined)), "key": key, "target": target}
    if not len(joined):
        return dict(out, note="no logged prediction has a label yet")
    y, p = joined[target], joined[prediction]
    if pd.api.types.is_float_dtype(y) and not np.all(np.mod(y.dropna(), 1) == 0):
        err = p.astype(float) - y.astype(float)
        return dict(out, mae=float(np.mean(np.abs(err))), rmse=float(math.sqrt(float(np.mean(err ** 2)))))
    return dict(out, accuracy=float(np.mean(p.astype(str).to_numpy() == y.astype(str).to_numpy())))


def summary_rows(report: Mapping) -> list[list[str]]:
    """The summary table: feature, kind, method, statistic, threshold, drifted."""
    rows = []
    for r in report["features"] + ([dict(report["prediction"], feature=f"{report['prediction']['feature']} "
                                         "(prediction)")] if report.get("prediction") else []):
        stat = r.get("statistic")
        shown = "-" if stat is None else (f"p={r['p_value']:.3g}" if r.get("p_value") is not None and
                                          r["method"] in TESTS else f"{stat:.4f}")
        rows.append([r["feature"], r["kind"], r.get("method", "-"), shown,
                     "-" if r.get("threshold") is None else f"{r['threshold']:g}",
                     "DRIFT" if r.get("drifted") else "ok"])
    return rows
