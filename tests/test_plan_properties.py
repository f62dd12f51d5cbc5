"""Planning is deterministic (same inputs, byte-identical JSON) and pure (nothing but the hash cache is
written); re-planning over unchanged data reads no data bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlspec.fingerprint import Facts
from mlspec.core.kind import all_nodes
from mlspec.load import load_spec
from mlspec.plan import make_plan
from mlspec.project import Project
from mlspec.state import State


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "cache" not in p.relative_to(root).parts and "__pycache__" not in p.parts:
            st_ = p.stat()
            out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def test_plan_command_is_deterministic_and_pure(project):
    assert project.apply().returncode == 0
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("scale: 2.0", "scale: 4.0"))
    before = _snapshot(project.root)
    outs = [project.run("plan", "--format", "json").stdout for _ in range(3)]
    assert outs[0] == outs[1] == outs[2]
    assert json.loads(outs[0])["has_changes"]
    assert _snapshot(project.root) == before, "plan wrote something besides the hash cache"


def test_a_plan_that_restores_from_the_run_cache_is_pure(project):
    """Planning reads the run-cache (a restore) but writes nothing besides the hash cache."""
    assert project.apply().returncode == 0
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("scale: 2.0", "scale: 4.0"))
    assert project.apply().returncode == 0
    project.write("mlspec.yaml", spec)  # back to 2.0: that fingerprint is in the run-cache
    before = _snapshot(project.root)
    outs = [project.run("plan", "--format", "json").stdout for _ in range(2)]
    assert outs[0] == outs[1]
    verdicts = {c["address"]: c["verdict"] for c in json.loads(outs[0])["resource_changes"]}
    assert verdicts["step.prepare"] == "restore"
    assert _snapshot(project.root) == before, "a restoring plan wrote something besides the hash cache"


def test_replan_over_unchanged_data_reads_no_bytes(project):
    assert project.apply().returncode == 0
    first = Project.open(project.root)
    first.plan()
    second = Project.open(project.root)
    second.plan()
    assert second.cache.bytes_read == 0
    # touching the file (same content) re-reads it once, and the plan still shows no change
    data = project.root / "data/nums.csv"
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 5 * 10**9))
    third = Project.open(project.root)
    plan, *_ = third.plan()
    assert third.cache.bytes_read == data.stat().st_size
    assert not plan.has_changes


params = st.dictionaries(st.sampled_from(["a", "b", "lr", "depth"]),
                         st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False, width=32),
                                   st.text(max_size=5), st.booleans()), max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p1=params, p2=params, recorded=st.booleans(), shuffle=st.randoms(use_true_random=False))
def test_make_plan_is_a_pure_deterministic_function(project, p1, p2, recorded, shuffle):
    """make_plan() on the same Spec/State/Facts gives byte-identical JSON, whatever the dict order."""
    spec = load_spec(project.root)
    spec_a = spec.__class__(**{**spec.__dict__, "steps": {
        **spec.steps, "prepare": spec.steps["prepare"].__class__(**{**spec.steps["prepare"].__dict__,
                                                                     "params": {**p1, "scale": 2.0}})}})
    facts = Facts(datasets={"dataset.nums": {"hash": "xxh128:" + "1" * 32, "size": 12, "uri": "data/nums.csv"}},
                  code={n: {"src/demo/steps.py": "xxh128:" + "2" * 32} for n in spec.steps})
    state = State(lineage="l-1", serial=3, resources={})
    if recorded:
        plan0 = make_plan(spec_a, state, facts)
        for ch in plan0.changes:
            if ch.kind == "step" and ch.fingerprint:
                state.resources[ch.address] = {"kind": "step", "status": "succeeded", "fingerprint": ch.fingerprint,
                                               "facts": {"params": p2},
                                               "outputs": {o: {"hash": f"xxh128:{ch.address}:{o}"}
                                                           for o in spec.steps[ch.address[5:].split("[")[0]].outputs}}
    items = list(state.resources.items())
    shuffle.shuffle(items)
    state2 = State(lineage="l-1", serial=3, resources=dict(items))
    a = json.dumps(make_plan(spec_a, state, facts).to_dict(), sort_keys=True)
    b = json.dumps(make_plan(spec_a, state2, facts, nodes=all_nodes(spec_a)).to_dict(), sort_keys=True)
    assert a == b
