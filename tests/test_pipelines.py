"""Pipelines without glue (issue: outputs in the project, directories, fan-in): through the real CLI.

- an output with `path:` is in the project after a run, a run-cache restore and an up-to-date apply; a hand
  edit or deletion is drift in the plan and is put back by apply or `mlspec checkout`; .gitignore follows;
- a directory output is a tree: a one-file change stores one new file object; a `cmd` step gets a real
  directory at ${inputs.X}; a python step gets its path;
- a gather (`step.X[*].OUT`) hands a python step a mapping from matrix values to the input, and a `cmd`
  step a directory with one entry per instance; an instance address printed by plan is a valid input.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from conftest import run_cli

STEPS = '''
import json, os


def make(n: int):
    return {"table": "a,b\\n" + "".join(f"{i},{i * i}\\n" for i in range(n))}


def train(feats: str, C: float):
    files = sorted(os.listdir(feats))
    return {"model": {"C": C, "files": files}}


def evaluate(model: dict):
    return {"report": {"score": model["C"] * 2}}


def select(reports: dict, models: dict):
    best = max(reports, key=lambda k: reports[k]["score"])
    return {"best": dict(models[best], key=best), "summary": {json.dumps(k): v["score"] for k, v in reports.items()}}


def pair(reports: dict):
    return {"keys": sorted([list(k) for k in reports])}
'''

SPEC = '''
project: pipes
steps:
  make:
    run: src.steps:make
    outputs: {table: data/table.csv}
    params: {n: 5}
  feats:
    cmd: python -c "import os,sys; d=sys.argv[1]; [open(os.path.join(d, f'f{i}.txt'), 'w').write(str(i) + open(sys.argv[2]).read()[:3]) for i in range(3)]" ${outputs.feats} ${inputs.table}
    inputs: {table: step.make.table}
    outputs: {feats: {path: data/features/, type: dir}}
  train:
    run: src.steps:train
    inputs: {feats: step.feats.feats}
    outputs: [model]
    params: {C: 1.0}
    matrix: {C: [0.1, 1.0]}
  evaluate:
    run: src.steps:evaluate
    inputs: {model: step.train.model}
    outputs: [report]
  select:
    run: src.steps:select
    inputs: {reports: "step.evaluate[*].report", models: "step.train[*].model"}
    outputs: {best: models/best.json, summary: {path: eval/summary.json}}
  listing:
    cmd: ls ${inputs.reports} > ${outputs.names} && cat ${inputs.feats}/f2.txt >> ${outputs.names}
    inputs: {reports: "step.evaluate[*].report", feats: step.feats.feats}
    outputs: {names: eval/names.txt}
  one:
    run: src.steps:evaluate
    inputs: {model: "step.train[C=0.1].model"}
    outputs: [report]
'''


def _project(tmp_path: Path, spec: str = SPEC) -> Path:
    root = tmp_path / "p"
    (root / "src").mkdir(parents=True)
    (root / "src" / "__init__.py").write_text("")
    (root / "src" / "steps.py").write_text(STEPS)
    (root / "mlspec.yaml").write_text(textwrap.dedent(spec))
    return root


def _apply(root: Path, *args) -> str:
    r = run_cli("-C", str(root), "apply", "--auto-approve", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _plan_json(root: Path) -> dict:
    r = run_cli("-C", str(root), "plan", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def _state(root: Path) -> dict:
    return json.loads((root / ".mlspec/state/default.state.json").read_text())


def test_outputs_live_in_the_project_through_run_restore_and_checkout(tmp_path):
    root = _project(tmp_path)
    _apply(root)
    assert (root / "data/table.csv").read_text() == "a,b\n0,0\n1,1\n2,4\n3,9\n4,16\n"
    assert sorted(os.listdir(root / "data/features")) == ["f0.txt", "f1.txt", "f2.txt"]
    best = json.loads((root / "models/best.json").read_text())
    assert best["C"] == 1.0 and best["key"] == 1.0  # the gather's key is the matrix value itself
    assert json.loads((root / "eval/summary.json").read_text()) == {"0.1": 0.2, "1.0": 2.0}
    # a cmd step gets the gather as a directory (one entry per instance) and a directory input as one
    assert (root / "eval/names.txt").read_text() == "C=0.1.json\nC=1.0.json\n2a,b"
    # .gitignore lists every declared path, in a block of its own; the user's lines stay
    gi = (root / ".gitignore").read_text()
    for p in ("/data/table.csv", "/data/features", "/models/best.json", "/eval/summary.json", "/eval/names.txt"):
        assert p in gi.splitlines()

    # a param change, then its revert: the revert restores from the run-cache AND puts the old content back
    spec = (root / "mlspec.yaml").read_text()
    (root / "mlspec.yaml").write_text(spec.replace("n: 5", "n: 3"))
    out = _apply(root)
    assert (root / "data/table.csv").read_text() == "a,b\n0,0\n1,1\n2,4\n"
    assert "done      step.make" in out
    (root / "mlspec.yaml").write_text(spec)
    out = _apply(root)
    assert "restored  step.make" in out and "restored  step.feats" in out and "done" not in out
    assert (root / "data/table.csv").read_text() == "a,b\n0,0\n1,1\n2,4\n3,9\n4,16\n"
    assert _plan_json(root)["has_changes"] is False

    # hand edits and deletions are drift: the plan names them, and nothing re-runs to put them back
    (root / "eval/summary.json").write_text("{}")
    (root / "models/best.json").unlink()
    (root / "data/features/f1.txt").write_text("edited")
    plan = _plan_json(root)
    drift = {c["address"]: [r["message"] for r in c["reasons"]] for c in plan["resource_changes"]
             if c["verdict"] == "checkout"}
    assert drift == {"step.feats": ["output data/features/f1.txt modified outside mlspec"],
                     "step.select": ["output models/best.json missing from the project",
                                     "output eval/summary.json modified outside mlspec"]}
    assert plan["summary"]["checkout"] == 2 and plan["summary"]["run"] == 0
    text = run_cli("-C", str(root), "plan").stdout
    assert "~ step.select  check out from the store" in text
    out = _apply(root)
    assert "2 checked out" in out and " ran in " not in out
    assert (root / "data/features/f1.txt").read_text() == "1a,b"
    assert json.loads((root / "eval/summary.json").read_text()) == {"0.1": 0.2, "1.0": 2.0}
    assert _plan_json(root)["has_changes"] is False

    # `mlspec checkout` after the files are gone (a fresh clone, a git clean)
    import shutil

    shutil.rmtree(root / "data")
    r = run_cli("-C", str(root), "checkout", "--format", "json")
    assert r.returncode == 0, r.stderr
    res = {o["address"]: o["result"] for o in json.loads(r.stdout)["outputs"]}
    assert res["step.make.table"] == "restored" and res["step.feats.feats"] == "restored"
    assert res["step.select.best"] == "up to date"
    assert (root / "data/table.csv").is_file() and len(os.listdir(root / "data/features")) == 3
    r = run_cli("-C", str(root), "checkout", "step.make")
    assert r.returncode == 0 and "step.make.table" in r.stdout and "step.select" not in r.stdout


def test_directory_output_stores_one_object_per_changed_file(tmp_path):
    root = _project(tmp_path, '''
        project: dirs
        datasets:
          src: {uri: raw/}
        steps:
          copy:
            cmd: cp -r ${inputs.src}/. ${outputs.out}
            inputs: {src: dataset.src}
            outputs: {out: {type: dir}}
          count:
            run: src.steps:train
            inputs: {feats: step.copy.out}
            outputs: [model]
            params: {C: 1.0}
        ''')
    (root / "raw").mkdir()
    for i in range(20):
        (root / "raw" / f"part-{i:02d}.txt").write_text(f"row {i}\n" * 50)
    _apply(root)
    objects = root / ".mlspec/artifacts/objects"

    def count() -> int:
        return sum(len(files) for _d, _s, files in os.walk(objects))

    before = count()
    rec = _state(root)["resources"]["step.copy"]["outputs"]["out"]
    assert rec["format"] == "dir" and rec["files"] == 20 and rec["size"] == sum(
        (root / "raw" / f).stat().st_size for f in os.listdir(root / "raw"))
    model = json.loads(run_cli("-C", str(root), "state", "show", "step.count", "--format", "json").stdout)
    assert model["outputs"]["model"]["hash"]
    (root / "raw" / "part-07.txt").write_text("changed\n")
    out = _apply(root)
    assert "done      step.copy" in out and "done      step.count" in out
    # one new file object and one new manifest, not 20 files again (count's model lists the same names)
    assert count() - before == 2
    # `artifacts get` writes a directory output out as a directory
    r = run_cli("-C", str(root), "artifacts", "get", "step.copy.out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "part-07.txt").read_text() == "changed\n"
    assert len(os.listdir(tmp_path / "out")) == 20
    r = run_cli("-C", str(root), "artifacts", "verify")
    assert r.returncode == 0 and "all intact" in r.stdout


def test_instance_addresses_and_gathers_validate_with_clear_errors(tmp_path):
    root = _project(tmp_path)
    r = run_cli("-C", str(root), "validate")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = SPEC.replace('"step.train[C=0.1].model"', '"step.train[C=0.5,x=1].model"') \
        .replace('reports: "step.evaluate[*].report", models', 'reports: "step.evaluate[C=1.0].report", models') \
        .replace('"step.evaluate[*].report", feats', '"step.make[*].table", feats')
    (root / "mlspec.yaml").write_text(bad)
    r = run_cli("-C", str(root), "validate")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() + r.stdout.splitlines() if "bad-selector" in ln or "[" in ln]
    text = "\n".join(lines)
    # one line per wrong reference, naming what is wrong
    assert text.count("step.train[C=0.5,x=1].model") == 1
    assert "C=0.5 is not one of the matrix values 0.1, 1.0" in text and "has no matrix key 'x'" in text
    assert "'step.make[*].table': step 'make' does not fan out (no matrix), so there is nothing to gather" in text
    # an instance of a step that fans out by inheritance (evaluate has no matrix of its own) resolves
    assert "step.evaluate[C=1.0].report" not in text


def test_output_path_rules(tmp_path):
    root = _project(tmp_path, '''
        project: paths
        steps:
          a:
            run: src.steps:make
            outputs: {table: data/out.csv}
            params: {n: 1}
          b:
            run: src.steps:make
            outputs: {table: data/}
            params: {n: 1}
          m:
            run: src.steps:make
            outputs: {table: data/m.csv}
            params: {n: 1}
            matrix: {n: [1, 2]}
          c:
            run: src.steps:make
            outputs: {table: ../outside.csv}
            params: {n: 1}
        ''')
    r = run_cli("-C", str(root), "validate")
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "output path data/ overlaps data/out.csv, the path of step.a.table" in out
    assert "step 'm' fans out (n), so its instances would all write data/m.csv" in out
    assert "steps.c.outputs.table" in out


def test_gather_keys_for_two_matrix_keys_and_fan_out_false(tmp_path):
    root = _project(tmp_path, '''
        project: keys
        steps:
          train:
            run: src.steps:evaluate
            inputs: {}
            outputs: [report]
            params: {C: 1.0}
            matrix: {C: [0.1, 1.0], algo: [a, b]}
          gather:
            run: src.steps:pair
            inputs: {reports: step.train.report}
            outputs: {keys: keys.json}
            fan_out: false
        ''')
    (root / "src" / "steps.py").write_text(STEPS.replace('def evaluate(model: dict):\n    return {"report": {"score": model["C"] * 2}}',
                                                         'def evaluate(C: float, algo: str = ""):\n    return {"report": {"score": C}}'))
    _apply(root)
    # two keys: the mapping is keyed by tuples of the values, in the order of the sorted key names (C, algo)
    assert json.loads((root / "keys.json").read_text()) == [[0.1, "a"], [0.1, "b"], [1.0, "a"], [1.0, "b"]]
    text = run_cli("-C", str(root), "graph").stdout
    assert "step.gather" in text and "step.gather[" not in text


def test_link_types(tmp_path):
    root = _project(tmp_path, '''
        project: links
        storage: {link: [hardlink]}
        steps:
          a:
            run: src.steps:make
            outputs: {table: out/a.csv}
            params: {n: 2}
        ''')
    _apply(root)
    st = (root / "out/a.csv").stat()
    assert st.st_nlink == 2  # shares the store's read-only file
    assert not os.access(root / "out/a.csv", os.W_OK) or os.geteuid() == 0
    spec = (root / "mlspec.yaml").read_text().replace("[hardlink]", "[symlink]")
    (root / "mlspec.yaml").write_text(spec)
    (root / "out/a.csv").unlink()
    r = run_cli("-C", str(root), "checkout")
    assert r.returncode == 0, r.stderr
    assert (root / "out/a.csv").is_symlink() and (root / "out/a.csv").read_text() == "a,b\n0,0\n1,1\n"
    assert _plan_json(root)["has_changes"] is False
    (root / "mlspec.yaml").write_text(spec.replace("[symlink]", "[reflink, copy]"))
    (root / "out/a.csv").unlink()
    run_cli("-C", str(root), "checkout")
    p = root / "out/a.csv"
    assert not p.is_symlink() and p.stat().st_nlink == 1 and p.read_text() == "a,b\n0,0\n1,1\n"
    p.write_text("mine")  # a copy is the user's to edit, the store is untouched...
    assert run_cli("-C", str(root), "artifacts", "verify").returncode == 0
    plan = _plan_json(root)  # ...and the plan calls it drift
    assert plan["resource_changes"][0]["reasons"][0]["code"] == "output_modified"


def test_gitignore_block_follows_the_spec(tmp_path):
    root = _project(tmp_path, '''
        project: gi
        steps:
          a:
            run: src.steps:make
            outputs: {table: out/a.csv}
            params: {n: 2}
          b:
            run: src.steps:make
            outputs: {table: out/b.csv}
            params: {n: 3}
        ''')
    (root / ".gitignore").write_text("*.pyc\n.venv/\n")
    _apply(root)
    lines = (root / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["*.pyc", ".venv/"] and "/out/a.csv" in lines and "/out/b.csv" in lines
    spec = (root / "mlspec.yaml").read_text().replace("outputs: {table: out/b.csv}", "outputs: [table]")
    (root / "mlspec.yaml").write_text(spec)
    _apply(root)
    lines = (root / ".gitignore").read_text().splitlines()
    assert "/out/b.csv" not in lines and "/out/a.csv" in lines and lines[:2] == ["*.pyc", ".venv/"]


def test_the_same_model_has_the_same_bytes_so_a_rerun_stops_at_it(tmp_path):
    """skops names objects by memory address; mlspec renumbers them, so a forced re-run that trains the same
    model stores the same object and the step reading it stays up to date (early cut-off)."""
    root = _project(tmp_path, '''
        project: skopsy
        steps:
          fit:
            run: src.steps:fit
            outputs: [model]
          use:
            run: src.steps:use
            inputs: {model: step.fit.model}
            metrics: [score]
        ''')
    (root / "src" / "steps.py").write_text(
        "import numpy as np\n"
        "from sklearn.ensemble import RandomForestClassifier\n\n\n"
        "def fit():\n"
        "    X = np.random.RandomState(0).rand(60, 3)\n"
        "    return RandomForestClassifier(n_estimators=3, random_state=0).fit(X, X[:, 0] > 0.5)\n\n\n"
        "def use(model):\n"
        "    return {'score': float(model.predict(np.eye(3)).sum())}\n")
    _apply(root)
    first = _state(root)["resources"]["step.fit"]["outputs"]["model"]
    assert first["format"] == "skops"
    out = _apply(root, "--replace", "step.fit")
    assert "done      step.fit" in out and "step.use" not in out.split("Applying", 1)[1].replace(
        "up to date", ""), out
    assert _state(root)["resources"]["step.fit"]["outputs"]["model"]["hash"] == first["hash"]
