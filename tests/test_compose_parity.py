"""The Hydra-free fast path of compose() gives exactly what Hydra gives, wherever it applies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlspec import compose as compose_mod
from mlspec.compose import compose

REPO = Path(__file__).resolve().parents[1]
PROJECTS = [REPO / "examples/churn", REPO / "examples/minimal", REPO / "tests/cases/validate/valid-env-groups"]


def _both(project: Path, overrides: list[str], monkeypatch) -> tuple:
    calls = []
    real = compose_mod.compose_fast

    def spy(*a, **kw):
        out = real(*a, **kw)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(compose_mod, "compose_fast", spy)
    monkeypatch.delenv("MLSPEC_COMPOSE", raising=False)
    fast = compose(project, None, overrides)
    monkeypatch.setenv("MLSPEC_COMPOSE", "hydra")
    slow = compose(project, None, overrides)
    return fast, slow, calls == [True]


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
@pytest.mark.parametrize("overrides", [
    [], ["backend=local"], ["steps.train.params.C=0.5"], ["+steps.train.description=hello"],
    ["++storage.workspace=staging"], ["project=other-name"], ["env=prod"],
], ids=str)
def test_fast_path_matches_hydra(project, overrides, monkeypatch, tmp_path):
    work = tmp_path / "p"
    shutil.copytree(project, work, ignore=shutil.ignore_patterns(".mlspec", "__pycache__"))
    try:
        fast, slow, used_fast = _both(work, overrides, monkeypatch)
    except Exception as exc:  # an override that does not apply to this project: both paths must refuse it
        monkeypatch.setenv("MLSPEC_COMPOSE", "hydra")
        with pytest.raises(type(exc)):
            compose(work, None, overrides)
        return
    assert fast.data == slow.data
    assert {k: v for k, v in fast.choices.items() if not k.startswith("hydra")} == \
        {k: v for k, v in slow.choices.items() if not k.startswith("hydra") and v is not None}
    if project.name != "valid-env-groups" and not any(o.startswith("env=") for o in overrides):
        assert used_fast, "the fast path should have applied"


scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: round(f, 4)),
                    st.sampled_from(["abc", "x_1", "1e-3", "2026-01-01", "on", "yes", "0.5", "a/b.c", ""]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), scalars, max_size=6),
       value=st.sampled_from(["0.5", "7", "true", "null", "abc", "1e-3", "a/b"]))
def test_scalars_and_overrides_parse_the_same(params, value, monkeypatch, tmp_path_factory):
    import yaml

    work = tmp_path_factory.mktemp("p")
    spec = {"project": "demo", "steps": {"a": {"run": "m.s:f", "params": params or {"k": 1}}}}
    (work / "mlspec.yaml").write_text(yaml.safe_dump(spec, default_flow_style=False))
    key = sorted(params)[0] if params else "k"
    fast, slow, used_fast = _both(work, [f"steps.a.params.{key}={value}"], monkeypatch)
    assert fast.data == slow.data
