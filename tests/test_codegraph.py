"""Change detection at the function: a python step re-runs when code its function reaches changes, and only then.

Through the CLI: a comment or an unrelated function in a shared module re-runs nothing; a function called
through two modules re-runs exactly the step that calls it and its descendants. Then the resolution rules
one by one on mlspec.codegraph (pure, over real files): constants, decorators, defaults, classes,
re-exports, function-local imports, import-time code, and the whole-module fallbacks.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import Project, run_cli
from mlspec.codegraph import CodeGraph, CodeMemo
from mlspec.hashing import HashCache

SPEC = """
project: shop
datasets:
  events: {uri: data/events.txt}
steps:
  load:
    run: shop.steps:load
    inputs: {raw: dataset.events}
    outputs: [rows]
  features:
    run: shop.steps:features
    inputs: {rows: step.load.rows}
    outputs: [feats]
  train:
    run: shop.steps:train
    inputs: {feats: step.features.feats}
    outputs: [model]
    params: {C: 2.0}
  report:
    run: shop.steps:report
    inputs: {model: step.train.model}
    metrics: [quality]
  count:
    run: shop.steps:count
    inputs: {rows: step.load.rows}
    metrics: [n]
"""

STEPS = '''
from shop import helpers


def load(raw: str):
    return {"rows": helpers.rows(raw)}


def features(rows: dict):
    return {"feats": helpers.scale(rows)}


def train(feats: int, C: float):
    return {"model": helpers.fit(feats, C)}


def report(model: dict):
    return {"quality": model["w"] / 10}


def count(rows: dict):
    return {"n": len(rows)}
'''

HELPERS = '''
"""Helpers shared by every step."""
from shop import mathx


def rows(path):
    with open(path) as fh:
        return [ln.strip() for ln in fh if ln.strip()]


def scale(rows):
    return len(rows) * 2


def fit(n, c):
    return {"w": mathx.weight(n, c)}


def unused():
    return "called by no step"
'''

MATHX = '''
def weight(n, c):
    return n * c
'''


@pytest.fixture
def shop(tmp_path) -> Project:
    p = Project(tmp_path / "shop")
    p.write("mlspec.yaml", SPEC)
    p.write("data/events.txt", "a\nb\nc\n")
    p.write("src/shop/__init__.py", "")
    p.write("src/shop/steps.py", STEPS)
    p.write("src/shop/helpers.py", HELPERS)
    p.write("src/shop/mathx.py", MATHX)
    r = p.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    return p


def planned(p: Project) -> dict:
    """address -> reason messages of every resource the plan would change."""
    r = p.run("plan", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    return {c["address"]: [x["message"] for x in c["reasons"]]
            for c in json.loads(r.stdout)["resource_changes"] if c["actions"] != ["no-op"]}


def edit(p: Project, rel: str, old: str, new: str) -> None:
    path = p.root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new))


def test_comment_and_unrelated_function_rerun_nothing_a_function_two_modules_away_reruns_its_callers(shop):
    # a comment, a docstring, blank lines and formatting in the shared module: nothing to do
    edit(shop, "src/shop/helpers.py", "def scale(rows):\n    return len(rows) * 2",
         'def scale(rows):\n    """Twice the rows."""\n    # the factor is arbitrary\n\n    return len( rows )*2  ')
    r = shop.run("plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout
    assert "No changes." in r.stdout
    # a function no step reaches
    edit(shop, "src/shop/helpers.py", 'return "called by no step"', 'return "still called by no step"')
    assert shop.run("plan", "--detailed-exitcode").returncode == 0
    runs = len(shop.runs())
    r = shop.apply()
    assert r.returncode == 0 and "No changes." in r.stdout and len(shop.runs()) == runs, r.stdout  # 0 re-runs
    # train -> helpers.fit -> mathx.weight: exactly train and its descendant re-run
    edit(shop, "src/shop/mathx.py", "return n * c", "return n * c + 1")
    assert planned(shop) == {"step.train": ["code src/shop/mathx.py:weight changed"],
                             "step.report": ["upstream step.train will re-run"]}
    r = shop.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert shop.ran() == {"step.train", "step.report"}


def test_constants_and_import_time_code_count(shop):
    edit(shop, "src/shop/helpers.py", "def scale(rows):\n    return len(rows) * 2",
         "FACTOR = 2\n\n\ndef scale(rows):\n    return len(rows) * FACTOR")
    assert planned(shop) == {"step.features": ["code src/shop/helpers.py:FACTOR is now used",
                                               "code src/shop/helpers.py:scale changed"],
                             "step.train": ["upstream step.features will re-run"],
                             "step.report": ["upstream step.train will re-run"]}
    assert shop.apply().returncode == 0
    edit(shop, "src/shop/helpers.py", "FACTOR = 2", "FACTOR = 3")
    assert set(planned(shop)) == {"step.features", "step.train", "step.report"}
    assert shop.apply().returncode == 0
    # code that runs when the module is imported concerns every step importing it (here, all of them)
    edit(shop, "src/shop/mathx.py", "def weight", "print('mathx imported')\n\n\ndef weight")
    changes = planned(shop)
    assert {a for a, reasons in changes.items() if "code src/shop/mathx.py:<module> changed" in reasons} == {
        "step.load", "step.features", "step.train", "step.report", "step.count"}


def test_plan_names_the_module_when_it_falls_back_to_all_of_it(shop):
    # a module used by a computed name cannot be resolved statically: all of it counts, comments still do not
    edit(shop, "src/shop/steps.py", 'return {"n": len(rows)}', 'return {"n": getattr(helpers, "sc" + "ale")(rows)}')
    reasons = planned(shop)["step.count"]
    assert {"code src/shop/helpers.py is now used", "code src/shop/steps.py:count changed"} <= set(reasons)
    assert shop.apply().returncode == 0
    edit(shop, "src/shop/helpers.py", "def unused():", "# a comment\ndef unused():")
    assert planned(shop) == {}
    edit(shop, "src/shop/helpers.py", 'return "called by no step"', 'return "now it counts"')
    assert planned(shop) == {"step.count": ["code src/shop/helpers.py changed"]}


def test_a_re_plan_over_unchanged_code_reads_no_source(shop):
    memo = shop.root / ".mlspec" / "cache" / "code.json"
    assert memo.is_file()
    before = memo.stat().st_mtime_ns
    assert shop.run("plan", "--detailed-exitcode").returncode == 0
    assert memo.stat().st_mtime_ns == before  # every analysis came from the memo: nothing parsed, nothing written
    memo.write_text("{not json")  # a damaged memo is only a cache
    r = shop.run("plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(memo.read_text())["modules"]


def test_state_recorded_by_file_reads_as_one_format_change(shop):
    from mlspec.state import State

    path = shop.root / ".mlspec/state/default.state.json"
    st = State.from_doc(json.loads(path.read_text()), str(path))
    for rec in st.resources.values():  # as an earlier mlspec recorded it: file hashes, no code_format
        if rec.get("kind") == "step":
            facts = rec["facts"]
            facts.pop("code_format")
            facts["code"] = {"src/shop/__init__.py": "xxh128:" + "0" * 32, "src/shop/steps.py": "xxh128:" + "1" * 32}
            rec["fingerprint"] = "xxh128:" + "2" * 32
    path.write_bytes(st.to_bytes())
    changes = planned(shop)
    assert changes["step.load"] == ["code fingerprint format changed (recorded by an earlier mlspec version)"]
    assert changes["step.count"][-1] == "code fingerprint format changed (recorded by an earlier mlspec version)"
    assert shop.apply().returncode == 0
    assert shop.run("plan", "--detailed-exitcode").returncode == 0


# --- resolution rules, on mlspec.codegraph directly ----------------------------------------------
def reach(tmp_path: Path, files: dict, target: str) -> dict:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    graph = CodeGraph(tmp_path, [tmp_path], HashCache(None), CodeMemo(None))
    return graph.reach(*target.split(":"))


def names(facts: dict) -> set:
    return {k for k in facts if not k.endswith(":<module>")}


def test_what_a_function_reaches(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.core import Model  # a re-export\n",
        "pkg/core.py": """
            import functools
            DEFAULT = 3
            LIMIT: int = 10
            def deco(f):
                return f
            def helper():
                return 1
            class Base:
                pass
            class Model(Base):
                def fit(self):
                    return helper()
            def other():
                return DEFAULT
            """,
        "pkg/steps.py": """
            import pkg
            from pkg import core as c
            from pkg.core import deco, DEFAULT

            @deco
            def train(x: "ignored", n=DEFAULT):
                m = pkg.Model()
                return m.fit()

            def late():
                from pkg.core import other
                return other()

            def lister(rows):
                other = [r for r in rows]      # a local that shadows a module name
                return [helper for helper in other]

            def limit():
                return c.LIMIT
            """,
    }
    assert names(reach(tmp_path, files, "pkg.steps:train")) == {
        "pkg/steps.py:train", "pkg/core.py:deco", "pkg/core.py:DEFAULT", "pkg/core.py:Model", "pkg/core.py:Base",
        "pkg/core.py:helper"}
    assert names(reach(tmp_path, files, "pkg.steps:late")) == {
        "pkg/steps.py:late", "pkg/core.py:other", "pkg/core.py:DEFAULT"}
    assert names(reach(tmp_path, files, "pkg.steps:lister")) == {"pkg/steps.py:lister"}
    assert names(reach(tmp_path, files, "pkg.steps:limit")) == {"pkg/steps.py:limit", "pkg/core.py:LIMIT"}
    # every module imported on the way has its import-time code counted, with parent packages
    assert {k for k in reach(tmp_path, files, "pkg.steps:limit") if k.endswith(":<module>")} == {
        "pkg/__init__.py:<module>", "pkg/core.py:<module>", "pkg/steps.py:<module>"}


def test_normal_form_ignores_comments_docstrings_and_layout_not_code(tmp_path):
    a = reach(tmp_path / "a", {"m.py": "def f(x):\n    return x + 1\n"}, "m:f")
    b = reach(tmp_path / "b", {"m.py": 'def f( x ):\n    """Doc."""\n    # why\n    return (x+1)\n'}, "m:f")
    c = reach(tmp_path / "c", {"m.py": "def f(x):\n    return x + 2\n"}, "m:f")
    d = reach(tmp_path / "d", {"m.py": "def f(x=1):\n    return x + 1\n"}, "m:f")
    assert a["m.py:f"] == b["m.py:f"] != c["m.py:f"] != d["m.py:f"] != a["m.py:f"]
    # the `if __name__ == "__main__":` block does not run on import
    e = reach(tmp_path / "e", {"m.py": "def f(x):\n    return x + 1\nif __name__ == '__main__':\n    f(1)\n"}, "m:f")
    assert e == a


@pytest.mark.parametrize("body, whole", [
    ("import importlib\ndef f(name):\n    return importlib.import_module(name)\n", {"m.py"}),
    ("import importlib\ndef f():\n    return importlib.import_module('other').g()\n", {"other.py"}),
    ("import other\ndef f(name):\n    return getattr(other, name)()\n", {"other.py"}),
    ("import other\ndef f():\n    return getattr(other, 'g')()\n", set()),
    ("import other\ndef f(run):\n    return run(other)\n", {"other.py"}),
    ("def f(name):\n    return globals()[name]()\n", {"m.py"}),
    ("from other import *\ndef f():\n    return g()\n", set()),
    ("def f(:\n", {"m.py"}),
])
def test_whole_module_fallbacks(tmp_path, body, whole):
    facts = reach(tmp_path, {"m.py": body, "other.py": "def g():\n    return 1\ndef h():\n    return 2\n"}, "m:f")
    assert {k for k in facts if ":" not in k} == whole
    if not whole:
        assert "other.py:g" in facts and "other.py:h" not in facts


def test_a_run_target_that_is_not_a_project_module_counts_as_installed(tmp_path):
    p = Project(tmp_path / "p")
    p.write("mlspec.yaml", "project: x\nsteps:\n  a: {run: json:dumps, params: {obj: 1}}\n")
    r = run_cli("-C", str(p.root), "plan", "--format", "json")
    assert r.returncode == 2 or r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["facts"]["code"]["a"] == {"module:json": "installed"}
