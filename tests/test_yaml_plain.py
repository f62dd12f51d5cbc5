"""mlspec.yamlplain: the line reader gives libyaml's data, type for type, or declines.

Differential tests: generated files (random trees written in random styles, with the scalars YAML 1.1
types in surprising ways), the same files mutated character by character, and every YAML file in the
repository. A file libyaml refuses must be declined.
"""

from __future__ import annotations

import math
import subprocess

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from conftest import REPO
from mlspec import yamlsrc
from mlspec.yamlplain import Decline, load_plain

TRICKY = ["yes", "No", "on", "OFF", "y", "n", "~", "null", "Null", "true", "False", "1", "-1", "+1", "0", "012",
          "0x1F", "0o17", "0b101", "1_000", "1.5", "1e3", "-1e-3", ".5", "1.", "inf", ".inf", "-.Inf", ".nan",
          "1:30", "12:30:45", "2020-01-01", "2020-01-01 10:00:00", "a b", "a:b", "a: b", "a #b", "a#b", "-a", "- a",
          "?a", ":a", "@a", "`a", "%a", "!a", "&a", "*a", "|", "> x", "[a]", "{a}", "a,b", "it's", "a\\b", "ü",
          "日本", "=", "<<", "a:", "x ", " x", "step.s0001.out", "bench.steps:step", "s3://b/k", "${x.y}",
          "#", "a # b", "'", '"', "-", "--", "---", "...", "a\tb", "\u00a0", "1.0", "0.1", "1e-3", "NaN"]
NAMES = ["a", "b", "name", "run", "steps", "C", "1", "yes", "x y", "k:v", "~", "-k", "null", "on", "2", "a#b"]


def same(a, b) -> bool:
    """Equal and of the same types all the way down (1, 1.0 and True differ; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (len(a) == len(b) and all(type(x) is type(y) and x == y for x, y in zip(a, b))
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def libyaml(text: str):
    loader = yamlsrc._Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check(text: str) -> bool:
    """True when the reader read the text (and agreed with libyaml), False when it declined."""
    try:
        ref = libyaml(text)
        ref_error = None
    except Exception as exc:  # noqa: BLE001 - libyaml refusing the text is one of the outcomes compared
        ref, ref_error = None, exc
    try:
        got = load_plain(text, yamlsrc._Loader)
    except Decline:
        return False
    assert ref_error is None, f"libyaml refuses this text ({ref_error}) but the reader read {got!r}:\n{text}"
    assert same(got, ref), f"the reader read {got!r}, libyaml {ref!r}:\n{text}"
    return True


# --- generated files -------------------------------------------------------------------------------
scalars = st.sampled_from(TRICKY) | st.text(alphabet="ab1 :#-.'\"_", min_size=1, max_size=6)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=4),
    max_leaves=12)


def quote(s: str, style: int) -> str:
    if style == 1:
        return "'" + s + "'"
    if style == 2:
        return '"' + s + '"'
    return s


@st.composite
def documents(draw) -> str:
    width = draw(st.sampled_from([2, 3, 4]))
    lines: list[str] = []

    def scalar(v: str) -> str:
        text = quote(v, draw(st.integers(0, 2)))
        if draw(st.integers(0, 5)) == 0:
            text += draw(st.sampled_from(["  # note", " #", "   ", "#x"]))
        return text

    def emit(node, indent: int) -> None:
        pad = " " * indent
        if isinstance(node, dict):
            for k, v in node.items():
                key = quote(k, draw(st.integers(0, 3)) % 3 if draw(st.booleans()) else 0)
                if isinstance(v, (dict, list)) and v:
                    if isinstance(v, list) and all(isinstance(x, str) for x in v) and draw(st.booleans()):
                        sep = draw(st.sampled_from([", ", ",", ",\n" + pad + " " * width, " ,\n" + pad + "  "]))
                        lines.append(f"{pad}{key}: [{sep.join(scalar(x) for x in v)}]")
                        continue
                    lines.append(f"{pad}{key}:" + draw(st.sampled_from(["", " # c", "  "])))
                    indentless = isinstance(v, list) and draw(st.booleans())
                    emit(v, indent if indentless else indent + width)
                elif isinstance(v, (dict, list)):
                    lines.append(f"{pad}{key}: {'{}' if isinstance(v, dict) else '[]'}")
                elif draw(st.integers(0, 4)) == 0:  # a block scalar of a few lines, now and then an odd one
                    header = draw(st.sampled_from(["|", "|-", ">", ">-", "|+", "|2", "> # c"]))
                    lines.append(f"{pad}{key}: {header}")
                    for part in [v] + draw(st.lists(st.sampled_from(TRICKY), max_size=2)):
                        lines.append(pad + " " * width + draw(st.sampled_from(["", "", "", " "])) + part.strip(" "))
                        if draw(st.integers(0, 8)) == 0:
                            lines.append("")
                else:
                    lines.append(f"{pad}{key}: {scalar(v)}")
                if draw(st.integers(0, 6)) == 0:
                    lines.append(draw(st.sampled_from(["", "# comment", pad + "# indented comment", "   "])))
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, dict) and item:
                    first = True
                    for k, v in item.items():
                        lead = pad + "- " if first else pad + "  "
                        first = False
                        if isinstance(v, (dict, list)) and v:
                            lines.append(f"{lead}{quote(k, 0)}:")
                            emit(v, indent + 2 + width)
                        elif isinstance(v, (dict, list)):
                            lines.append(f"{lead}{quote(k, 0)}: []")
                        else:
                            lines.append(f"{lead}{quote(k, 0)}: {scalar(v)}")
                elif isinstance(item, (dict, list)):
                    lines.append(f"{pad}- []")
                else:
                    lines.append(f"{pad}- {scalar(item)}")

    root = draw(st.dictionaries(st.sampled_from(NAMES), trees, min_size=1, max_size=5))
    emit(root, 0)
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_files_read_as_libyaml_reads_them(text):
    check(text)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(
    [":", ": ", "-", "- ", " ", "  ", "#", " #", "'", '"', "\n", "\n  ", "[", "]", "{", "}", ",", "&a ", "*a",
     "!", "|", "?", "\\", "\t", "x", "", "~", "---\n"])), min_size=1, max_size=4))
def test_mutated_files_are_read_as_libyaml_reads_them_or_declined(text, edits):
    for pos, ins in edits:
        pos %= len(text) + 1
        cut = 1 if ins == "" else 0  # "" deletes a character
        text = text[:pos] + ins + text[pos + cut:]
    check(text)


def test_a_typical_spec_is_read_and_the_odd_ones_declined():
    spec = """\
project: demo  # the name
datasets:
  raw:
    uri: data/raw.csv
steps:
  train:
    run: demo.steps:train
    inputs: {}
    outputs: [model, metrics]
    description: 'the model: trained'
    params:
      C: 1e-3
      on: yes
      when: 2020-01-01
      big: 1_000
      octal: 012
    matrix:
      seed:
      - 1
      - 2
"""
    assert check(spec)
    data = load_plain(spec, yamlsrc._Loader)
    assert data["steps"]["train"]["params"] == {"C": 0.001, True: True, "when": "2020-01-01", "big": 1000,
                                                "octal": 10}
    for odd in ["a: &x 1\nb: *x\n", "a: |+\n  text\n", "a: >\n  x\n    y\n", "a: |\n  x\n\n  y\n", "a: !!str 1\n", "- a\n", "a: b\na: c\n",
                "a:\n\tb: 1\n", "? a\n: b\n", "a: 'it''s'\n", 'a: "x\\ny"\n', "a: b\n  c\n", "---\na: 1\n",
                "<<: {}\n", "~: 1\n", "a: [b, {c}]\n", "a: [b,\n# c\n  d]\n",
                "a: [b,\nc]\n", "a: ['b',\n  c]\n"]:
        with pytest.raises(Decline):
            load_plain(odd, yamlsrc._Loader)
    # a flow collection over several lines, as long lists are written
    assert check("a:\n  b: [x, y,\n    z]\n  c: {k: [1,\n       2], j: v}\n- \n") is False  # (a stray dash)
    assert check("a:\n  b: [x, y,\n    z]\n  c: {k: [1,\n       2], j: v}\n")


def repo_yaml_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.yaml", "*.yml"], cwd=REPO, capture_output=True, text=True)
    return [f for f in out.stdout.split() if (REPO / f).is_file()]


def test_every_yaml_file_of_the_repository():
    files = repo_yaml_files()
    read = [f for f in files if check((REPO / f).read_text(encoding="utf-8", errors="replace"))]
    assert len(files) > 50
    # the examples' specs are the shape this reader exists for: it must not decline them
    specs = [f for f in files if f.startswith("examples/") and f.endswith("mlspec.yaml")]
    assert specs and set(specs) <= set(read), sorted(set(specs) - set(read))


@pytest.mark.parametrize("shape", ["nested blocks", "sequence of mappings", "indentless sequence", "comments",
                                   "flow sequence", "quoted", "block scalar"])
def test_the_generated_files_exercise_the_reader_not_only_its_declines(shape):
    """Each shape of the generator is read (not declined) in some generated file: the comparisons above
    compare data, not only declines."""
    wanted = {
        "nested blocks": lambda t: t.count("\n      ") >= 2,
        "sequence of mappings": lambda t: "- " in t and any(ln.strip().startswith("- ") and ": " in ln
                                                            for ln in t.splitlines()),
        "indentless sequence": lambda t: any(a.rstrip().endswith(":") and b.startswith(a[:len(a) - len(a.lstrip())] + "- ")
                                             for a, b in zip(t.splitlines(), t.splitlines()[1:])),
        "comments": lambda t: " # " in t or "\n#" in t,
        "flow sequence": lambda t: ": [" in t and not t.split(": [", 1)[1].startswith("]"),
        "quoted": lambda t: ": '" in t or ': "' in t,
        "block scalar": lambda t: ": |\n" in t or ": >-\n" in t,
    }[shape]
    find(documents(), lambda t: wanted(t) and check(t), settings=settings(max_examples=5000, database=None))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b1", "yes", "1", "~", "x y", "1.5", "-2", "on", "{k: v}", "[1, 2]", "{}"]),
                min_size=1, max_size=6),
       st.lists(st.sampled_from([", ", ",", " , ", ",\n    ", ",\n      ", " ,\n    "]), min_size=6, max_size=6),
       st.booleans())
def test_long_flow_lists_over_several_lines(items, seps, mapping):
    keys = [f"k{i}: " if mapping else "" for i in range(len(items))]
    body = keys[0] + items[0] + "".join(sep + k + item for sep, k, item in zip(seps, keys[1:], items[1:]))
    text = f"top:\n  key: {'{' if mapping else '['}{body}{'}' if mapping else ']'}\n  next: 1\n"
    assert check(text)
