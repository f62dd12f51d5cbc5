"""Data formats without glue (docs/steps.md#formats), through the CLI: declared formats with load_args and
save_args, tuple returns, a model stored with skops, a plugin format, `logging` in the step's log, and the
errors (unknown format at validate, a wrong tuple length, a value the declared format cannot save)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, Project
from test_docs import marked_block

STEPS_DOC = REPO / "docs" / "steps.md"


def _out(r) -> str:
    return f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"


def _get(p: Project, address: str, dest: Path, **kw) -> Path:
    r = p.run("artifacts", "get", address, str(dest), **kw)
    assert r.returncode == 0, _out(r)
    return dest


# --- the Kedro-like pipeline of docs/steps.md ------------------------------------------------------------
@pytest.fixture(scope="module")
def flights(tmp_path_factory) -> Project:
    import pandas as pd

    p = Project(tmp_path_factory.mktemp("flights") / "proj")
    p.write("mlspec.yaml", marked_block(STEPS_DOC, "formats-spec"))
    p.write("src/flights/__init__.py", "")
    p.write("src/flights/nodes.py", marked_block(STEPS_DOC, "formats-nodes"))
    shuttles = pd.DataFrame({"id": range(30), "company": [f"c{i % 5}" for i in range(30)],
                             "capacity": [2 + (i * 7) % 5 for i in range(30)]})
    (p.root / "data").mkdir()
    with pd.ExcelWriter(p.root / "data/shuttles.xlsx") as xl:  # the data sits on the second sheet
        pd.DataFrame({"note": ["exported from the fleet system"]}).to_excel(xl, sheet_name="notes", index=False)
        shuttles.to_excel(xl, sheet_name="shuttles", index=False)
    p.write("data/companies.csv", "company;rating;reliable\n" + "".join(
        f"c{i};{0.5 + i / 10};{int(i % 2 == 0)}\n" for i in range(5)))
    r = p.apply()
    assert r.returncode == 0, _out(r)
    return p


def test_kedro_like_pipeline_runs_without_glue(flights, tmp_path):
    outs = {a: rec["outputs"] for a, rec in flights.state()["resources"].items() if rec.get("kind") == "step"}
    assert {k: v["format"] for k, v in outs["step.preprocess"].items()} == {"table": "csv"}
    assert {k: v["format"] for k, v in outs["step.split"].items()} == {"train": "parquet", "test": "parquet"}
    assert outs["step.train"]["model"]["format"] == "skops"
    # the Excel sheet named by load_args was read and joined with the ';'-separated csv; save_args wrote '|'
    table = _get(flights, "step.preprocess.table", tmp_path / "table.csv").read_text().splitlines()
    assert table[0] == "id|company|capacity|rating|reliable" and len(table) == 31, table[:3]
    # the tuple's items are the declared outputs in order: train has the rows not divisible by 3
    import pandas as pd

    train = pd.read_parquet(_get(flights, "step.split.train", tmp_path / "train.parquet"))
    test = pd.read_parquet(_get(flights, "step.split.test", tmp_path / "test.parquet"))
    assert (len(train), len(test)) == (20, 10) and set(test["id"]) == set(range(0, 30, 3))
    metrics = flights.state()["resources"]["step.evaluate"]["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_skops_model_is_stored_without_pickle(flights, tmp_path):
    model = _get(flights, "step.train.model", tmp_path / "model.skops")
    with zipfile.ZipFile(model) as z:  # skops: a zip of a JSON schema and arrays, no pickle stream
        schema = json.loads(z.read("schema.json"))
    assert "LogisticRegression" in json.dumps(schema)
    import skops.io

    assert type(skops.io.load(model)).__name__ == "LogisticRegression"


def test_logging_records_are_in_the_step_log(flights):
    r = flights.run("logs", "step.preprocess")
    assert r.returncode == 0, _out(r)
    assert "INFO flights.nodes: preprocessed 30 shuttles" in r.stdout, r.stdout


def test_changed_save_args_rerun_the_step(flights):
    r = flights.run("plan", "--detailed-exitcode")
    assert r.returncode == 0, _out(r)
    r = flights.run("plan", "--detailed-exitcode", "steps.preprocess.outputs.table.save_args.sep=';'")
    assert r.returncode == 2, _out(r)
    assert "step.preprocess" in r.stdout and "io:" in r.stdout, r.stdout


# --- a plugin format --------------------------------------------------------------------------------------
PLUGIN_SPEC = """
project: vectors
steps:
  embed:
    run: vec.steps:embed
    outputs:
      vectors: {format: npy}
  total:
    run: vec.steps:total
    inputs: {vectors: step.embed.vectors}
    metrics: [total]
"""

PLUGIN_STEPS = """
import numpy as np


def embed():
    return np.arange(6, dtype="int64").reshape(2, 3)


def total(vectors):
    assert isinstance(vectors, np.ndarray) and vectors.shape == (2, 3), type(vectors)
    return {"total": int(vectors.sum())}
"""


def _plugin_site(root: Path, module: str) -> dict:
    site = root / "site"
    dist = site / "npyformat-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "npyformat.py").write_text(module)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: npyformat\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mlspec.formats]\nnpy = npyformat:FORMAT\n")
    return {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def vectors(tmp_path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", PLUGIN_SPEC)
    p.write("src/vec/__init__.py", "")
    p.write("src/vec/steps.py", PLUGIN_STEPS)
    return p


def test_plugin_format_from_the_docs_saves_and_loads(vectors, tmp_path):
    r = vectors.run("validate")
    assert r.returncode == 1 and "unknown format 'npy'" in r.stderr and "[unknown-format]" in r.stderr, _out(r)
    env = _plugin_site(tmp_path, marked_block(STEPS_DOC, "format-plugin"))
    r = vectors.run("validate", env=env)
    assert r.returncode == 0, _out(r)
    r = vectors.apply(env=env)
    assert r.returncode == 0, _out(r)
    state = vectors.state()["resources"]
    assert state["step.embed"]["outputs"]["vectors"]["format"] == "npy"
    assert state["step.total"]["metrics"] == {"total": 15.0}
    import numpy as np

    stored = np.load(_get(vectors, "step.embed.vectors", tmp_path / "v.npy", env=env), allow_pickle=False)
    assert stored.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_broken_plugin_format_fails_the_step_in_one_line(vectors, tmp_path):
    env = _plugin_site(tmp_path, "raise ImportError('No module named numpy_extras')\n")
    r = vectors.apply(env=env)
    assert r.returncode == 1, _out(r)
    line = next(ln for ln in r.stdout.splitlines() if "failed    step.embed" in ln)
    assert ("the format plugin 'npy' (npyformat:FORMAT) failed to load: ImportError: No module named numpy_extras; "
            "reinstall or uninstall the package that provides it") in line, line
    assert "Traceback" not in r.stdout + r.stderr


# --- declared input formats, cmd outputs, a step that configures logging itself -------------------------
MISC_SPEC = """
project: misc
steps:
  make:
    cmd: printf 'a,b\\n1,2\\n3,4\\n' > ${outputs.table}
    outputs: [table]
  sheet:
    cmd: printf 'x;y\\n5;6\\n' > ${outputs.rows}
    outputs:
      rows: {format: csv}
  use:
    run: misc.steps:use
    inputs:
      table: {from: step.make.table, format: csv}
      rows: {from: step.sheet.rows, load_args: {sep: ";"}}
    outputs:
      report: {format: json, save_args: {indent: 4}}
      lines: {format: jsonl}
"""

MISC_STEPS = """
import logging

import pandas as pd

logging.basicConfig(format="CUSTOM %(levelname)s %(message)s", level=logging.WARNING)
log = logging.getLogger("misc.use")


def use(table: pd.DataFrame, rows: pd.DataFrame):
    log.info("not shown: the module configured WARNING")
    log.warning("sums %s", int(table.values.sum()))
    report = {"table": int(table.values.sum()), "rows": int(rows.values.sum())}
    return report, [{"n": 1}, {"n": 2}]
"""


def test_declared_input_format_overrides_the_recorded_one_and_own_logging_config_is_kept(tmp_path):
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", MISC_SPEC)
    p.write("src/misc/__init__.py", "")
    p.write("src/misc/steps.py", MISC_STEPS)
    r = p.apply()
    assert r.returncode == 0, _out(r)
    outs = p.state()["resources"]
    assert outs["step.make"]["outputs"]["table"]["format"] == "bytes"  # a cmd output: format from its name
    assert outs["step.sheet"]["outputs"]["rows"]["format"] == "csv"  # declared by the cmd step
    report = _get(p, "step.use.report", tmp_path / "report.json").read_text()
    assert json.loads(report) == {"rows": 11, "table": 10} and '\n    "rows"' in report  # save_args indent 4
    assert _get(p, "step.use.lines", tmp_path / "lines.jsonl").read_text().splitlines() == ['{"n": 1}', '{"n": 2}']
    log = p.run("logs", "step.use").stdout
    assert "CUSTOM WARNING sums 10" in log and "not shown" not in log, log


# --- errors ------------------------------------------------------------------------------------------------
ERR_SPEC = """
project: errs
steps:
  split:
    run: errs.steps:split
    outputs: [train, test]
  report:
    run: errs.steps:report
    outputs:
      summary: {format: csv}
"""

ERR_STEPS = """
def split():
    return 1, 2, 3


def report():
    return {"summary": {"rows": 3}}
"""


def test_unknown_format_is_caught_at_validate_with_did_you_mean(tmp_path):
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", ERR_SPEC.replace("format: csv", "format: exel") + """\
datasets:
  raw: {uri: data/raw.bin, format: parqet}
""")
    r = p.run("validate")
    assert r.returncode == 1, _out(r)
    lines = [ln for ln in r.stderr.splitlines() if "[unknown-format]" in ln]
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("mlspec.yaml:10:") and "steps.report.outputs.summary.format: unknown format " \
        "'exel'; did you mean 'excel'? (known: parquet, csv, excel" in lines[0], lines
    assert "datasets.raw.format: unknown format 'parqet'; did you mean 'parquet'?" in lines[1], lines
    assert "Traceback" not in r.stderr


def test_wrong_tuple_length_and_unsavable_value_fail_in_one_line(tmp_path):
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", ERR_SPEC)
    p.write("src/errs/__init__.py", "")
    p.write("src/errs/steps.py", ERR_STEPS)
    r = p.apply()
    assert r.returncode == 1, _out(r)
    failed = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.strip().startswith("failed")}
    assert ("errs.steps:split() returned 3 values, but the step declares 2 outputs (train, test): return one "
            "value per output, in that order (or a dict)") in failed["step.split"], r.stdout
    assert ("output 'summary' is a dict, which format 'csv' cannot save (it saves pandas DataFrames): return one "
            "of those, or declare another format") in failed["step.report"], r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_save_args_on_a_cmd_step_are_refused_at_validate(tmp_path):
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", MISC_SPEC.replace("rows: {format: csv}", "rows: {format: csv, save_args: {sep: ';'}}"))
    r = p.run("validate")
    assert r.returncode == 1 and "[save-args-on-cmd]" in r.stderr, _out(r)
    assert "steps.sheet.outputs.rows.save_args: save_args apply to values a `run` function returns" in r.stderr


EXCEL_SPEC = """
project: sheets
steps:
  book:
    run: sheets.steps:book
    outputs:
      workbook: {format: excel}
  read:
    run: sheets.steps:read
    inputs:
      workbook: {from: step.book.workbook, load_args: {sheet_name: null}}
    metrics: [sheets, total]
"""

EXCEL_STEPS = """
import pandas as pd


def book():
    return {"workbook": {"a": pd.DataFrame({"x": [1, 2]}), "b": pd.DataFrame({"x": [3, 4]})}}


def read(workbook):
    return {"sheets": len(workbook), "total": int(sum(df["x"].sum() for df in workbook.values()))}
"""


def test_excel_workbook_of_sheets_round_trips_and_is_byte_stable(tmp_path):
    p = Project(tmp_path / "proj")
    p.write("mlspec.yaml", EXCEL_SPEC)
    p.write("src/sheets/__init__.py", "")
    p.write("src/sheets/steps.py", EXCEL_STEPS)
    r = p.apply()
    assert r.returncode == 0, _out(r)
    state = p.state()["resources"]
    assert state["step.read"]["metrics"] == {"sheets": 2.0, "total": 10.0}
    first = state["step.book"]["outputs"]["workbook"]["hash"]
    import time

    time.sleep(1.1)  # an xlsx normally records when it was written
    r = p.apply("--replace", "step.book")
    assert r.returncode == 0, _out(r)
    assert p.state()["resources"]["step.book"]["outputs"]["workbook"]["hash"] == first
    assert "step.read" not in p.ran(), "an identical workbook stops the ripple"
