"""Data contracts (docs/spec.md#contract), through the CLI: many kinds of bad data, each with a precise
summarised report, the consuming step not started; step outputs with contracts; the cache; data check and
data infer."""

from __future__ import annotations

import json

import pytest

from conftest import Project

# name -> (contract, file name, file content (str, or bytes), a line the report must hold)
CASES = {
    "dtype": ({"columns": {"age": {"dtype": "int64"}}}, "x.csv", "id,age\n1,30\n2,abc\n",
              "column age: dtype int64: 1 row fails (found str: not int64 values), e.g. line 3: 'abc'"),
    "nulls": ({"columns": {"id": {"dtype": "int64", "nullable": False}}}, "x.csv", "id,age\n1,30\n,40\n",
              "column id: not null: 1 row fails, e.g. line 3: null"),
    "below": ({"columns": {"age": {"min": 18}}}, "x.csv", "id,age\n1,7\n2,30\n",
              "column age: greater_than_or_equal_to(18): 1 row fails, e.g. line 2: 7"),
    "above": ({"columns": {"age": {"min": 18, "max": 100}}}, "x.csv", "id,age\n1,70\n2,130\n3,150\n",
              "column age: in_range(18, 100): 2 rows fail, e.g. line 3: 130, line 4: 150"),
    "category": ({"columns": {"plan": {"values": ["basic", "pro"]}}}, "x.csv", "id,plan\n1,basic\n2,gold\n",
                 "column plan: isin(['basic', 'pro']): 1 row fails, e.g. line 3: 'gold'"),
    "dupkey": ({"columns": {"id": {"unique": True}}}, "x.csv", "id,age\n1,30\n1,40\n2,50\n",
               "column id: unique: 2 rows fail (duplicate values), e.g. line 2: 1, line 3: 1"),
    "fewrows": ({"rows": {"min": 5}}, "x.csv", "id\n1\n2\n", "rows >= 5: found 2"),
    "manyrows": ({"rows": {"max": 1}}, "x.csv", "id\n1\n2\n", "rows <= 1: found 2"),
    "missing": ({"columns": {"plan": {"dtype": "string"}}}, "x.csv", "id,age\n1,30\n",
                "column plan: missing column: not in the data, which has age, id"),
    "strict": ({"strict": True, "columns": {"id": {}}}, "x.csv", "id,extra\n1,2\n",
               "column extra: unexpected column: not in the contract, which is strict"),
    "empty": ({"columns": {"id": {}}}, "x.csv", "", "empty file: 0 bytes, not even a header line"),
    "blank": ({"columns": {"id": {}}}, "x.csv", "\n\n", "empty file: no columns (the file is blank)"),
    "malformed": ({"columns": {"id": {}}}, "x.csv", "id,age\n1,30\n2,40,99\n",
                  "malformed csv: Expected 2 fields in line 3, saw 3"),
    "encoding": ({"columns": {"id": {}}}, "x.csv", "id,name\n1,caf\xe9\n".encode("latin-1"),
                 "encoding: not valid utf-8: byte 0xe9 at line 2, column 6 (save the file as UTF-8)"),
    "regex": ({"columns": {"code": {"regex": "^[A-Z]{2}-[0-9]{3}$"}}}, "x.csv", "code\nAB-123\nab-1\n",
              "column code: str_matches('^[A-Z]{2}-[0-9]{3}$'): 1 row fails, e.g. line 3: 'ab-1'"),
    "length": ({"columns": {"code": {"max_length": 3}}}, "x.csv", "code\nabc\nabcdef\n",
               "column code: str_length(None, 3): 1 row fails, e.g. line 3: 'abcdef'"),
    "crosscol": ({"checks": ["end >= start"]}, "x.csv", "start,end\n1,5\n5,1\n",
                 "check 'end >= start': 1 row fails, e.g. line 3: {start=5, end=1}"),
    "compound": ({"unique": ["a", "b"]}, "x.csv", "a,b\n1,x\n1,y\n1,x\n",
                 "unique (a, b): 2 rows fail (duplicate keys), e.g. line 2: {a=1, b='x'}, line 4: {a=1, b='x'}"),
    "parquet": ({"columns": {"id": {}}}, "x.parquet", b"PAR1 this is not parquet",
                "readable: cannot be read as parquet: "),
}


def _spec(cases: dict) -> dict:
    datasets, steps = {}, {}
    for name, (contract, fname, _content, _line) in cases.items():
        datasets[name] = {"uri": f"data/{name}/{fname}", "contract": contract}
        steps[f"use_{name}"] = {"run": "demo.steps:use", "inputs": {"data": f"dataset.{name}"}, "outputs": ["n"]}
    datasets["good"] = {"uri": "data/good.csv", "contract": {"columns": {"id": {"dtype": "int64", "unique": True}},
                                                             "rows": {"min": 2}, "strict": True}}
    steps["use_good"] = {"run": "demo.steps:use", "inputs": {"data": "dataset.good"}, "outputs": ["n"]}
    return {"project": "contracts", "datasets": datasets, "steps": steps}


STEPS = '''
import pandas as pd


def use(data: pd.DataFrame):
    return {"n": {"rows": len(data)}}


def make(rows: int = 4):
    return {"table": pd.DataFrame({"id": list(range(rows)), "score": [0.5, 1.5, 0.2, 7.0][:rows]})}


def after(table: pd.DataFrame):
    return {"n": {"rows": len(table)}}
'''


def _project(root, cases=CASES) -> Project:
    import yaml

    p = Project(root)
    p.write("mlspec.yaml", yaml.safe_dump(_spec(cases), sort_keys=False))
    p.write("src/demo/__init__.py", "")
    p.write("src/demo/steps.py", STEPS)
    p.write("data/good.csv", "id\n1\n2\n3\n")
    for name, (_c, fname, content, _line) in cases.items():
        f = p.root / "data" / name / fname
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    p = _project(tmp_path_factory.mktemp("contracts") / "proj")
    r = p.apply()
    return p, r


def test_every_kind_of_bad_data_fails_its_dataset_with_a_precise_report(bad):
    p, r = bad
    assert r.returncode == 1, r.stdout + r.stderr
    assert len(CASES) >= 15
    for name, (_c, fname, _content, line) in CASES.items():
        head = f"failed    dataset.{name}  after"
        assert head in r.stdout, (name, r.stdout)
        block = r.stdout.split(head, 1)[1].split("\n  failed", 1)[0].split("\n  skipped", 1)[0]
        assert f"dataset.{name} violates its contract (data/{name}/{fname}" in block, (name, block)
        assert line in block, (name, line, block)


def test_the_consuming_step_never_starts(bad):
    p, r = bad
    run = p.last_run()
    for name in CASES:
        assert run["steps"][f"dataset.{name}"]["status"] == "failed"
        assert run["steps"][f"step.use_{name}"]["status"] == "skipped", name
        assert f"start     step.use_{name}\n" not in r.stdout
        assert f"dataset.{name}" not in p.state()["resources"]  # not recorded: the next apply checks it again
    # the good dataset passed and its consumer ran; the record keeps the contract it was checked against
    assert run["steps"]["step.use_good"]["status"] == "ran"
    assert p.state()["resources"]["dataset.good"]["contract"]


def test_a_summarised_report_not_one_line_per_cell(tmp_path):
    """1 % bad rows of 20,000: one line with the count and three examples, not 200 lines."""
    p = _project(tmp_path / "proj", {})
    rows = "".join(f"{i},{200 if i % 100 == 7 else 30}\n" for i in range(20000))
    p.write("data/big.csv", "id,age\n" + rows)
    spec = _spec({})
    spec["datasets"]["big"] = {"uri": "data/big.csv", "contract": {"columns": {"age": {"max": 120}}}}
    spec["steps"]["use_big"] = {"run": "demo.steps:use", "inputs": {"data": "dataset.big"}, "outputs": ["n"]}
    import yaml

    p.write("mlspec.yaml", yaml.safe_dump(spec))
    r = p.run("data", "check", "dataset.big")
    assert r.returncode == 1
    assert "column age: less_than_or_equal_to(120): 200 rows fail, e.g. line 9: 200, line 109: 200, line 209: 200" \
        in r.stdout, r.stdout
    assert len(r.stdout.splitlines()) == 2, r.stdout
    assert "1 of 1 contract violated" in r.stderr


def test_data_check_reports_every_contract_and_json(bad):
    p, _r = bad
    r = p.run("data", "check", "--format", "json")
    assert r.returncode == 1
    reports = {x["source"]: x for x in json.loads(r.stdout)["reports"]}
    assert reports["dataset.good"]["ok"] is True
    assert not reports["dataset.dupkey"]["ok"]
    v = reports["dataset.dupkey"]["violations"][0]
    assert (v["column"], v["check"], v["count"]) == ("id", "unique", 2)
    assert v["examples"] == [{"row": 2, "value": 1}, {"row": 3, "value": 1}]
    r = p.run("data", "check", "dataset.good")
    assert r.returncode == 0 and "dataset.good" in r.stdout and "All 1 contract hold." in r.stdout
    r = p.run("data", "check", "dataset.nope")
    assert r.returncode == 1 and "no dataset or step output dataset.nope" in r.stderr


def test_fixed_data_passes_and_an_unchanged_plan_checks_nothing(tmp_path):
    cases = {k: CASES[k] for k in ("dupkey",)}
    p = _project(tmp_path / "proj", cases)
    assert p.apply().returncode == 1
    (p.root / "data/dupkey/x.csv").write_text("id,age\n1,30\n2,40\n3,50\n")
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    cache = sorted((p.root / ".mlspec/cache/contracts").glob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in cache]
    r = p.run("plan")
    assert "No changes" in r.stdout, r.stdout
    r = p.apply()
    assert r.returncode == 0 and "No changes" in r.stdout
    assert [f.stat().st_mtime_ns for f in sorted((p.root / ".mlspec/cache/contracts").glob("*.json"))] == stamps
    r = p.run("data", "check", "dataset.dupkey", "--format", "json")
    assert json.loads(r.stdout)["reports"][0]["cached"] is True


def test_a_stricter_contract_rechecks_unchanged_data(tmp_path):
    import yaml

    p = _project(tmp_path / "proj", {})
    assert p.apply().returncode == 0
    spec = yaml.safe_load((p.root / "mlspec.yaml").read_text())
    spec["datasets"]["good"]["contract"]["rows"] = {"min": 10}
    p.write("mlspec.yaml", yaml.safe_dump(spec))
    r = p.run("plan")
    assert "dataset.good" in r.stdout and "contract" in r.stdout, r.stdout
    r = p.apply()
    assert r.returncode == 1
    assert "dataset.good violates its contract (data/good.csv, 3 rows): 1 check failed" in r.stdout
    assert "rows >= 10: found 3" in r.stdout
    assert p.last_run()["steps"]["step.use_good"]["status"] == "skipped"


def test_a_step_output_contract_stops_consumers(tmp_path):
    import yaml

    p = _project(tmp_path / "proj", {})
    spec = {"project": "outs", "steps": {
        "make": {"run": "demo.steps:make", "outputs": {"table": {"contract": {
            "columns": {"id": {"unique": True}, "score": {"dtype": "float64", "max": 1.0}}}}}},
        "after": {"run": "demo.steps:after", "inputs": {"table": "step.make.table"}, "outputs": ["n"]}}}
    p.write("mlspec.yaml", yaml.safe_dump(spec))
    r = p.apply()
    assert r.returncode == 1, r.stdout
    assert "failed    step.make  after" in r.stdout
    assert "step.make.table violates its contract" in r.stdout
    assert "column score: less_than_or_equal_to(1.0): 2 rows fail, e.g. row 1: 1.5, row 3: 7.0" in r.stdout
    run = p.last_run()
    assert run["steps"]["step.after"]["status"] == "skipped"
    assert "step.make" not in p.state()["resources"]
    # nothing went into the run-cache: a fixed contract runs the step again and it passes
    spec["steps"]["make"]["outputs"]["table"]["contract"]["columns"]["score"]["max"] = 10.0
    p.write("mlspec.yaml", yaml.safe_dump(spec))
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert p.ran() == {"step.make", "step.after"}
    r = p.run("data", "check", "step.make.table")
    assert r.returncode == 0 and "step.make.table" in r.stdout, r.stdout + r.stderr


def test_data_infer_drafts_a_contract_the_data_passes(tmp_path):
    import yaml

    p = _project(tmp_path / "proj", {})
    lines = "".join(f"{i},{20 + i % 50},{['basic', 'pro', 'team'][i % 3]},{i * 1.5}\n" for i in range(60))
    p.write("data/good.csv", "id,age,plan,spend\n" + lines)
    r = p.run("data", "infer", "dataset.good")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# A draft contract for dataset.good, inferred from data/good.csv (60 rows).")
    draft = yaml.safe_load(r.stdout)["contract"]
    assert draft["columns"]["id"] == {"dtype": "int64", "nullable": False, "min": 0, "max": 59, "unique": True}
    assert draft["columns"]["plan"]["values"] == ["basic", "pro", "team"]
    assert draft["columns"]["age"]["min"] == 20 and draft["columns"]["age"]["max"] == 69
    assert draft["strict"] is True
    # pasted into the spec, the data passes it; a new plan name fails it
    spec = yaml.safe_load((p.root / "mlspec.yaml").read_text())
    spec["datasets"]["good"]["contract"] = draft
    p.write("mlspec.yaml", yaml.safe_dump(spec))
    assert p.run("validate").returncode == 0
    assert p.run("data", "check").returncode == 0
    p.write("data/good.csv", "id,age,plan,spend\n" + lines + "60,30,gold,1.0\n")
    r = p.run("data", "check")
    assert r.returncode == 1 and "column plan: isin(['basic', 'pro', 'team']): 1 row fails, e.g. line 62: 'gold'" \
        in r.stdout, r.stdout
