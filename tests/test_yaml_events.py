"""Reading a spec file from libyaml's events gives what the node tree gives, or steps aside.

mlspec.yamlsrc reads a file of plain mappings, lists and scalars straight from the parser's events (no node
tree: a third faster on a 50,000-step spec) and leaves everything else (anchors, aliases, tags, merge keys,
null or duplicate keys, several documents, syntax errors) to the general reader, which reports it. Here the
two are run on the same texts, generated and hand-written: the data, the positions of every key and value
(computed later from the text) and every diagnostic must be the same.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlspec import yamlsrc
from mlspec.errors import SpecError


def outcome(text: str, events: bool):
    saved = yamlsrc._data_from_events
    if not events:
        def unusual(_text):
            raise yamlsrc._Unusual
        yamlsrc._data_from_events = unusual
    try:
        src = yamlsrc.parse_yaml(text, "f.yaml", require_mapping=False)
        return "ok", src.data, src.key_marks, src.value_marks
    except SpecError as exc:
        return "error", [(d.file, d.line, d.column, d.path, d.code, d.message) for d in exc.diagnostics]
    finally:
        yamlsrc._data_from_events = saved


HAND_WRITTEN = [
    "", "null\n", "just text\n", "[1, 2]\n", "a: 1\nb: [1, 2, {c: d}]\n", "a: {b: {c: [[], {}]}}\n",
    "a: 1\na: 2\n", "~: 1\n", "? \n: 1\n", "1: a\n1.0: b\n", "true: 1\n1: 2\n",
    "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: !custom 1\n", "<<: {a: 1}\nb: 2\n", "? [a]\n: 1\n", "? {a: 1}\n: 2\n",
    "a: b\n---\nc: d\n", "--- a\n...\n", "a: [\n", "a:\n\tb: 1\n", "a: b: c\n", "\x07a: 1\n",
    "x: 'quoted'\ny: \"1\"\nz: yes\nw: 1e-3\nv: 0x1F\nu: 1_000\nt: 1:30\ns: .inf\nr: -.NaN\nq: 2001-01-01\n",
    "a: |\n  line\n  two\nb: >\n  folded\n  text\n", "a: 'it''s'\nb: \"\\u00e9\\n\"\n", "é: ü\n",
    "a:\n- 1\n- - 2\n  - 3\n-\n", "a: [1, 1, 1]\nb: {x: 1, y: 1}\n", "%YAML 1.1\n---\na: 1\n",
    "# only a comment\n", "a: 1 # comment\n",
]


@pytest.mark.parametrize("text", HAND_WRITTEN)
def test_hand_written(text):
    assert outcome(text, True) == outcome(text, False)


def test_a_plain_file_is_read_from_the_events():
    """The fast reader is really used for the common case (else the comparison above proves nothing)."""
    assert yamlsrc._data_from_events("a: [1, {b: c}]\n") == {"a": [1, {"b": "c"}]}
    for unusual in ("a: &x 1\nb: *x\n", "a: 1\na: 2\n", "<<: {a: 1}\n", "~: 1\n", "a: !!str 1\n", "a: b\n---\nc: d\n"):
        with pytest.raises(Exception):
            yamlsrc._data_from_events(unusual)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(alphabet="abyYnN01._-:~ #'\"&*!<>|é\t", max_size=6))
keys = st.one_of(st.text(alphabet="abc01~<-:. ", min_size=0, max_size=3), st.integers(0, 3), st.booleans(), st.none())
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                         max_leaves=12)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.booleans())
def test_dumped_documents(doc, flow):
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
    assert outcome(text, True) == outcome(text, False)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="ab1:-[]{},'\"&*!?<~ \n\t#|>", max_size=40))
def test_random_texts(text):
    assert outcome(text, True) == outcome(text, False)
