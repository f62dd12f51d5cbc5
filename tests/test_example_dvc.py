"""examples/dvc-get-started, through the real CLI, the way a DVC user would drive it: apply, change a
params.yaml key, revert it (restored from the run-cache and put back in the project), edit a script.

Every check reads what a user sees: apply's output, `mlspec plan` (text and JSON), `mlspec runs show`,
`mlspec metrics show`, `mlspec plots show` and the files in the project.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "dvc-get-started"
STEPS = {"step.generate", "step.prepare", "step.featurize", "step.train", "step.evaluate"}
# what the project holds after an apply, where DVC's example keeps it
PROJECT_FILES = ["data/data.xml", "data/prepared/train.tsv", "data/prepared/test.tsv", "data/features/train.pkl",
                 "data/features/test.pkl", "model.pkl", "eval/metrics.json", "eval/importance.csv",
                 "eval/plots/prc/train.json", "eval/plots/prc/test.json", "eval/plots/roc/train.json",
                 "eval/plots/roc/test.json", "eval/plots/confusion/train.csv", "eval/plots/confusion/test.csv"]
# the scripts are run as `python src/...`: make that the interpreter running the tests (and mlspec)
ENV = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def _cli(root: Path, *args):
    return run_cli("-C", str(root), *args, env=ENV)


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


def test_dvc_get_started_apply_change_revert(tmp_path):
    root = tmp_path / "dvc-get-started"
    # the example as committed (not what an apply run inside the repo may have left there)
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".mlspec", "__pycache__", "plots.html", "data",
                                                                 "eval", "model.pkl"))

    # --- first apply: every step runs, the project looks like DVC's ---------------------------------
    out = _ok(root, "apply", "--auto-approve")
    assert "Apply complete: 5 ran, 0 restored from cache, 0 failed" in out, out
    assert _outcomes(root) == dict.fromkeys(STEPS, "ran")
    missing = [rel for rel in PROJECT_FILES if not (root / rel).is_file()]
    assert not missing, f"not in the project after apply: {missing}"
    assert len((root / "data/prepared/train.tsv").read_text().splitlines()) > 2000
    first = _snapshot(root)

    metrics = {m["metric"]: m["value"] for m in json.loads(_ok(root, "metrics", "show", "--format", "json"))}
    assert set(metrics) == {"avg_prec.train", "avg_prec.test", "roc_auc.train", "roc_auc.test"}, metrics
    assert "avg_prec.test" in _ok(root, "metrics", "show")
    on_disk = json.loads((root / "eval/metrics.json").read_text())   # the dvclive-style nested file
    assert {f"{k}.{split}": v for k, d in on_disk.items() for split, v in d.items()} == metrics
    assert metrics["roc_auc.test"] > 0.8, "the synthetic posts should be learnable"
    # lineage names a cmd step's params-file keys and file deps (they are its params, for a DVC user)
    lin = _ok(root, "lineage", "step.featurize")
    assert "params.yaml:featurize.max_features=100" in lin and "deps: src/featurization.py" in lin, lin

    plots = json.loads(_ok(root, "plots", "show", "--format", "json"))["plots"]
    assert {p["output"]: p["type"] for p in plots} == {
        "prc_train": "line", "prc_test": "line", "roc_train": "line", "roc_test": "line",
        "confusion_train": "bar", "confusion_test": "bar", "importance": "bar"}
    assert "# >>> mlspec outputs" in (root / ".gitignore").read_text()

    assert "No changes." in _ok(root, "plan")

    # --- change one params.yaml key: exactly the steps that read it, and what follows, re-run ----------
    _edit(root / "params.yaml", "max_features: 100", "max_features: 200")
    text = _ok(root, "plan")
    assert "    ~ step.featurize  run\n        params.yaml:featurize.max_features: 100 -> 200\n" in text, text
    plan = _plan(root)
    assert [(r["code"], r["before"], r["after"]) for r in plan["step.featurize"]["reasons"]] == [
        ("file_key_changed", 100, 200)]
    assert {a: c["verdict"] for a, c in plan.items()} == {
        "step.generate": "up-to-date", "step.prepare": "up-to-date", "step.featurize": "run",
        "step.train": "known after apply", "step.evaluate": "known after apply"}

    out = _ok(root, "apply", "--auto-approve")
    assert "Apply complete: 3 ran, 0 restored from cache, 0 failed, 0 skipped, 2 up to date" in out, out
    assert _outcomes(root) == {"step.generate": "up-to-date", "step.prepare": "up-to-date",
                               "step.featurize": "ran", "step.train": "ran", "step.evaluate": "ran"}
    changed = _snapshot(root)
    assert changed["data/features/train.pkl"] != first["data/features/train.pkl"]
    assert changed["model.pkl"] != first["model.pkl"], "a new vocabulary should make a new model"
    assert changed["eval/metrics.json"] != first["eval/metrics.json"]
    assert "Metrics of state serial 2 against state serial 1" in _ok(root, "metrics", "diff")

    # --- revert: restored from the run-cache, nothing runs, the project holds the first results again ---
    _edit(root / "params.yaml", "max_features: 200", "max_features: 100")
    plan = _plan(root)
    assert {a: c["verdict"] for a, c in plan.items()} == {
        "step.generate": "up-to-date", "step.prepare": "up-to-date", "step.featurize": "restore",
        "step.train": "restore", "step.evaluate": "restore"}
    out = _ok(root, "apply", "--auto-approve")
    assert "Apply complete: 0 ran, 3 restored from cache, 0 failed, 0 skipped, 2 up to date" in out, out
    for step in ("featurize", "train", "evaluate"):
        assert f"  restored  step.{step}  from the run-cache" in out, out
    assert _outcomes(root) == {"step.generate": "up-to-date", "step.prepare": "up-to-date",
                               "step.featurize": "restored", "step.train": "restored", "step.evaluate": "restored"}
    reverted = _snapshot(root)
    differ = [rel for rel in PROJECT_FILES if reverted[rel] != first[rel]]
    assert not differ, f"not byte-identical to the first apply after the revert: {differ}"
    r = _cli(root, "plan", "--detailed-exitcode")
    assert r.returncode == 0 and "No changes. The lifecycle matches the spec." in r.stdout, r.stdout + r.stderr

    # --- a comment in a cmd step's script: a file dep, so any byte change re-runs it ------------------
    _edit(root / "src/train.py", "import os\n", "import os  # the features directory is joined below\n")
    plan = _plan(root)
    assert [r["message"] for r in plan["step.train"]["reasons"]] == ["file src/train.py changed"]
    assert plan["step.train"]["verdict"] == "run"
    assert {a: c["verdict"] for a, c in plan.items() if a != "step.train"} == {
        "step.generate": "up-to-date", "step.prepare": "up-to-date", "step.featurize": "up-to-date",
        "step.evaluate": "known after apply"}
    out = _ok(root, "apply", "--auto-approve")
    # the forest is seeded: the same model bytes, so evaluate is cut off (up to date), not re-run
    assert _outcomes(root) == {"step.generate": "up-to-date", "step.prepare": "up-to-date",
                               "step.featurize": "up-to-date", "step.train": "ran", "step.evaluate": "up-to-date"}
    assert (root / "model.pkl").read_bytes() == first["model.pkl"]

    # --- dvc checkout: a deleted output comes back from the store, nothing runs -----------------------
    shutil.rmtree(root / "data/features")
    (root / "model.pkl").unlink()
    text = _ok(root, "plan")
    assert "output model.pkl missing from the project" in text, text
    out = _ok(root, "checkout")
    assert "2 restored" in out, out
    assert (root / "model.pkl").read_bytes() == first["model.pkl"]
    assert (root / "data/features/test.pkl").read_bytes() == first["data/features/test.pkl"]
    assert "No changes." in _ok(root, "plan")
