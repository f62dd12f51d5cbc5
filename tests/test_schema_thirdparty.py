"""The published JSON Schema works with third-party tools, not only with mlspec's own validator.

`check-jsonschema` (what CI pipelines and pre-commit hooks use) must accept every example spec and the
complete example of docs/spec.md, and reject invalid specs. The schema itself must be a valid draft 2020-12
schema, describe every property (editors show the descriptions on hover) and reject unknown keys on every
resource object (so a typo is an error, not a silently ignored key).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "schemas" / "mlspec.schema.json"
CHECK = Path(sys.executable).parent / "check-jsonschema"
CASES = REPO / "tests" / "cases" / "validate"


def _schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _docs_example() -> str:
    text = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- example: full -->\s*```yaml\n(.*?)```", text, re.S)
    assert m, "docs/spec.md has no `<!-- example: full -->` yaml block"
    return m.group(1)


def _examples() -> list[Path]:
    return sorted((REPO / "examples").glob("*/mlspec.yaml"))


def _check(path: Path) -> subprocess.CompletedProcess:
    assert CHECK.exists(), f"check-jsonschema is not installed next to {sys.executable} (pip install check-jsonschema)"
    return subprocess.run([str(CHECK), "--schemafile", str(SCHEMA_FILE), str(path)],
                          capture_output=True, text=True, timeout=120)


def _without_defaults(text: str, dest: Path) -> Path:
    """A copy of a spec without the Hydra defaults list (consumed by composition, absent after it)."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    data.pop("defaults", None)
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


VALID = [("docs-example", None)] + [(p.parent.name, p) for p in _examples()]


def _text(spec: Path | None) -> str:
    return _docs_example() if spec is None else spec.read_text(encoding="utf-8")


def test_there_are_examples():
    assert _examples(), "no examples/*/mlspec.yaml to check"


@pytest.mark.parametrize("name,spec", VALID, ids=[v[0] for v in VALID])
def test_valid_spec_passes_without_defaults(name, spec, tmp_path):
    copy_ = _without_defaults(_text(spec), tmp_path / f"{name}.yaml")
    proc = _check(copy_)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name,spec", VALID, ids=[v[0] for v in VALID])
def test_valid_spec_passes_as_written(name, spec, tmp_path):
    """The schema also admits the `defaults:` list, so an editor checking mlspec.yaml as written is happy."""
    f = tmp_path / f"{name}.yaml"
    f.write_text(_text(spec), encoding="utf-8")
    proc = _check(f)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_describes_defaults_as_a_list():
    prop = _schema()["properties"]["defaults"]
    assert prop["type"] == "array"
    assert "composition" in prop["description"].lower()


# not bad-dataset-format: plugins add data formats, so the schema takes any name and `mlspec validate`
# checks it against the installed ones (unknown-format)
INVALID_CASES = ["misspelt-key", "wrong-type", "missing-project", "run-and-cmd", "neither-run-nor-cmd",
                 "trigger-two-kinds", "negative-retries", "bad-timeout", "bad-memory", "invalid-step-name",
                 "unknown-top-level-key", "cron-four-fields"]


@pytest.mark.parametrize("case", INVALID_CASES)
def test_invalid_golden_spec_fails(case):
    proc = _check(CASES / case / "mlspec.yaml")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Schema validation errors" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _mutations() -> list[tuple[str, dict]]:
    base = yaml.safe_load(_docs_example())
    base.pop("defaults")
    out = []

    def mutate(name, fn):
        d = copy.deepcopy(base)
        fn(d)
        out.append((name, d))

    mutate("step-typo", lambda d: d["steps"]["train"].__setitem__("ouputs", ["model"]))
    mutate("dataset-extra", lambda d: d["datasets"]["customers"].__setitem__("path", "x.csv"))
    mutate("model-extra", lambda d: d["models"]["churn-clf"].__setitem__("stage", "prod"))
    mutate("deployment-extra", lambda d: d["deployments"]["churn-api"].__setitem__("host", "0.0.0.0"))
    mutate("monitor-extra", lambda d: d["monitors"]["churn-drift"].__setitem__("alert", "pager"))
    mutate("trigger-extra", lambda d: d["triggers"]["nightly"].__setitem__("cron", "0 2 * * *"))
    mutate("port-string", lambda d: d["deployments"]["churn-api"].__setitem__("port", "eighty"))
    mutate("port-range", lambda d: d["deployments"]["churn-api"].__setitem__("port", 70000))
    mutate("monitor-method", lambda d: d["monitors"]["churn-drift"].__setitem__("method", "kl"))
    mutate("no-project", lambda d: d.pop("project"))
    mutate("gate-no-op", lambda d: d["models"]["churn-clf"]["gates"].__setitem__("roc_auc", "0.7"))
    mutate("run-bad-format", lambda d: d["steps"]["train"].__setitem__("run", "churn/steps.py"))
    return out


MUTATIONS = _mutations()


@pytest.mark.parametrize("name,data", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutated_docs_example_fails(name, data, tmp_path):
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    proc = _check(f)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_schema_is_valid_draft_2020_12():
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_packaged_schema_is_the_repo_schema():
    from mlspec.schema import load_schema

    assert load_schema() == _schema()


def _subschemas(node, path="#"):
    """Yield (json-pointer, subschema) for every property schema: properties, patternProperties, $defs."""
    if isinstance(node, dict):
        for key in ("properties", "patternProperties", "$defs"):
            for name, sub in (node.get(key) or {}).items():
                if isinstance(sub, dict):
                    yield f"{path}/{key}/{name}", sub
        for key, value in node.items():
            yield from _subschemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _subschemas(value, f"{path}/{i}")


def test_every_property_has_a_description():
    subs = list(_subschemas(_schema()))
    assert len(subs) > 100  # the walk reaches the nested definitions
    missing = sorted({p for p, sub in subs if not str(sub.get("description", "")).strip()})
    assert not missing, f"properties without a description: {missing}"


def test_top_level_has_a_description():
    assert _schema()["description"].strip()


@pytest.mark.parametrize("name", ["step", "dataset", "model", "deployment", "monitor", "trigger"])
def test_resource_objects_reject_unknown_keys(name):
    d = _schema()["$defs"][name]
    assert d["type"] == "object"
    assert d["additionalProperties"] is False
    assert d["properties"]


def test_top_level_rejects_unknown_keys():
    assert _schema()["additionalProperties"] is False
