"""The deployment kind's decide (pure): each recorded situation and what the plan does about it, with reasons in
the plan's text, JSON and Markdown forms. No process is started here (tests/test_deployments.py does that)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlspec.core.types import Action, Verdict
from mlspec.kinds.deployment import DeploymentItem, DeploymentKind, desired_version
from mlspec.render import render_markdown, render_text
from mlspec.spec import BackendConfig, Deployment, Model

KIND = DeploymentKind()
MODEL = Model("clf", "step.train.model", promote={"alias": "production"})
LOCAL = BackendConfig("default", "local")
REG = {"aliases": {"production": 3}, "versions": [{"version": v, "hash": f"h{v}", "status": "candidate"}
                                                  for v in (1, 2, 3)]}
SETTINGS = {"replicas": 1, "drain": 10.0, "log": {}, "limits": {}}


def dep(**kw) -> Deployment:
    d = dict(name="api", model="clf@production", port=8080)
    d.update(kw)
    return Deployment(**d)


def node(d: Deployment, backend=LOCAL):
    from mlspec.core.kind import Node

    return Node("deployment.api", "deployment", ("model.clf",), DeploymentItem(d, MODEL, backend))


def facts(reg=REG, token=None):
    return SimpleNamespace(models={"deployments": {"deployment.api": {"registry": reg, "token": token}}})


def record(**kw) -> dict:
    r = {"kind": "deployment", "model": "clf", "version": 3, "port": 8080, "backend": "default",
         "settings": dict(SETTINGS, log={}), "token": None, "url": "http://127.0.0.1:8080",
         "service": {"port": 8080, "supervisor": {"pid": 1}}, "observed": None, "history": []}
    r.update(kw)
    return r


def decide(d, rec, known=None, f=None, forced=False):
    known = {"model.clf": {"model": "h3"}} if known is None else known
    d = dep(**{k: v for k, v in d.items()}) if isinstance(d, dict) else d
    return KIND.decide(node(d), rec, f or facts(), known, forced)


def codes(ch) -> list:
    return [r.code.value for r in ch.reasons]


def test_create_then_up_to_date():
    ch = decide({}, None)
    assert ch.action is Action.CREATE and codes(ch) == ["new"] and ch.after["version"] == 3
    d = dep()
    rec = record(settings={"replicas": d.replicas, "drain": d.drain, "log": d.log, "limits": dict(d.limits)})
    assert decide(d, rec).action is Action.NOOP


@pytest.mark.parametrize("change, action, code", [
    (dict(version=1), Action.UPDATE, "serve_version"),
    (dict(port=9090), Action.REPLACE, "changed"),
    (dict(backend="other"), Action.REPLACE, "changed"),
    (dict(observed={"state": "gone", "detail": "the supervisor (pid 1) is gone"}), Action.CREATE, "service_gone"),
    (dict(observed={"state": "unhealthy", "detail": "port 8080 does not answer"}), Action.REPLACE, "service_unhealthy"),
    (dict(observed={"state": "degraded", "detail": "1 of 2 replica(s) run"}), Action.UPDATE, "service_degraded"),
    (dict(observed={"state": "running", "version": 2}), Action.UPDATE, "service_drift"),
    (dict(service=None), Action.CREATE, "service_gone"),
])
def test_recorded_situations(change, action, code):
    d = dep()
    rec = record(settings={"replicas": d.replicas, "drain": d.drain, "log": d.log, "limits": dict(d.limits)},
                 **change)
    ch = decide(d, rec)
    assert ch.action is action and code in codes(ch), (ch.action, codes(ch))


def test_settings_and_token_roll_out():
    d = dep(replicas=2, drain=3.0)
    rec = record(settings={"replicas": 1, "drain": 3.0, "log": d.log, "limits": dict(d.limits)}, token="keyed:a")
    ch = decide(d, rec, f=facts(token="keyed:b"))
    assert ch.action is Action.UPDATE
    texts = [r.text() for r in ch.reasons]
    assert "replicas: 1 -> 2" in texts and "token: (sensitive value changed)" in texts, texts


def test_new_model_content_is_known_after_apply_and_a_pin_is_exact():
    ch = decide({}, record(), known={"model.clf": {"model": "brand-new"}})
    assert ch.verdict is Verdict.UNKNOWN and "serve_unknown" in codes(ch) and ch.after["version"] is None
    assert desired_version(dep(model="clf@2"), MODEL, REG, {"model": "brand-new"}) == (2, "")
    assert desired_version(dep(), MODEL, REG, None)[0] is None  # the model itself is not known yet


def test_a_rollback_holds_until_the_alias_moves():
    d = dep()
    rec = record(version=1, hold={"version": 1, "while": 3},
                 settings={"replicas": d.replicas, "drain": d.drain, "log": d.log, "limits": dict(d.limits)})
    ch = decide(d, rec)
    assert ch.action is Action.NOOP and codes(ch) == ["serve_held"]
    moved = {"aliases": {"production": 4}, "versions": REG["versions"] + [{"version": 4, "hash": "h4"}]}
    ch = decide(d, rec, known={"model.clf": {"model": "h4"}}, f=facts(reg=moved))
    assert ch.action is Action.UPDATE and ch.after["version"] == 4 and codes(ch) == ["serve_version"]


def test_removed_and_forced():
    ch = KIND.removed("deployment.api", record())
    assert ch.action is Action.DELETE and KIND.verdict_text(ch.to_dict()) == "destroy (stop the service)"
    d = dep()
    rec = record(settings={"replicas": d.replicas, "drain": d.drain, "log": d.log, "limits": dict(d.limits)})
    assert decide(d, rec, forced=True).action is Action.REPLACE


def test_the_plan_views_show_deployments():
    d = dep()
    rec = record(version=1, settings={"replicas": d.replicas, "drain": d.drain, "log": d.log,
                                      "limits": dict(d.limits)})
    ch = decide(d, rec)
    plan = {"project": "p", "workspace": "default", "backend": "local", "targets": [], "notes": [],
            "state": {"serial": 3, "exists": True, "lineage": "x"}, "has_changes": True,
            "summary": {"run": 0, "unknown": 0, "restore": 0, "read": 0, "destroy": 0, "unchanged": 0, "deploy": 1},
            "resource_changes": [ch.to_dict()]}
    text = render_text(plan)
    assert "~ deployment.api  roll out clf@production version 3" in text
    assert "clf@production: version 1 -> 3 (rolling update)" in text and "1 deployment to roll out" in text
    assert ch.to_dict()["reasons"][0] == {"code": "serve_version", "path": "clf@production", "before": 1,
                                          "after": 3, "message": "clf@production: version 1 -> 3 (rolling update)"}
    md = render_markdown(plan)
    assert "deployment.api" in md and "1 deployment to roll out" in md
