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


# --- interpolation: plain forms resolve on the fast path, everything else through Hydra --------------------

def _compose_both(work: Path, monkeypatch, overrides=()) -> tuple:
    """(fast-path-or-fallback result, Hydra result, whether the fast path applied), each as what a user
    sees: data, diagnostics, and which paths are sensitive."""
    def seen(c):
        return c.data, [(d.file, d.line, d.column, d.path, d.code, d.message) for d in c.diagnostics], \
            sorted(map(str, c.sensitive.paths)), sorted(c.sensitive.values)

    fast, slow, used_fast = _both(work, list(overrides), monkeypatch)
    return seen(fast), seen(slow), used_fast


PLAIN = {
    "absolute, whole values keep their type": """
        project: demo
        base: {lr: 0.01, epochs: 3, name: run, flag: true, none: null, tags: [a, b]}
        lr: ${base.lr}
        epochs: ${base.epochs}
        flag: ${base.flag}
        none: ${base.none}
        tags: ${base.tags}
        whole: ${base}
    """,
    "absolute, inside strings": """
        project: demo
        base: {lr: 0.01, epochs: 3, name: run}
        description: "${project}: ${base.name} for ${base.epochs} epochs at ${base.lr}"
        dollars: "$${base.epochs} costs $$"
    """,
    "relative: the mapping that holds the value, and its parents": """
        project: demo
        steps:
          train:
            run: m.s:train
            params: {C: 1.0, label: "C=${.C}", up: "${..run}", top: "${...train.run}", root: "${....project}"}
    """,
    "lists: items, indices, and relative refs inside them": """
        project: demo
        sizes: [8, 16, "${.0}", "${sizes.1}"]
        first: ${sizes.0}
        nested: {grid: [[1, 2], ["${nested.grid.0.1}"]]}
    """,
    "chains of interpolations and a container with interpolations inside": """
        project: demo
        a: ${b}
        b: ${c}
        c: {x: "${d}", y: ["${d}-${d}"]}
        d: 5
        e: "${c.x}!"
    """,
    "escapes: \\\\${...} is a literal ${...}": """
        project: demo
        a: 3
        literal: "\\\\${a} is written, ${a} is resolved"
        only: "\\\\${not.a.key}"
    """,
    "cmd placeholders stay for run time; other interpolations in cmd resolve": """
        project: demo
        lr: 0.5
        steps:
          s:
            cmd: "python t.py ${inputs.data} ${outputs.model} --lr ${params.lr} --tag ${project} \\\\${HOME}"
            inputs: {data: dataset.d}
            outputs: [model]
            params: {lr: "${lr}"}
          t:
            cmd: "echo ${steps.s.cmd}"
        notcmd: "${lr}"
    """,
    "a secret written in the spec, interpolated elsewhere: sensitive on both paths": """
        project: demo
        secrets: {api: s3cr3t-value-long}
        steps:
          s:
            run: m.s:f
            params: {auth: "Bearer ${secrets.api}", again: "${.auth}"}
    """,
    "edge forms: empty, numeric-looking and unicode text, exponents, dashes, a $ before an interpolation": """
        project: demo
        empty: ""
        zeros: "007"
        big: 1e20
        small: 1.5e-7
        x-y: 1
        uni: é
        through: ${lit}
        lit: '\\${not.resolved}'
        out: ["${empty}", "x${empty}y", "v${zeros}", "${zeros}", "v${big}", "${small}", "${x-y}", "→${uni}",
              "${uni}{x}", "${x-y}${x-y}", "$${big}"]
        rows: [{a: 1, b: "${.a}", c: "${..0.a}"}]
    """,
}

HYDRA = {
    "an environment resolver": """
        project: demo
        home: ${oc.env:HOME}
        other: ${oc.env:MLSPEC_TEST_UNSET_VAR,fallback}
    """,
    "a secret from the environment": """
        project: demo
        secrets: {api: "${oc.env:HOME}"}
        steps: {s: {run: m.s:f, params: {auth: "${secrets.api}"}}}
    """,
    "a missing key: the same located error": """
        project: demo
        a: 1
        b: ${nope.x}
        c: "text ${a} and ${nope}"
    """,
    "a missing relative key": """
        project: demo
        x: {a: "${.missing}", b: "${...too.high}"}
    """,
    "a cycle: the same error": """
        project: demo
        a: ${b}
        b: "x${c}"
        c: ${a}
    """,
    "a self reference": """
        project: demo
        a: {b: "${a}"}
    """,
    "a container inside a string": """
        project: demo
        m: {k: 1}
        s: "m is ${m}"
    """,
    "a boolean or null inside a string": """
        project: demo
        f: true
        n: null
        s: "${f} and ${n}"
    """,
    "bracket and whitespace forms": """
        project: demo
        l: [1, 2]
        a: ${l[0]}
        b: ${ l.1 }
    """,
    "an escaped backslash before an interpolation, and other backslashes": """
        project: demo
        a: 1
        b: "\\\\\\\\${a}"
        c: "C:\\\\dir ${a}"
    """,
    "an unparsable interpolation: the same error": """
        project: demo
        a: "${oops"
        b: "${}"
    """,
    "a value that is ??? (missing)": """
        project: demo
        a: ???
        b: ${a}
    """,
    "a number as a key, a key starting with a digit, dots above the root": """
        project: demo
        m: {1: a, 1a: q}
        r: ${m.1}
        s: ${m.1a}
        t: {u: "${...project}"}
    """,
    "a resolver in a nested interpolation": """
        project: demo
        a: ${b}
        b: ${oc.select:c,1}
        c: 2
    """,
}


def _write(tmp_path: Path, text: str) -> Path:
    import textwrap

    work = tmp_path / "p"
    work.mkdir()
    (work / "mlspec.yaml").write_text(textwrap.dedent(text))
    return work


@pytest.mark.parametrize("text", PLAIN.values(), ids=PLAIN.keys())
def test_plain_interpolations_resolve_on_the_fast_path_exactly_as_hydra(text, monkeypatch, tmp_path):
    fast, slow, used_fast = _compose_both(_write(tmp_path, text), monkeypatch)
    assert fast == slow
    assert used_fast, "plain interpolations should not need Hydra"


@pytest.mark.parametrize("text", HYDRA.values(), ids=HYDRA.keys())
def test_what_is_not_plain_goes_through_hydra_with_its_result_or_error(text, monkeypatch, tmp_path):
    work = _write(tmp_path, text)
    try:
        fast, slow, used_fast = _compose_both(work, monkeypatch)
    except Exception as exc:  # both paths must refuse it with the same message
        monkeypatch.setenv("MLSPEC_COMPOSE", "hydra")
        with pytest.raises(type(exc)) as again:
            compose(work, None, [])
        assert str(again.value) == str(exc)
        return
    assert fast == slow
    assert not used_fast


def test_interpolations_in_config_groups_and_with_overrides(monkeypatch, tmp_path):
    work = _write(tmp_path, """
        defaults: [{env: dev}, _self_]
        project: demo
        lr: 0.1
        steps: {s: {run: m.s:f, params: {lr: "${lr}", where: "${env.name}", bucket: "${env.bucket}"}}}
    """)
    (work / "env").mkdir()
    (work / "env" / "dev.yaml").write_text("name: dev\nbucket: data-${env.name}-${project}\n")
    (work / "env" / "prod.yaml").write_text("name: prod\nbucket: data-${.name}\n")
    for overrides in ([], ["lr=0.2"], ["env=prod"], ["env=prod", "+extra=1"]):
        fast, slow, used_fast = _compose_both(work, monkeypatch, overrides)
        assert fast == slow, overrides
        assert used_fast, overrides
    assert fast[0]["steps"]["s"]["params"] == {"lr": 0.1, "where": "prod", "bucket": "data-prod"}


def test_cmd_placeholders_reach_the_step_unresolved(monkeypatch, tmp_path):
    """`${inputs.X}` and friends are filled in when the step runs, by the same code on both paths."""
    work = _write(tmp_path, """
        project: demo
        steps:
          s: {cmd: "cp ${inputs.src} ${outputs.dst} # ${params.n} ${project}", inputs: {src: dataset.d},
              outputs: [dst], params: {n: 2}}
    """)
    fast, slow, used_fast = _compose_both(work, monkeypatch)
    assert used_fast and fast == slow
    assert fast[0]["steps"]["s"]["cmd"] == "cp ${inputs.src} ${outputs.dst} # ${params.n} demo"
