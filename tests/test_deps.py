"""deps: whole files report as file changes; named keys of a YAML/JSON/TOML file re-run only on their values."""

from __future__ import annotations

import json

import pytest

from conftest import Project

SPEC = """
project: keys
steps:
  featurize:
    cmd: python scripts/featurize.py > ${outputs.feats}
    deps:
      - scripts/featurize.py
      - {path: PARAMS, keys: [featurize.max_features, featurize.ngrams]}
    outputs: [feats]
  train:
    cmd: python scripts/train.py > ${outputs.model}
    deps: [{path: PARAMS, keys: [train]}]
    outputs: [model]
"""

PARAMS = {
    "params.yaml": "featurize:\n  max_features: 200\n  ngrams: 2\n  unused: x\ntrain:\n  lr: 0.1\n  layers: [8, 4]\n",
    "params.json": json.dumps({"featurize": {"max_features": 200, "ngrams": 2, "unused": "x"},
                               "train": {"lr": 0.1, "layers": [8, 4]}}),
    "params.toml": "[featurize]\nmax_features = 200\nngrams = 2\nunused = 'x'\n[train]\nlr = 0.1\nlayers = [8, 4]\n",
}


def make(tmp_path, name: str) -> Project:
    p = Project(tmp_path / "p")
    p.write("mlspec.yaml", SPEC.replace("PARAMS", name))
    p.write(name, PARAMS[name])
    p.write("scripts/featurize.py", "print('features')\n")
    p.write("scripts/train.py", "print('model')\n")
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    return p


def planned(p: Project) -> dict:
    r = p.run("plan", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    return {c["address"]: [x["message"] for x in c["reasons"]]
            for c in json.loads(r.stdout)["resource_changes"] if c["actions"] != ["no-op"]}


@pytest.mark.parametrize("name", ["params.yaml", "params.json", "params.toml"])
def test_a_step_reruns_only_when_a_key_it_names_changes(tmp_path, name):
    p = make(tmp_path, name)
    text = PARAMS[name]
    p.write(name, text.replace("'x'", "'y'").replace('"x"', '"y"').replace(": x", ": y"))  # a key nobody names
    assert planned(p) == {}
    p.write(name, text.replace("200", "100"))
    assert planned(p) == {"step.featurize": [f"{name}:featurize.max_features: 200 -> 100"]}
    # a whole mapping named: the plan shows the leaves that changed
    p.write(name, text.replace("0.1", "0.05").replace("[8, 4]", "[8, 4, 2]"))
    assert planned(p) == {"step.train": [f"{name}:train.layers: [8, 4] -> [8, 4, 2]", f"{name}:train.lr: 0.1 -> 0.05"]}


def test_whole_file_deps_are_file_changes_not_code(tmp_path):
    p = make(tmp_path, "params.yaml")
    p.write("scripts/featurize.py", "print('features, v2')\n")
    assert planned(p) == {"step.featurize": ["file scripts/featurize.py changed"]}
    r = p.run("plan", "--format", "json")
    reason = json.loads(r.stdout)["resource_changes"][0]["reasons"][0]
    assert reason == {"code": "file_changed", "message": "file scripts/featurize.py changed",
                      "path": "scripts/featurize.py"}


def test_keys_added_to_and_removed_from_the_spec(tmp_path):
    p = make(tmp_path, "params.yaml")
    p.write("mlspec.yaml", SPEC.replace("PARAMS", "params.yaml").replace(
        "keys: [featurize.max_features, featurize.ngrams]", "keys: [featurize.max_features, featurize.unused]"))
    assert planned(p) == {"step.featurize": ["params.yaml:featurize.ngrams: removed (was 2)",
                                             'params.yaml:featurize.unused: added (x)']}


@pytest.mark.parametrize("params, message", [
    ("featurize:\n  max_feature: 200\n  ngrams: 2\ntrain: {}\n",
     "Error: step 'featurize' depends on key 'featurize.max_features' of params.yaml, which is not there: "
     "featurize has no 'max_features'; did you mean 'max_feature'?"),
    ("featurize: 3\ntrain: {}\n",
     "Error: step 'featurize' depends on key 'featurize.max_features' of params.yaml, which is not there: "
     "featurize has no 'max_features'"),
    ("featurize: [1\n", "Error: step 'featurize': params.yaml (deps) is not valid YAML: "),
])
def test_a_missing_key_or_a_broken_file_is_one_line(tmp_path, params, message):
    p = make(tmp_path, "params.yaml")
    p.write("params.yaml", params)
    r = p.run("plan")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stderr.splitlines()[0].startswith(message), r.stderr
    if "not there" in message:
        assert r.stderr.splitlines()[1].strip() == "add the key to params.yaml, or fix steps.featurize.deps"


@pytest.mark.parametrize("deps, expected", [
    ("[{path: notes.txt, keys: [a]}]", "steps.train.deps[0].path: 'notes.txt': keys can be named only in a .yaml"),
    ("[params.yaml, {path: params.yaml, keys: [train]}]", "steps.train.deps[1]: 'params.yaml' is listed twice"),
    ("[{path: params.yaml}]", "steps.train.deps[0]"),
    ("[{path: params.yaml, keys: [train..lr]}]", "steps.train.deps[0]"),
])
def test_validate_rejects_bad_deps(tmp_path, deps, expected):
    p = Project(tmp_path / "p")
    p.write("mlspec.yaml", f"project: v\nsteps:\n  train:\n    cmd: echo hi\n    deps: {deps}\n")
    r = p.run("validate")
    assert r.returncode == 1
    assert expected in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_a_secret_in_a_params_file_is_not_recorded(tmp_path):
    p = Project(tmp_path / "p")
    p.write("mlspec.yaml", "project: s\nsecrets:\n  token: ${oc.env:S_TOKEN}\nsteps:\n  a:\n    cmd: echo hi\n"
                           "    deps: [{path: params.yaml, keys: [api.token]}]\n"
                           "    params: {t: '${secrets.token}'}\n")
    p.write("params.yaml", "api: {token: s3cr3t-one}\n")
    env = {"S_TOKEN": "s3cr3t-one"}
    assert p.apply(env=env).returncode == 0
    p.write("params.yaml", "api: {token: s3cr3t-two}\n")
    r = p.run("plan", "--format", "json", env={"S_TOKEN": "s3cr3t-two"})
    assert r.returncode == 0, r.stderr
    reasons = [x["message"] for c in json.loads(r.stdout)["resource_changes"] for x in c["reasons"]]
    assert "params.yaml:api.token: (sensitive value changed)" in reasons
    assert "s3cr3t" not in r.stdout
    assert "s3cr3t" not in (p.root / ".mlspec/state/default.state.json").read_text()


def test_a_saved_plan_is_stale_once_a_key_it_assumed_changes(tmp_path):
    p = make(tmp_path, "params.yaml")
    p.write("params.yaml", PARAMS["params.yaml"].replace("200", "100"))
    assert p.run("plan", "-o", "plan.json").returncode == 0
    p.write("params.yaml", PARAMS["params.yaml"].replace("200", "50"))
    r = p.run("apply", "plan.json")
    assert r.returncode == 1
    assert "the saved plan is stale: a deps file of step 'featurize' changed since the plan was made" in r.stderr
