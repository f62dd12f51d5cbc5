"""The model registry end to end through the CLI: versions by content, gates, aliases with history, hand moves,
crash consistency, and model files that are never unpickled unless the spec says `format: pickle`."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from conftest import Project, run_cli

STEPS = '''
import time
from pathlib import Path


def train(C: float, score: float, acc: float, wait: float = 0.0):
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=C).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    return {"model": m, "roc_auc": score, "accuracy": acc}


def use(model):
    return {"pred": [int(x) for x in model.predict([[0.0], [3.0]])]}
'''

SPEC = """
project: reg
steps:
  train:
    run: rg.steps:train
    outputs: [model]
    params: {C: %(C)s, score: %(score)s, acc: %(acc)s}
    metrics: [roc_auc, accuracy]
models:
  clf:
    from: step.train.model
    metrics: step.train
    gates: {roc_auc: ">= 0.7", accuracy: ">= production - 0.02"}
    promote: {alias: production, if_better: roc_auc, protected: true}
"""


def _project(tmp_path, **kw) -> Project:
    p = Project(tmp_path / "proj")
    p.write("src/rg/__init__.py", "")
    p.write("src/rg/steps.py", STEPS)
    _spec(p, **kw)
    return p


def _spec(p: Project, C=1.0, score=0.8, acc=0.9, extra="") -> None:
    p.write("mlspec.yaml", SPEC % {"C": C, "score": score, "acc": acc} + extra)


def _registry(p: Project) -> dict:
    return p.state()["resources"]["model.clf"]


def test_versions_gates_aliases_and_history_end_to_end(tmp_path):
    p = _project(tmp_path)
    plan = p.run("plan")
    assert "gate accuracy >= production - 0.02: passes (no version holds the alias yet)" in plan.stdout, plan.stdout
    r = p.apply()
    assert r.returncode == 0, r.stderr
    assert "registered version 1 (candidate); production: none -> 1" in r.stdout
    reg = _registry(p)
    assert reg["aliases"] == {"production": 1} and reg["next_version"] == 2
    v1 = reg["versions"][0]
    assert v1["status"] == "promoted" and v1["format"] == "skops" and v1["metrics"]["roc_auc"] == 0.8
    assert {g["metric"]: g["outcome"] for g in v1["gates"]} == {"roc_auc": "passed", "accuracy": "vacuous"}
    assert v1["lineage"]["params"] == {"C": 1.0, "score": 0.8, "acc": 0.9}
    assert v1["lineage"]["packages"]["scikit-learn"]

    # an unchanged re-apply registers nothing
    r = p.apply()
    assert r.returncode == 0 and len(_registry(p)["versions"]) == 1
    assert "No changes" in p.run("plan").stdout

    # worse accuracy than production allows: version 2, rejected; production stays on 1; exit 1 with the table
    _spec(p, C=0.5, score=0.75, acc=0.8)
    r = p.apply()
    assert r.returncode == 1, r.stdout
    assert "version 2 of model 'clf' is rejected: accuracy 0.8 fails >= production - 0.02" in r.stdout
    import re

    assert re.search(r"metric +value +gate +threshold +baseline +outcome", r.stdout)
    assert re.search(r"accuracy +0.8 +>= production - 0.02 +0.88 +production: 0.9 +failed", r.stdout)
    reg = _registry(p)
    assert [v["status"] for v in reg["versions"]] == ["promoted", "rejected"]
    assert reg["aliases"] == {"production": 1}
    assert p.last_run()["steps"]["step.train"]["status"] == "ran"  # the step's result is kept
    # the plan now knows the candidate's metrics (already applied): it says the gate fails, not "unknown"
    r = p.run("plan")
    assert "No changes" in r.stdout  # the rejected content is a version already: nothing to register

    # a better model: version 3, production moves
    _spec(p, C=2.0, score=0.9, acc=0.91)
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "registered version 3 (candidate); production: 1 -> 3" in r.stdout
    reg = _registry(p)
    assert reg["aliases"] == {"production": 3}
    assert [v["status"] for v in reg["versions"]] == ["archived", "rejected", "promoted"]
    hist = p.run("models", "history", "clf", "--format", "json")
    moves = json.loads(hist.stdout)["history"]
    runs = [r["run_id"] for r in p.runs()]
    assert [(m["from"], m["to"]) for m in moves] == [(None, 1), (1, 3)]
    assert all(m["run_id"] in runs for m in moves)

    # a hand rollback brings 1 back, recorded; the next plan keeps it (no change), and says why with --verbose
    r = p.run("models", "rollback", "clf", "--alias", "production", "--reason", "v3 misbehaves in canary")
    assert r.returncode == 0, r.stderr
    reg = _registry(p)
    assert reg["aliases"] == {"production": 1}
    last = reg["history"][-1]
    assert (last["from"], last["to"], last["action"], last["by_hand"], last["reason"]) == \
        (3, 1, "rollback", True, "v3 misbehaves in canary")
    plan = p.run("plan", "--verbose", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout
    assert "alias production on version 1: rollback by hand (v3 misbehaves in canary)" in plan.stdout

    # the alias is protected: a hand promotion is refused, and allowed only with a reason
    r = p.run("models", "promote", "clf", "3", "--alias", "production")
    assert r.returncode == 1 and "policy protected_aliases: alias 'production' of model 'clf' is protected" in r.stderr and "Traceback" not in r.stderr
    r = p.run("models", "promote", "clf", "2", "--alias", "production", "--force-with-reason", "x")
    assert r.returncode == 0  # forced, even to a rejected version: the reason is recorded
    assert _registry(p)["history"][-1]["reason"] == "x"

    # the model card
    card = p.run("models", "show", "clf@3")
    assert card.returncode == 0
    assert "Model clf, version 3: archived" in card.stdout or "Model clf, version 3:" in card.stdout
    assert "roc_auc   0.9" in card.stdout
    for fmt in ("json", "markdown"):
        assert p.run("models", "show", "clf@production", "--format", fmt).returncode == 0
    r = p.run("models", "show", "clf@staging")
    assert r.returncode == 1 and "model 'clf' has no alias 'staging'" in r.stderr


def test_on_fail_keep_registers_a_rejected_version_and_exits_0(tmp_path):
    p = _project(tmp_path, score=0.5)
    _spec(p, score=0.5, extra="    on_fail: keep\n")
    r = p.apply()
    assert r.returncode == 0, r.stdout
    assert "rejected: roc_auc 0.5 fails >= 0.7 (on_fail: keep)" in r.stdout
    assert _registry(p)["versions"][0]["status"] == "rejected" and _registry(p)["aliases"] == {}


def test_plan_shows_gate_outcomes_when_the_metrics_are_in_the_run_cache(tmp_path):
    p = _project(tmp_path)
    assert p.apply().returncode == 0
    _spec(p, C=0.5, score=0.6, acc=0.9)
    assert p.apply().returncode == 1  # v2 rejected; its run is in the run-cache
    _spec(p)  # back to v1's params: restored, the content is version 1: nothing to register
    assert "No changes" in p.run("plan").stdout or "restore" in p.run("plan").stdout
    p.run("state", "rm", "model.clf")  # forget the registry: the cached run is a new candidate again
    _spec(p, C=0.5, score=0.6, acc=0.9)
    plan = p.run("plan")
    assert "register version 1 as rejected" in plan.stdout, plan.stdout
    assert "gate roc_auc >= 0.7: 0.6 fails" in plan.stdout


def test_kill_between_registration_and_alias_move_leaves_a_consistent_registry(tmp_path):
    """The version and its alias move are one journaled record: after kill -9 at any point the registry has
    the version with its alias moved, or neither; the next apply recovers and finishes."""
    p = _project(tmp_path)
    assert p.apply().returncode == 0
    _spec(p, C=2.0, score=0.9, acc=0.91)
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(p.root), "apply", "--auto-approve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    journal = p.root / ".mlspec/state/default.journal"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill as soon as the step is journaled, before or after the model's entry
        if journal.is_dir() and any(journal.iterdir()):
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from mlspec.state import StateStore
    from mlspec.storage import Location

    st = StateStore(Location(str(p.root / ".mlspec/state")), "default").read()
    reg = st.resources["model.clf"]
    numbers = [v["version"] for v in reg["versions"]]
    assert numbers in ([1], [1, 2])
    assert reg["aliases"]["production"] == numbers[-1]  # never a version without its move, or a move without it
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    reg = _registry(p)
    assert [v["version"] for v in reg["versions"]] == [1, 2] and reg["aliases"] == {"production": 2}
    assert [(h["from"], h["to"]) for h in reg["history"]] == [(None, 1), (1, 2)]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_planted_pickle_is_never_unpickled(tmp_path):
    """A stored model is loaded by a consumer only as skops unless the spec says `format: pickle`: a pickle
    planted in the store and recorded as the model's content is refused, and its code does not run."""
    p = _project(tmp_path)
    p.write("mlspec.yaml", (SPEC % {"C": 1.0, "score": 0.8, "acc": 0.9}).replace("models:", """  use:
    run: rg.steps:use
    inputs: {model: step.train.model}
    outputs: [pred]
models:"""))
    assert p.apply().returncode == 0
    # plant: put a malicious pickle in the store, and point the recorded output at it as a pickle
    from mlspec.artifacts import ArtifactStore

    store = ArtifactStore(str(p.root / ".mlspec/artifacts"))
    digest, size = store.put_bytes(pickle.dumps(_Evil()))
    doc = p.state()
    doc["resources"]["step.train"]["outputs"]["model"] = {"hash": digest, "size": size, "format": "pickle"}
    doc.pop("checksum")
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps(doc))
    assert p.run("state", "push", str(planted)).returncode == 0
    r = p.apply("--replace", "step.use")
    assert r.returncode == 1
    assert "input 'model' (step.train.model) is a pickle file, and loading it would run code" in r.stdout, r.stdout
    assert not (p.root / "PWNED").exists() and not list(tmp_path.rglob("PWNED"))


def test_a_pickled_model_is_registered_only_when_declared(tmp_path):
    p = _project(tmp_path)
    text = (p.root / "mlspec.yaml").read_text()
    p.write("mlspec.yaml", text.replace("    outputs: [model]\n", "    outputs: {model: {format: pickle}}\n"))
    r = p.apply()
    assert r.returncode == 0, r.stdout
    assert "is stored as pickle (declared): loading it runs code" in r.stdout
    assert _registry(p)["versions"][0]["format"] == "pickle"
