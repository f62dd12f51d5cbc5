"""The finite sets are enums, and the published schemas are checked against them so they cannot drift;
`apply --format json` is read line by line as a CI system would, each line valid against its schema."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from mlspec.core.types import Action, EventKind, Reason, ReasonCode, Status, Verdict

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def test_every_reason_code_has_a_message():
    for code in ReasonCode:  # (tests/test_docs.py checks that docs/plan.md lists each)
        assert Reason(code, "params.x", 1, 2).text()


def test_plan_schema_matches_the_enums():
    item = _schema("plan.schema.json")["properties"]["resource_changes"]["items"]["properties"]
    assert set(item["reasons"]["items"]["properties"]["code"]["enum"]) == {c.value for c in ReasonCode}
    assert set(item["actions"]["items"]["enum"]) == {a.value for a in Action}
    assert set(item["verdict"]["enum"]) == {v.value or None for v in Verdict}


def test_events_schema_matches_the_enums():
    branches = {b["properties"]["type"]["const"]: b for b in _schema("events.schema.json")["oneOf"]}
    event = branches["event"]["properties"]
    assert set(event["event"]["enum"]) == {e.value for e in EventKind}
    assert set(event["status"]["enum"]) == {s.value for s in Status}


def _stream(r) -> list[dict]:
    validator = Draft202012Validator(_schema("events.schema.json"))
    lines = [json.loads(line) for line in r.stdout.splitlines()]  # every line is one JSON object
    for obj in lines:
        errors = list(validator.iter_errors(obj))
        assert not errors, (obj, [e.message for e in errors])
    return lines


def test_apply_json_stream_is_read_as_ci_would(project):
    r = project.run("apply", "--auto-approve", "--format", "json")
    assert r.returncode == 0, r.stderr
    lines = _stream(r)
    assert [l["type"] for l in lines[:2]] == ["plan", "apply_start"] and lines[-1]["type"] == "apply_summary"
    finished = {l["address"] for l in lines if l["type"] == "event" and l["event"] == "finished"}
    assert finished == project.ran()
    assert lines[-1]["status"] == "succeeded" and lines[-1]["counts"]["ran"] == len(finished)
    assert lines[1]["resources"] == len(project.last_run()["steps"])

    noop = _stream(project.run("apply", "--auto-approve", "--format", "json"))
    assert [l["type"] for l in noop] == ["plan", "apply_summary"] and noop[-1]["status"] == "no-changes"


def test_apply_json_reports_a_failure(project):
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("demo.steps:evaluate", "demo.steps:boom").replace(
        "inputs: {model: step.train.model}", "inputs: {clean: step.prepare.clean}"))
    r = project.run("apply", "--auto-approve", "--format", "json")
    assert r.returncode == 1
    lines = _stream(r)
    failed = [l for l in lines if l["type"] == "event" and l["event"] == "failed"]
    assert failed and "boom" in failed[0]["error"]
    assert lines[-1]["status"] == "failed"
    assert "resume with" in r.stderr  # the human lines go to stderr, stdout stays JSON


def test_apply_json_needs_no_terminal(project):
    r = project.run("apply", "--format", "json")
    assert r.returncode == 1 and "--auto-approve" in r.stderr
