"""The drift engine (mlspec.drift) against reference implementations on fixed data, its sample-size-aware
defaults, the reference profile cache, `mlspec monitor` and its HTML report in a real headless Chromium."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, chisquare, ks_2samp, wasserstein_distance

from conftest import Project
from mlspec import drift

TOL = 1e-9


def _one(ref: pd.DataFrame, cur: pd.DataFrame, method: str, feature: str = "x") -> dict:
    return drift.compare(drift.build_profile(ref, [feature]), cur, [feature], method)["features"][0]


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(42)
    ref = pd.DataFrame({"x": np.round(rng.normal(0, 1, 3000), 2),  # rounded: ties
                        "c": rng.choice(["a", "b", "c", "d"], 3000, p=[0.4, 0.3, 0.2, 0.1])})
    cur = pd.DataFrame({"x": np.round(rng.normal(0.3, 1.2, 1777), 2),
                        "c": rng.choice(["a", "b", "c", "d", "e"], 1777, p=[0.3, 0.3, 0.2, 0.1, 0.1])})
    return ref, cur


def test_ks_matches_scipy(samples):
    ref, cur = samples
    r = _one(ref, cur, "ks")
    want = ks_2samp(ref["x"], cur["x"])
    assert abs(r["statistic"] - want.statistic) < TOL and abs(r["p_value"] - want.pvalue) < TOL
    assert r["drifted"] is True


@pytest.mark.parametrize("n_cur", [1777, 3000, 7])
def test_normed_wasserstein_matches_scipy_over_the_reference_std(samples, n_cur):
    ref, cur = samples
    cur = cur.iloc[:n_cur] if n_cur != 3000 else pd.DataFrame({"x": np.round(
        np.random.default_rng(1).normal(0.1, 1, 3000), 2)})  # equal sizes take the order-statistics path
    r = _one(ref, cur, "wasserstein")
    want = wasserstein_distance(ref["x"], cur["x"]) / np.std(ref["x"].to_numpy())  # population std (ddof=0)
    assert abs(r["statistic"] - want) < TOL


def test_jensen_shannon_matches_scipy(samples):
    ref, cur = samples
    r = _one(ref, cur, "jensenshannon", "c")
    cats = ["a", "b", "c", "d", "e"]
    p = np.array([(ref["c"] == k).mean() for k in cats])
    q = np.array([(cur["c"] == k).mean() for k in cats])
    assert abs(r["statistic"] - jensenshannon(p, q, base=2)) < TOL
    # numeric: on the reference's decile bins
    x = ref["x"].to_numpy()
    edges = np.unique(np.quantile(x, np.arange(1, 10) / 10))
    bins = lambda v: np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1) / len(v)  # noqa: E731
    r = _one(ref, cur, "jensenshannon")
    assert abs(r["statistic"] - jensenshannon(bins(x), bins(cur["x"].to_numpy()), base=2)) < TOL


def test_chi2_is_the_two_sample_test_of_scipy(samples):
    ref, cur = samples
    r = _one(ref, cur, "chi2", "c")
    cats = ["a", "b", "c", "d", "e"]
    table = [[(ref["c"] == k).sum() for k in cats], [(cur["c"] == k).sum() for k in cats]]
    want = chi2_contingency(table, correction=False)
    assert abs(r["statistic"] - want.statistic) < TOL * want.statistic and abs(r["p_value"] - want.pvalue) < TOL


def test_psi_worked_by_hand():
    # reference 0..9 (deciles at 0.9, 1.8, ... 8.1: one value per bin), current: 5 values in the first bin,
    # 5 in the last; bins 2..9 empty
    ref = pd.DataFrame({"x": np.arange(10, dtype=float)})
    cur = pd.DataFrame({"x": [0.0] * 5 + [9.0] * 5})
    r = _one(ref, cur, "psi")
    # first and last bin: (0.5 - 0.1) * ln(0.5 / 0.1) each; 8 empty bins floored at 1e-4:
    # (1e-4 - 0.1) * ln(1e-4 / 0.1) each
    want = 2 * (0.4 * math.log(5)) + 8 * ((1e-4 - 0.1) * math.log(1e-4 / 0.1))
    assert abs(r["statistic"] - want) < TOL
    assert r["drifted"] is True and r["threshold"] == 0.2
    # categories: reference a 50 %, b 50 %; current a 80 %, b 10 %, new c 10 %
    ref = pd.DataFrame({"x": ["a"] * 5 + ["b"] * 5})
    cur = pd.DataFrame({"x": ["a"] * 8 + ["b", "c"]})
    want = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert abs(_one(ref, cur, "psi")["statistic"] - want) < TOL


def test_two_sample_chi2_does_not_over_reject_where_a_one_sample_test_does():
    """Unshifted categories, a small reference: testing the window against the reference's shares as if
    they were exact (one-sample) rejects far more often than the 5 % the level promises."""
    rng = np.random.default_rng(7)
    p = [0.5, 0.3, 0.15, 0.05]
    ours = one_sample = 0
    trials = 200
    for _ in range(trials):
        ref = pd.DataFrame({"x": rng.choice(list("abcd"), 400, p=p)})
        cur = pd.DataFrame({"x": rng.choice(list("abcd"), 5000, p=p)})
        ours += _one(ref, cur, "chi2")["drifted"]
        shares = ref["x"].value_counts(normalize=True).reindex(list("abcd"), fill_value=1e-9).to_numpy()
        counts = cur["x"].value_counts().reindex(list("abcd"), fill_value=0).to_numpy()
        one_sample += chisquare(counts, shares / shares.sum() * counts.sum()).pvalue < 0.05
    assert ours / trials <= 0.1, ours
    assert one_sample / trials >= 0.3, one_sample


def test_large_samples_use_distances_not_p_values():
    rng = np.random.default_rng(3)
    n = 200_000
    ref = pd.DataFrame({"x": rng.normal(0, 1, n), "c": rng.choice(list("abc"), n, p=[0.5, 0.3, 0.2])})
    cur = pd.DataFrame({"x": rng.normal(0.02, 1, n),  # a 0.02-sd shift: real, but nothing to act on
                        "c": rng.choice(list("abc"), n, p=[0.4, 0.4, 0.2])})  # 10 % of the mass moved
    prof = drift.build_profile(ref)
    assert drift.compare(prof, cur, ["x"], "ks")["features"][0]["p_value"] < 1e-4  # a test flags it
    rep = drift.compare(prof, cur)
    x, c = rep["features"]
    assert (x["method"], x["drifted"]) == ("wasserstein", False) and 0.01 < x["statistic"] < 0.03
    assert (c["method"], c["drifted"]) == ("jensenshannon", True) and 0.05 < c["statistic"] < 0.1  # 0.1 misses it
    assert rep["drifted_features"] == ["c"] and rep["share_drifted"] == 0.5 and rep["dataset_drift"] is True
    small = drift.compare(prof, cur.iloc[:800])
    assert [f["method"] for f in small["features"]] == ["ks", "chi2"]  # up to 1,000 rows: tests


def test_reference_profile_is_cached_by_fingerprint(tmp_path):
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(list("ab"), 5000)})
    cur = pd.DataFrame({"x": rng.normal(0.5, 1, 3000), "c": rng.choice(list("ab"), 3000)})
    loads = []

    def load():
        loads.append(1)
        return ref

    p1, hit1 = drift.cached_profile(load, "fp1", tmp_path)
    p2, hit2 = drift.cached_profile(load, "fp1", tmp_path)
    assert (hit1, hit2, len(loads)) == (False, True, 1)
    assert isinstance(p2.features["x"].values, np.memmap)
    assert drift.compare(p1, cur) == drift.compare(p2, cur)
    drift.cached_profile(load, "fp2", tmp_path)  # new reference content: profiled again
    assert len(loads) == 2


def test_prediction_drift_and_performance():
    rng = np.random.default_rng(9)
    ref = pd.DataFrame({"x": rng.normal(size=4000), "y": rng.choice(["0", "1"], 4000, p=[0.8, 0.2])})
    cur = pd.DataFrame({"id": np.arange(3000), "x": rng.normal(size=3000),
                        "_prediction": rng.choice(["0", "1"], 3000, p=[0.5, 0.5])})
    labels = pd.DataFrame({"id": np.arange(0, 3000, 2), "y": cur["_prediction"].iloc[::2].to_numpy()})
    labels.loc[:99, "y"] = np.where(labels.loc[:99, "y"] == "1", "0", "1")  # 100 of 1500 wrong
    prof = drift.build_profile(ref)
    rep = drift.compare(prof, cur, ["x"], prediction_reference=prof.features["y"], labels=(labels, "id", "y"))
    assert rep["prediction"]["drifted"] is True and rep["prediction"]["method"] == "jensenshannon"
    assert rep["performance"]["rows_labelled"] == 1500
    assert abs(rep["performance"]["accuracy"] - 1400 / 1500) < TOL


# --- mlspec monitor ---------------------------------------------------------------------------------------
MONITOR_SPEC = """
project: shop
datasets:
  reference: {uri: data/reference.csv}
steps:
  train: {run: shop.steps:train, inputs: {data: dataset.reference}, outputs: [model]}
models:
  clf: {from: step.train.model, promote: {alias: production}}
deployments:
  api: {model: clf@production}
monitors:
  shop-drift: {deployment: api, reference: dataset.reference, target: churned, window: 2000}
  age-psi: {deployment: api, reference: dataset.reference, features: [age], method: psi, threshold: 0.2}
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    rng = np.random.default_rng(11)
    p = Project(tmp_path_factory.mktemp("shop") / "proj")
    p.write("mlspec.yaml", MONITOR_SPEC)
    p.write("src/shop/__init__.py", "")
    p.write("src/shop/steps.py", "def train(data):\n    return {'model': {'rows': len(data)}}\n")
    (p.root / "data").mkdir()
    n = 6000
    pd.DataFrame({"age": rng.normal(40, 10, n).round(1), "spend": rng.gamma(2, 30, n).round(2),
                  "plan": rng.choice(["basic", "pro", "team"], n, p=[0.6, 0.3, 0.1]),
                  "churned": rng.choice([0, 1], n, p=[0.8, 0.2])}).to_csv(p.root / "data/reference.csv", index=False)
    m = 5000
    pd.DataFrame({"age": rng.normal(48, 10, m).round(1), "spend": rng.gamma(2, 30, m).round(2),
                  "plan": rng.choice(["basic", "pro", "team"], m, p=[0.6, 0.3, 0.1]),
                  "_prediction": rng.choice([0, 1], m, p=[0.8, 0.2])}).to_csv(p.root / "shifted.csv", index=False)
    pd.DataFrame({"age": rng.normal(40, 10, m).round(1), "spend": rng.gamma(2, 30, m).round(2),
                  "plan": rng.choice(["basic", "pro", "team"], m, p=[0.6, 0.3, 0.1]),
                  "_prediction": rng.choice([0, 1], m, p=[0.8, 0.2])}).to_csv(p.root / "same.csv", index=False)
    return p


def test_monitor_prints_the_table_and_writes_json_and_html(shop):
    r = shop.run("monitor", "shop-drift", "--current", "shifted.csv")
    assert r.returncode == 0, r.stdout + r.stderr  # one feature of three: below the data-drift share
    out = r.stdout
    assert "Monitor shop-drift: dataset.reference (6000 rows) vs shifted.csv (2000 rows)" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith("  ") and len(ln.split()) == 6}
    assert lines["age"][1:3] == ["numeric", "wasserstein"] and lines["age"][5] == "DRIFT"
    assert lines["spend"][5] == "ok" and lines["plan"][5] == "ok"
    assert "DATA DRIFT" not in out and "no data drift: 1 of 3 features drifted (33%" in out
    report = json.loads((shop.root / ".mlspec/reports/monitors/shop-drift.json").read_text())
    assert report["drifted_features"] == ["age"] and report["current"]["rows"] == 2000
    assert report["prediction"]["feature"] == "_prediction" and report["prediction"]["drifted"] is False
    assert report["profile_cached"] is False
    r = shop.run("monitor", "shop-drift", "--current", "same.csv", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    (rep,) = json.loads(r.stdout)
    assert rep["drifted_features"] == [] and rep["profile_cached"] is True


def test_monitor_with_an_explicit_method(shop):
    r = shop.run("monitor", "age-psi", "--current", "shifted.csv")
    assert r.returncode == 2, r.stdout + r.stderr  # data drift (1 of 1 feature): exit 2, like plan's changes
    assert "DATA DRIFT: 1 of 1 features drifted (100%" in r.stdout
    row = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("  age ")][0]
    assert row[:3] == ["age", "numeric", "psi"] and row[4:] == ["0.2", "DRIFT"] and float(row[3]) > 0.2
    rep = json.loads((shop.root / ".mlspec/reports/monitors/age-psi.json").read_text())
    assert [f["feature"] for f in rep["features"]] == ["age"] and rep["features"][0]["method"] == "psi"
    assert rep["features"][0]["drifted"] is True and rep["dataset_drift"] is True


def test_monitor_errors_are_one_line(shop):
    r = shop.run("monitor", "nope", "--current", "same.csv")
    assert r.returncode == 1 and "no monitor 'nope' in the spec" in r.stderr and "Traceback" not in r.stderr
    r = shop.run("monitor", "shop-drift", "--current", "missing.csv")
    assert r.returncode == 1 and "cannot read missing.csv" in r.stderr and "Traceback" not in r.stderr


def test_html_report_renders_in_chromium(shop, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by .ci/run (apt-get install -y chromium)"
    from playwright.sync_api import sync_playwright

    r = shop.run("monitor", "shop-drift", "--current", "shifted.csv", "--reports", str(tmp_path))
    assert r.returncode == 0, r.stderr
    html = tmp_path / "shop-drift.html"
    text = html.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    errors, requests = [], []
    with sync_playwright() as pw:
        profile = tmp_path / "browser-home"  # Chromium keeps its settings under HOME: not the user's
        env = {**os.environ, "HOME": str(profile), "XDG_CONFIG_HOME": str(profile / ".config"),
               "XDG_CACHE_HOME": str(profile / ".cache")}
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"], env=env)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(html.as_uri())
            page.wait_for_load_state("load")
            assert page.title() == "Drift report: shop-drift"
            charts = page.locator("svg.histogram")
            assert charts.count() == 4  # age, spend, plan and the prediction
            assert sorted(charts.nth(i).get_attribute("data-feature") for i in range(4)) == \
                ["_prediction", "age", "plan", "spend"]
            box = charts.first.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100  # drawn, not collapsed
            assert page.locator("svg.histogram[data-feature=age] rect").count() == 60  # 30 bins x 2 series
            assert page.locator("#summary tbody tr").count() == 4
            assert page.locator("#summary tr.drift").count() == 1
            assert "1 of 3 features drifted" in page.locator("#verdict").inner_text()
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith("file://") or u.startswith("data:") for u in requests), requests
