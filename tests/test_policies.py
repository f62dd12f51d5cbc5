"""Policies as code and pinned aliases, end to end through the CLI: each built-in policy at plan and at apply
(a saved plan too), hand moves, the residency rule through the policy mechanism, and pins through plan,
apply and history."""

from __future__ import annotations

import json

from conftest import Project

STEPS = '''
def train(C: float, score: float, acc: float):
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=C).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    return {"model": m, "roc_auc": score, "accuracy": acc}
'''

SPEC = """
project: pol
steps:
  train:
    run: pol.steps:train
    outputs: [model]
    params: {C: %(C)s, score: %(score)s, acc: %(acc)s}
    metrics: [roc_auc, accuracy]
models:
  clf:
    from: step.train.model
    metrics: step.train
%(gates)s    promote: {alias: production, if_better: roc_auc}
%(model)s%(top)s"""

GATES = '    gates: {roc_auc: ">= 0.7"}\n'


def _spec(p: Project, C=1.0, score=0.8, acc=0.9, gates=GATES, model="", top="") -> None:
    p.write("mlspec.yaml", SPEC % {"C": C, "score": score, "acc": acc, "gates": gates, "model": model, "top": top})


def _project(tmp_path, **kw) -> Project:
    p = Project(tmp_path / "proj")
    p.write("src/pol/__init__.py", "")
    p.write("src/pol/steps.py", STEPS)
    _spec(p, **kw)
    return p


def _reg(p: Project) -> dict:
    return p.state()["resources"]["model.clf"]


def _one_error(r, text: str) -> None:
    assert r.returncode == 1, r.stdout + r.stderr
    assert text in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_require_gates_fails_plan_and_apply_and_refuses_hand_moves(tmp_path):
    p = _project(tmp_path, gates="")
    assert p.apply().returncode == 0  # no policy yet: version 1 takes production
    _spec(p, C=2.0, score=0.7, gates="")
    assert p.apply().returncode == 0  # version 2, not better: a candidate
    top = "policies: {require_gates: [production]}\n"
    _spec(p, C=3.0, score=0.9, gates="", top=top)
    line = ("policy require_gates: model.clf has no gates but may hold production: add gates to models.clf, "
            "or take production out of its promote and pin")
    _one_error(p.run("plan"), line)
    _one_error(p.apply(), line)
    assert len(_reg(p)["versions"]) == 2 and len(p.runs()) == 2  # nothing ran, no run was recorded
    _one_error(p.run("models", "promote", "clf", "2", "--alias", "production", "--force-with-reason", "x"),
               "policy require_gates: model.clf has no gates, so it may not hold production: add gates to models.clf")
    r = p.run("models", "promote", "clf", "2", "--alias", "staging")
    assert r.returncode == 0, r.stderr  # an alias the policy does not name
    # with gates, the plan passes again
    _spec(p, C=3.0, score=0.9, top=top)
    assert p.run("plan").returncode == 0


def test_protected_aliases_refuses_new_hand_moves_but_not_a_rollback(tmp_path):
    top = "policies: {protected_aliases: [production]}\n"
    p = _project(tmp_path, top=top)
    assert p.apply().returncode == 0  # v1 -> production
    _spec(p, C=2.0, score=0.9, top=top)
    assert p.apply().returncode == 0  # v2, better -> production
    _spec(p, C=3.0, score=0.75, top=top)
    assert p.apply().returncode == 0  # v3 passes its gates but is not better: a candidate that never held it
    assert _reg(p)["aliases"] == {"production": 2}
    _one_error(p.run("models", "promote", "clf", "3", "--alias", "production"),
               "policy protected_aliases: alias 'production' of model 'clf' is protected: it moves only through "
               "the gates of an apply; to override, say why: mlspec models promote clf 3 --alias production "
               "--force-with-reason TEXT")
    _one_error(p.run("models", "rollback", "clf", "--alias", "production", "--to", "3"),
               "policy protected_aliases: alias 'production' of model 'clf' is protected: it moves only through "
               "the gates of an apply (version 3 never held it)")
    r = p.run("models", "rollback", "clf", "--alias", "production", "--reason", "v2 misbehaves")
    assert r.returncode == 0, r.stderr  # back to 1, which held it: undoing a move is not a new one
    assert _reg(p)["aliases"] == {"production": 1}
    r = p.run("models", "rollback", "clf", "--alias", "production", "--to", "3", "--force-with-reason", "canary ok")
    assert r.returncode == 0, r.stderr
    last = _reg(p)["history"][-1]
    assert (last["from"], last["to"], last["by_hand"], last["reason"]) == (1, 3, True, "canary ok")


def test_protected_alias_pinned_to_a_rejected_version_fails_plan_and_apply_and_a_saved_plan(tmp_path):
    top = "policies: {protected_aliases: [production]}\n"
    pin = "    pin: {production: 2}\n"
    p = _project(tmp_path, top=top)
    assert p.apply().returncode == 0  # v1
    _spec(p, C=0.5, score=0.5, top=top)
    assert p.apply().returncode == 1  # v2 rejected by its gate
    _spec(p, C=0.5, score=0.5, top=top, model=pin)
    line = ("policy protected_aliases: model.clf pins production to version 2, which its gates rejected, and "
            "production is protected: pin a version that passed (see `mlspec models history clf`)")
    _one_error(p.run("plan"), line)
    _one_error(p.apply(), line)
    assert _reg(p)["aliases"] == {"production": 1}

    # a saved plan is checked again at apply against the state it is applied to
    q = _project(tmp_path / "q", model="    pin: {production: 2}\n", top=top)
    assert q.apply().returncode == 0  # v1; production waits for version 2
    assert "production stays on none: pinned to version 2, which is not registered" in q.run("plan", "--verbose").stdout
    assert q.run("plan", "-o", "saved.json", cwd=q.root).returncode == 0
    _spec(q, C=0.5, score=0.5, model="    on_fail: keep\n", top=top)
    assert q.apply().returncode == 0  # version 2, rejected (kept)
    _spec(q, model="    pin: {production: 2}\n", top=top)  # the spec the plan was made with
    _one_error(q.run("apply", "saved.json", cwd=q.root), line)


def test_pinned_alias_through_plan_apply_and_history(tmp_path):
    p = _project(tmp_path)
    assert p.apply().returncode == 0  # v1 -> production
    _spec(p, C=2.0, score=0.9)
    assert p.apply().returncode == 0  # v2 -> production
    _spec(p, C=2.0, score=0.9, model="    pin: {production: 1}\n")
    plan = p.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "~ model.clf  production: 2 -> 1 (pinned by the spec)" in plan.stdout
    assert "alias production: 2 -> 1 (pinned by the spec)" in plan.stdout
    assert "1 model with a pinned alias to move" in plan.stdout
    data = json.loads(p.run("plan", "--format", "json").stdout)
    ch = next(c for c in data["resource_changes"] if c["address"] == "model.clf")
    assert ch["actions"] == ["update"] and ch["reasons"][0]["code"] == "alias_pinned"
    assert (ch["reasons"][0]["before"], ch["reasons"][0]["after"]) == (2, 1)

    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "production: 2 -> 1 (pinned by the spec)" in r.stdout
    reg = _reg(p)
    assert reg["aliases"] == {"production": 1}
    last = reg["history"][-1]
    assert (last["from"], last["to"], last["action"], last["by_hand"]) == (2, 1, "pin", False)
    assert last["run_id"] == p.last_run()["run_id"]
    hist = p.run("models", "history", "clf")
    assert "2 -> 1" in hist.stdout and "pin" in hist.stdout and "pinned by the spec (models.clf.pin.production)" \
        in hist.stdout
    assert p.run("plan", "--detailed-exitcode").returncode == 0

    # a hand move of a pinned alias is refused, naming the pin, even with a reason
    for args in (("promote", "clf", "2", "--alias", "production", "--force-with-reason", "x"),
                 ("rollback", "clf", "--alias", "production")):
        _one_error(p.run("models", *args), "alias 'production' of model 'clf' is pinned to version 1 by the spec "
                                           "(models.clf.pin.production)")

    # a better version registers, but the gates do not move a pinned alias
    _spec(p, C=4.0, score=0.95, model="    pin: {production: 1}\n")
    plan = p.run("plan")
    assert "production stays on 1: pinned to version 1 by the spec" in plan.stdout, plan.stdout
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert _reg(p)["aliases"] == {"production": 1} and len(_reg(p)["versions"]) == 3

    # pinning the version this apply registers: it moves there after registration
    _spec(p, C=5.0, score=0.96, model="    pin: {production: 4}\n")
    plan = p.run("plan")
    assert "alias production: 1 -> 4 (pinned by the spec)" in plan.stdout, plan.stdout
    assert "stays on" not in plan.stdout
    assert p.apply().returncode == 0
    assert _reg(p)["aliases"] == {"production": 4}
    assert _reg(p)["history"][-1]["action"] == "pin"


RESIDENCY = """
project: res
backends:
  onprem: {type: local, location: onprem}
datasets:
  customers: {uri: data/customers.csv, residency: [onprem]}
steps:
  prepare:
    run: res.steps:prepare
    backend: onprem
    inputs: {raw: dataset.customers}
    outputs: [clean]
  train:
    run: res.steps:train
    inputs: {clean: step.prepare.clean}
    outputs: [model]
%s"""


def test_data_residency_is_a_policy_and_a_validation_diagnostic(tmp_path):
    p = Project(tmp_path / "res")
    p.write("data/customers.csv", "a,b\n1,2\n")
    p.write("src/res/__init__.py", "")
    p.write("src/res/steps.py", "def prepare(raw):\n    return {'clean': raw}\n\n\n"
                                "def train(clean):\n    return {'model': {'n': len(clean)}}\n")
    p.write("mlspec.yaml", RESIDENCY % "")
    message = ("step.train would run on backend 'local' (location 'local'), but it reads data derived from "
               "dataset.customers, which must stay in onprem: dataset.customers -> step.prepare -> step.train; "
               "run it on a backend located in onprem (steps.train.backend)")
    r = p.run("validate")
    _one_error(r, message + " [residency]")
    assert "steps.train:" in r.stderr and "mlspec.yaml:" in r.stderr  # located where it is written
    for cmd in (("plan",), ("apply", "--auto-approve")):
        _one_error(p.run(*cmd), message)
    # the same rule through the policy registry, over the composed spec
    import mlspec.policies as policies

    assert [v.line() for v in policies.residency_violations(
        {"backend": {"type": "local"}, "backends": {"onprem": {"type": "local", "location": "onprem"}},
         "datasets": {"customers": {"uri": "x", "residency": ["onprem"]}},
         "steps": {"prepare": {"backend": "onprem", "inputs": {"raw": "dataset.customers"}},
                   "train": {"inputs": {"clean": "step.prepare.clean"}}}})] == [f"policy data_residency: {message}"]
    # turned off in the spec's policies: the plan goes ahead
    p.write("mlspec.yaml", RESIDENCY % "policies: {data_residency: false}\n")
    assert p.run("validate").returncode == 0
    assert p.run("plan").returncode == 0
    # moving the step to an allowed location satisfies it
    p.write("mlspec.yaml", (RESIDENCY % "").replace("    outputs: [model]", "    outputs: [model]\n    backend: onprem"))
    assert p.run("plan").returncode == 0


def test_a_pin_to_the_version_being_registered_skips_it_when_rejected_and_protected(tmp_path):
    top = "policies: {protected_aliases: [production]}\n"
    p = _project(tmp_path, score=0.5, model="    on_fail: keep\n    pin: {production: 1}\n", top=top)
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "production stays on none: version 1, which the spec pins, was rejected by its gates and production is " \
           "protected (policy protected_aliases)" in r.stdout + r.stderr
    assert _reg(p)["aliases"] == {} and _reg(p)["versions"][0]["status"] == "rejected"
    _one_error(p.run("plan"), "policy protected_aliases: model.clf pins production to version 1, which its gates "
                              "rejected")
