"""The schema's fast yes/no checks agree with jsonschema.

`mlspec validate` asks a compiled predicate "is the spec valid?" and runs jsonschema only when the answer is
no (jsonschema then writes the diagnostics). Two compilers exist: generated Python source (mlspec.schema._Gen,
the one used) and nested closures (mlspec.schema._compile, the fallback for a keyword the generator lacks).
A predicate that said yes to an invalid spec would hide its errors, so here every schema of mlspec (the
spec's and the record formats') is checked on the documented example spec, on many mutations of it
(deleted keys, values replaced by other types, unknown keys, bad names) and on hand-picked edge values:
both predicates must give exactly jsonschema's verdict.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from mlspec import schema as sch

REPO = Path(__file__).resolve().parents[1]
DOCS_EXAMPLE = yaml.safe_load(re.search(r"<!-- example: full -->\s*```yaml\n(.*?)```",
                                        (REPO / "docs" / "spec.md").read_text(encoding="utf-8"), re.S).group(1))
SCHEMAS = sorted(p.name for p in (REPO / "schemas").glob("*.schema.json"))


def verdicts(name: str, instance) -> tuple[bool, bool, bool]:
    generated = sch._fast_check(name, True)
    closures = sch._fast_check(name, False)
    assert generated is not None and closures is not None
    return generated(instance), closures(instance), Draft202012Validator(sch.load_schema(name)).is_valid(instance)


def test_the_spec_schema_is_generated():
    """The spec's schema uses only keywords the generator handles (else validate would be slower again)."""
    check = sch._fast_check("mlspec.schema.json", True)
    assert check.__name__.startswith("_s"), check
    assert check is not sch._fast_check("mlspec.schema.json", False)


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_compiles_both_ways(name):
    assert sch._fast_check(name, True) is not None
    assert sch._fast_check(name, False) is not None
    assert len(set(verdicts(name, {}))) == 1


def test_docs_example_is_valid_for_all_three():
    assert verdicts("mlspec.schema.json", DOCS_EXAMPLE) == (True, True, True)


EDGE_VALUES = [None, True, False, 0, 1, -1, 2.0, 2.5, -0.5, 1e300, "", "x", "step.a.b", "1abc", "a b", "A_b-1",
               [], [1], ["a", "a"], ["a", "b"], [{}], {}, {"a": 1}, {"run": "m:f"}, {"cmd": "x"},
               {"run": "m:f", "cmd": "x"}, {"1": 2}, {"x-ext": {}}]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


ALL_PATHS = list(_paths(DOCS_EXAMPLE))


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def test_edge_values_at_every_path():
    """Each edge value put at each place of the example: 28 values x every key path."""
    disagreements = []
    for path in ALL_PATHS[1:]:
        for value in EDGE_VALUES:
            doc = copy.deepcopy(DOCS_EXAMPLE)
            _set(doc, path, copy.deepcopy(value))
            v = verdicts("mlspec.schema.json", doc)
            if len(set(v)) != 1:
                disagreements.append((path, value, v))
    assert not disagreements, disagreements[:5]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, width=32) |
    st.sampled_from(["", "a", "step.train.model", "dataset.x", "m.mod:fn", "1x", "x-y", "*/5 * * * *", "10m",
                     "4Gi", ">= 0.8", "@daily"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["run", "cmd", "inputs", "outputs", "params", "path", "type", "format", "from", "uri",
                         "x-a", "name", "1", "metrics", "matrix", "keys", "count"]), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_of_the_example(data):
    doc = copy.deepcopy(DOCS_EXAMPLE)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))[1:]
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        if op == "replace":
            parent[path[-1]] = data.draw(json_values)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["bogus", "x-new", "Name", "9", "run", "cmd"]))] = data.draw(json_values)
    v = verdicts("mlspec.schema.json", doc)
    assert len(set(v)) == 1, (v, doc)


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(SCHEMAS), json_values)
def test_random_documents_against_every_schema(name, doc):
    v = verdicts(name, doc)
    assert len(set(v)) == 1, (name, v, doc)
