"""examples/spaceflights, through the real CLI, the way a Kedro user would drive it: apply, change a
parameter, revert it (restored from the run-cache and put back in the project).

The port needs none of the glue the Kedro port needed before: the raw Excel and csv files are declared
formats with save_args/load_args, split_data's 4-tuple maps to declared outputs, and the nodes' `logging`
reaches `mlspec logs`. Every check reads what a user sees: apply's output, `mlspec plan` (text and JSON),
`mlspec runs show`, `mlspec metrics show`, `mlspec logs`, `mlspec plots show` and the files in the project.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd

from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "spaceflights"
LR, RF = "[model_type=linear_regression]", "[model_type=random_forest]"
UPSTREAM = {"step.generate", "step.preprocess_companies", "step.preprocess_shuttles",
            "step.create_model_input_table", "step.compare_passenger_capacity"}
# what a change to split_data's params re-runs: the data_science pipeline and the report on its model
DOWNSTREAM = {"step.split_data", f"step.train_model{LR}", f"step.train_model{RF}", f"step.evaluate_model{LR}",
              f"step.evaluate_model{RF}", "step.select_model", "step.price_predictions"}
# where Kedro's data/ folder keeps them
PROJECT_FILES = ["data/01_raw/companies.csv", "data/01_raw/reviews.csv", "data/01_raw/shuttles.xlsx",
                 "data/02_intermediate/preprocessed_companies.pq", "data/02_intermediate/preprocessed_shuttles.pq",
                 "data/03_primary/model_input_table.pq", "data/06_models/regressor.skops",
                 "data/08_reporting/model_selection.json", "data/08_reporting/price_predictions.csv",
                 "data/08_reporting/shuttle_passenger_capacity.csv"]


def _cli(root: Path, *args):
    return run_cli("-C", str(root), *args)


def _ok(root: Path, *args) -> str:
    r = _cli(root, *args)
    assert r.returncode == 0, f"mlspec {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _outcomes(root: Path) -> dict[str, str]:
    """step address -> its outcome in the latest run, as `mlspec runs show latest` reports it."""
    run = json.loads(_ok(root, "runs", "show", "latest", "--format", "json"))
    return {a: s["status"] for a, s in run["steps"].items()}


def _plan(root: Path) -> dict[str, dict]:
    plan = json.loads(_ok(root, "plan", "--format", "json"))
    return {c["address"]: c for c in plan["resource_changes"]}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {rel: (root / rel).read_bytes() for rel in PROJECT_FILES}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def test_spaceflights_apply_change_revert(tmp_path):
    root = tmp_path / "spaceflights"
    # the example as committed (not what an apply run inside the repo may have left there)
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".mlspec", "__pycache__", "plots.html", "data"))

    # --- kedro run: every node runs, data/ fills up as Kedro's does ----------------------------------
    out = _ok(root, "apply", "--auto-approve")
    assert "Apply complete: 12 ran, 0 restored from cache, 0 failed, 0 skipped, 0 up to date" in out, out
    assert _outcomes(root) == dict.fromkeys(UPSTREAM | DOWNSTREAM, "ran")
    missing = [rel for rel in PROJECT_FILES if not (root / rel).is_file()]
    assert not missing, f"not in the project after apply: {missing}"
    first = _snapshot(root)

    # the raw Excel file was written by a declared format with save_args: one sheet, named by them
    with zipfile.ZipFile(root / "data/01_raw/shuttles.xlsx") as z:
        assert '<sheet name="shuttles"' in z.read("xl/workbook.xml").decode()
    raw = pd.read_excel(root / "data/01_raw/shuttles.xlsx", sheet_name="shuttles")
    assert raw["price"].str.fullmatch(r"\$[\d,]+\.\d").all() and set(raw["d_check_complete"]) == {"t", "f"}
    # ... and the nodes parsed what Kedro's nodes parse, into typed parquet tables
    shuttles = pd.read_parquet(root / "data/02_intermediate/preprocessed_shuttles.pq")
    assert shuttles["price"].dtype == "float64" and shuttles["d_check_complete"].dtype == "bool"
    companies = pd.read_parquet(root / "data/02_intermediate/preprocessed_companies.pq")
    assert companies["company_rating"].dtype == "float64" and companies["company_rating"].dropna().between(0.5, 1).all()
    assert companies["iata_approved"].dtype == "bool"
    table = pd.read_parquet(root / "data/03_primary/model_input_table.pq")
    assert len(table) > 1000 and not table.isna().any().any()
    assert len(table) < len(raw), "rows with missing values should have been dropped"

    metrics = {(m["address"], m["metric"]): m["value"]
               for m in json.loads(_ok(root, "metrics", "show", "--format", "json"))}
    assert set(metrics) == {(f"step.evaluate_model{inst}", name) for inst in (LR, RF)
                            for name in ("r2_score", "mae", "max_error")}, metrics
    r2 = {inst: metrics[(f"step.evaluate_model{inst}", "r2_score")] for inst in (LR, RF)}
    assert min(r2.values()) > 0.7, f"the synthetic price should be learnable: {r2}"

    # the node's logging.info line, in its log, with no logging configured by the node
    log = _ok(root, "logs", f"step.evaluate_model{LR}")
    assert f"Model LinearRegression has a coefficient R^2 of {r2[LR]:.3f} on test data." in log, log
    log = _ok(root, "logs", f"step.evaluate_model{RF}")
    assert f"Model RandomForestRegressor has a coefficient R^2 of {r2[RF]:.3f} on test data." in log, log

    # select_model kept the better candidate, in the project, pickle-free
    selection = json.loads((root / "data/08_reporting/model_selection.json").read_text())
    best = max(r2, key=r2.get)
    assert f"[model_type={selection['selected']}]" == best, (selection, r2)
    with zipfile.ZipFile(io.BytesIO(first["data/06_models/regressor.skops"])) as z:   # skops: a zip of JSON
        schema = json.loads(z.read("schema.json"))
    assert schema["__class__"] == {LR: "LinearRegression", RF: "RandomForestRegressor"}[best], schema

    plots = json.loads(_ok(root, "plots", "show", "--format", "json"))["plots"]
    assert {p["output"]: p["type"] for p in plots} == {"passenger_capacity": "bar", "predictions": "scatter"}
    assert "/data/06_models/regressor.skops\n" in (root / ".gitignore").read_text()
    assert "No changes." in _ok(root, "plan")

    # --- a parameter changes: exactly the data_science steps and what reads their outputs re-run ------
    _edit(root / "mlspec.yaml", "test_size: 0.2\n", "test_size: 0.3\n")
    text = _ok(root, "plan")
    assert "run\n        params.test_size: 0.2 -> 0.3\n" in text, text
    plan = _plan(root)
    assert [(r["code"], r["before"], r["after"]) for r in plan["step.split_data"]["reasons"]] == [
        ("param_changed", 0.2, 0.3)]
    assert {a: c["verdict"] for a, c in plan.items()} == {
        **dict.fromkeys(UPSTREAM, "up-to-date"), **dict.fromkeys(DOWNSTREAM, "known after apply"),
        "step.split_data": "run"}

    out = _ok(root, "apply", "--auto-approve")
    assert "Apply complete: 7 ran, 0 restored from cache, 0 failed, 0 skipped, 5 up to date" in out, out
    assert _outcomes(root) == {**dict.fromkeys(UPSTREAM, "up-to-date"), **dict.fromkeys(DOWNSTREAM, "ran")}
    changed = _snapshot(root)
    assert changed["data/08_reporting/model_selection.json"] != first["data/08_reporting/model_selection.json"]
    assert changed["data/08_reporting/price_predictions.csv"] != first["data/08_reporting/price_predictions.csv"]
    assert "Metrics of state serial 2 against state serial 1" in _ok(root, "metrics", "diff")

    # --- revert: restored from the run-cache, nothing runs, data/ holds the first results again --------
    _edit(root / "mlspec.yaml", "test_size: 0.3\n", "test_size: 0.2\n")
    plan = _plan(root)
    assert {a: c["verdict"] for a, c in plan.items()} == {
        **dict.fromkeys(UPSTREAM, "up-to-date"), **dict.fromkeys(DOWNSTREAM, "restore")}
    out = _ok(root, "apply", "--auto-approve")
    assert "Apply complete: 0 ran, 7 restored from cache, 0 failed, 0 skipped, 5 up to date" in out, out
    for address in DOWNSTREAM:
        assert f"  restored  {address}  from the run-cache" in out, out
    assert _outcomes(root) == {**dict.fromkeys(UPSTREAM, "up-to-date"), **dict.fromkeys(DOWNSTREAM, "restored")}
    # a skops file differs on every save, but a restore puts back the recorded bytes
    reverted = _snapshot(root)
    differ = [rel for rel in PROJECT_FILES if reverted[rel] != first[rel]]
    assert not differ, f"not byte-identical to the first apply after the revert: {differ}"
    assert {(m["address"], m["metric"]): m["value"]
            for m in json.loads(_ok(root, "metrics", "show", "--format", "json"))} == metrics
    r = _cli(root, "plan", "--detailed-exitcode")
    assert r.returncode == 0 and "No changes. The lifecycle matches the spec." in r.stdout, r.stdout + r.stderr
