"""JSON Schema validation of the composed spec, with errors mapped back to file:line:column.

The schema (``schemas/mlspec.schema.json``, draft 2020-12) is the published contract editors and CI use;
this module turns jsonschema's errors into short, located diagnostics with a "did you mean".
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

from mlspec.compose import SourceMap
from mlspec.errors import Diagnostic, did_you_mean
from mlspec.gcpause import paused

SCHEMA_ID = "https://mlspec.dev/schemas/mlspec.schema.json"
NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_-]*$"


@lru_cache(maxsize=None)
def load_schema(name: str = "mlspec.schema.json") -> dict:
    return json.loads(resources.files("mlspec.schemas").joinpath(name).read_text(encoding="utf-8"))


def _inline_refs(node: Any, defs: dict, depth: int = 0) -> Any:
    """Replace local ``#/$defs/X`` references by their content: same meaning, but the validator no longer
    resolves a reference for every node (that lookup was a third of `validate` on large specs)."""
    if depth > 50:
        raise ValueError("schema references are too deep (recursive $ref?)")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and "/" not in ref[len("#/$defs/"):]:
            target = _inline_refs(defs[ref[len("#/$defs/"):]], defs, depth + 1)
            rest = {k: _inline_refs(v, defs, depth + 1) for k, v in node.items() if k != "$ref"}
            if not rest:
                return target
            if isinstance(target, dict) and not (set(rest) & set(target) - {"description", "title"}):
                return {**target, **rest}
            return {"allOf": [target], **rest}
        return {k: (v if k == "$defs" else _inline_refs(v, defs, depth)) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs, depth) for v in node]
    return node


@lru_cache(maxsize=None)
def _validator(name: str = "mlspec.schema.json"):
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    try:
        schema = _inline_refs(schema, schema.get("$defs", {}))
    except (KeyError, ValueError):
        pass  # keep the published form: slower, same answers
    return Draft202012Validator(schema)


# --- a fast yes/no check -------------------------------------------------------------------------
# jsonschema costs ~100 us per step of a large spec (5 s at 50,000 steps) because it builds an error
# iterator and a child validator for every node. A spec is almost always valid: the schema is compiled once
# into plain Python predicates that answer only "valid?" with jsonschema's semantics (draft 2020-12, no
# format checking), and jsonschema runs only when the answer is no, to produce the diagnostics. A keyword
# the compiler does not know makes it give up (None): then jsonschema does all the work, as before.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples",
                          "deprecated", "readOnly", "writeOnly", "format", "$anchor"})


class _Unsupported(Exception):
    pass


def _is_type(value: Any, t: str) -> bool:
    if t == "string":
        return isinstance(value, str)
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    raise _Unsupported(t)


_PY_TYPES = {"string": (str,), "object": (dict,), "array": (list,), "integer": (int,), "number": (int, float),
             "boolean": (bool,)}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _same(a: Any, b: Any) -> bool:
    """jsonschema's equality: True is not 1; lists and mappings compare item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return a == b


def _unique(items: list) -> bool:
    if all(isinstance(x, str) for x in items):
        return len(set(items)) == len(items)
    seen: list = []
    for x in items:
        if any(_same(x, y) for y in seen):
            return False
        seen.append(x)
    return True


def _compile(schema: Any, defs: dict, cache: dict):
    """A predicate ``f(instance) -> bool``; raises _Unsupported for what it does not implement."""
    import re

    if schema is True:
        return lambda x: True
    if schema is False:
        return lambda x: False
    if not isinstance(schema, dict):
        raise _Unsupported(repr(schema))
    key = id(schema)
    if key in cache:
        return cache[key]
    slot: list = []
    cache[key] = lambda x: slot[0](x)  # a $ref back to this schema while it is being compiled
    checks = []  # each returns True when the instance passes that keyword
    unknown = set(schema) - _ANNOTATIONS - {
        "type", "properties", "additionalProperties", "patternProperties", "required", "propertyNames", "items",
        "enum", "const", "pattern", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minimum",
        "maximum", "exclusiveMinimum", "exclusiveMaximum", "minProperties", "maxProperties", "oneOf", "anyOf",
        "allOf", "not", "$ref"}
    if unknown:
        raise _Unsupported(", ".join(sorted(unknown)))
    if "$ref" in schema:
        ref = schema["$ref"]
        if not (isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/"):] in defs):
            raise _Unsupported(str(ref))
        checks.append(_compile(defs[ref[len("#/$defs/"):]], defs, cache))
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        classes = ()
        for t in types:
            if t != "null":
                classes += _PY_TYPES[t]  # KeyError: unsupported
        if "null" in types:
            classes += (type(None),)
        if "integer" in types and "number" not in types:  # 2.0 is an integer for JSON Schema, True is not
            checks.append(lambda x: (isinstance(x, classes) and (x.__class__ is not bool or bool in classes)) or
                          (isinstance(x, float) and x.is_integer()))
        elif bool in classes or not ({int, float} & set(classes)):
            checks.append(lambda x: isinstance(x, classes))
        else:  # a number, but not a boolean (bool is an int in Python)
            checks.append(lambda x: isinstance(x, classes) and x.__class__ is not bool)
    if "enum" in schema or "const" in schema:
        allowed = list(schema["enum"]) if "enum" in schema else [schema["const"]]
        if not all(_scalar(a) for a in allowed):
            raise _Unsupported("enum")
        checks.append(lambda x: any(_same(x, a) for a in allowed))
    props = schema.get("properties", {})
    pattern_props = schema.get("patternProperties", {})
    if props or pattern_props or "additionalProperties" in schema:
        prop_checks = {k: _compile(v, defs, cache) for k, v in props.items()}
        pat_checks = [(re.compile(p), _compile(v, defs, cache)) for p, v in pattern_props.items()]
        extra_schema = schema.get("additionalProperties", True)
        extra = None if extra_schema is True else _compile(extra_schema, defs, cache)

        get = prop_checks.get

        def object_ok(x):
            if not isinstance(x, dict):
                return True
            for k, v in x.items():
                c = get(k)
                if c is not None:
                    if not c(v):
                        return False
                    if not pat_checks:
                        continue
                matched = c is not None
                if pat_checks:
                    if not isinstance(k, str):
                        return False  # jsonschema would fail on it: let it say how
                    for rx, pc in pat_checks:
                        if rx.search(k):
                            matched = True
                            if not pc(v):
                                return False
                if not matched and extra is not None and not extra(v):
                    return False
            return True
        checks.append(object_ok)
    if "required" in schema:
        req = tuple(schema["required"])
        checks.append(lambda x: not isinstance(x, dict) or all(r in x for r in req))
    if "propertyNames" in schema:
        names = _compile(schema["propertyNames"], defs, cache)

        def names_ok(x):
            if isinstance(x, dict):
                for k in x:
                    if not names(k):
                        return False
            return True
        checks.append(names_ok)
    for kw, op in (("minProperties", lambda n, m: n >= m), ("maxProperties", lambda n, m: n <= m)):
        if kw in schema:
            checks.append(lambda x, m=schema[kw], op=op: not isinstance(x, dict) or op(len(x), m))
    if "items" in schema:
        item = _compile(schema["items"], defs, cache)

        def items_ok(x):
            if isinstance(x, list):
                for i in x:
                    if not item(i):
                        return False
            return True
        checks.append(items_ok)
    for kw, op in (("minItems", lambda n, m: n >= m), ("maxItems", lambda n, m: n <= m)):
        if kw in schema:
            checks.append(lambda x, m=schema[kw], op=op: not isinstance(x, list) or op(len(x), m))
    if schema.get("uniqueItems") is True:
        checks.append(lambda x: not isinstance(x, list) or _unique(x))
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda x: x.__class__ is not str and not isinstance(x, str) or search(x) is not None)
    for kw, op in (("minLength", lambda n, m: n >= m), ("maxLength", lambda n, m: n <= m)):
        if kw in schema:
            checks.append(lambda x, m=schema[kw], op=op: not isinstance(x, str) or op(len(x), m))
    for kw, op in (("minimum", lambda n, m: n >= m), ("maximum", lambda n, m: n <= m),
                   ("exclusiveMinimum", lambda n, m: n > m), ("exclusiveMaximum", lambda n, m: n < m)):
        if kw in schema:
            checks.append(lambda x, m=schema[kw], op=op: not _is_type(x, "number") or op(x, m))
    if "allOf" in schema:
        subs = [_compile(s, defs, cache) for s in schema["allOf"]]
        checks.append(lambda x: all(f(x) for f in subs))
    if "anyOf" in schema:
        subs_any = [_compile(s, defs, cache) for s in schema["anyOf"]]
        checks.append(lambda x: any(f(x) for f in subs_any))
    if "oneOf" in schema:
        subs_one = [_compile(s, defs, cache) for s in schema["oneOf"]]
        checks.append(lambda x: sum(1 for f in subs_one if f(x)) == 1)
    if "not" in schema:
        neg = _compile(schema["not"], defs, cache)
        checks.append(lambda x: not neg(x))

    if not checks:
        def f(x):
            return True
    elif len(checks) == 1:
        f = checks[0]
    elif len(checks) == 2:
        c1, c2 = checks

        def f(x):
            return c1(x) and c2(x)
    else:
        def f(x):
            for c in checks:
                if not c(x):
                    return False
            return True
    slot.append(f)
    cache[key] = f
    return f


# --- the same yes/no check as generated Python source -------------------------------------------
# _compile's predicates are closures nested several deep per keyword: at 50,000 steps about 30 calls per
# step (0.4-0.6 s). _generate writes one function per schema node instead, with the keywords of that node
# inline (and the keywords of simple leaf schemas inline in their parent), the same tests in the same
# order: about a third of the calls. Anything it does not handle raises _Unsupported and the closures
# above are used; tests/test_schema_fast.py checks that both, and jsonschema, agree.
_LEAF_KEYS = frozenset({"type", "pattern", "enum", "const", "minLength", "maxLength"})


class _Gen:
    def __init__(self, defs: dict):
        self.defs = defs
        self.ns: dict = {"_same": _same, "_unique": _unique, "_re": __import__("re")}
        self.funcs: list[str] = []
        self.names: dict[int, str] = {}
        self.keep: list = []  # schemas whose id() names a function: kept alive while generating

    def const(self, value, prefix: str = "_c") -> str:
        name = f"{prefix}{len(self.ns)}"
        self.ns[name] = value
        return name

    # one keyword's test as an expression over ``v``, or None
    def _type_expr(self, schema: dict, v: str) -> str:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        classes: tuple = ()
        for t in types:
            if t != "null":
                classes += _PY_TYPES[t]  # KeyError: unsupported
        if "null" in types:
            classes += (type(None),)
        c = self.const(classes, "_t")
        if "integer" in types and "number" not in types:
            return (f"((isinstance({v}, {c}) and ({v}.__class__ is not bool or {bool in classes!r})) or "
                    f"(isinstance({v}, float) and {v}.is_integer()))")
        if bool in classes or not ({int, float} & set(classes)):
            return f"isinstance({v}, {c})"
        return f"(isinstance({v}, {c}) and {v}.__class__ is not bool)"

    def _enum_expr(self, schema: dict, v: str) -> str:
        allowed = list(schema["enum"]) if "enum" in schema else [schema["const"]]
        if not all(_scalar(a) for a in allowed):
            raise _Unsupported("enum")
        return f"any(_same({v}, a) for a in {self.const(allowed, '_e')})"

    def _pattern_expr(self, schema: dict, v: str) -> str:
        search = self.const(__import__("re").compile(schema["pattern"]).search, "_rx")
        return f"(not isinstance({v}, str) or {search}({v}) is not None)"

    def _length_exprs(self, schema: dict, v: str) -> list[str]:
        out = []
        for kw, op in (("minLength", ">="), ("maxLength", "<=")):
            if kw in schema:
                out.append(f"(not isinstance({v}, str) or len({v}) {op} {self.const(schema[kw])})")
        return out

    def leaf_expr(self, schema, v: str) -> str | None:
        """A simple schema (type, pattern, enum, lengths) as one expression, or None."""
        if schema is True:
            return "True"
        if schema is False:
            return "False"
        if not isinstance(schema, dict) or set(schema) - _ANNOTATIONS - _LEAF_KEYS:
            return None
        parts = []
        if "type" in schema:
            parts.append(self._type_expr(schema, v))
        if "enum" in schema or "const" in schema:
            parts.append(self._enum_expr(schema, v))
        if "pattern" in schema:
            parts.append(self._pattern_expr(schema, v))
        parts += self._length_exprs(schema, v)
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def test(self, schema, v: str) -> str:
        """An expression that is true when ``v`` is valid against ``schema``."""
        expr = self.leaf_expr(schema, v)
        return expr if expr is not None else f"{self.function(schema)}({v})"

    def function(self, schema) -> str:
        """The name of the generated function for ``schema``."""
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        key = id(schema)
        if key in self.names:
            return self.names[key]
        name = self.names[key] = f"_s{len(self.names)}"
        self.keep.append(schema)
        unknown = set(schema) - _ANNOTATIONS - {
            "type", "properties", "additionalProperties", "patternProperties", "required", "propertyNames",
            "items", "enum", "const", "pattern", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
            "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minProperties", "maxProperties",
            "oneOf", "anyOf", "allOf", "not", "$ref"}
        if unknown:
            raise _Unsupported(", ".join(sorted(unknown)))
        body: list[str] = []

        def fail_unless(expr: str, indent: str = "    ") -> None:
            body.append(f"{indent}if not {expr}:")
            body.append(f"{indent}    return False")

        # the keywords in _compile's order (the result does not depend on it: every test is pure)
        if "$ref" in schema:
            ref = schema["$ref"]
            if not (isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/"):] in self.defs):
                raise _Unsupported(str(ref))
            fail_unless(self.test(self.defs[ref[len("#/$defs/"):]], "x"))
        if "type" in schema:
            fail_unless(self._type_expr(schema, "x"))
        if "enum" in schema or "const" in schema:
            fail_unless(self._enum_expr(schema, "x"))
        props = schema.get("properties", {})
        pattern_props = schema.get("patternProperties", {})
        if props or pattern_props or "additionalProperties" in schema:
            table = self.const({k: self._callable(s) for k, s in props.items()}, "_p")
            extra = schema.get("additionalProperties", True)
            body.append("    if isinstance(x, dict):")
            body.append("        for k, v in x.items():")
            body.append(f"            c = {table}.get(k)")
            if not pattern_props:
                body.append("            if c is not None:")
                body.append("                if not c(v):")
                body.append("                    return False")
                if extra is False:
                    body.append("            else:")
                    body.append("                return False")
                elif extra is not True:
                    body.append(f"            elif not {self.test(extra, 'v')}:")
                    body.append("                return False")
            else:  # as _compile's object_ok: a key may match a property and patterns, each must pass
                pats = self.const({__import__("re").compile(p).search: self._callable(s)
                                   for p, s in pattern_props.items()}, "_p")
                body.append("            if c is not None and not c(v):")
                body.append("                return False")
                body.append("            matched = c is not None")
                body.append("            if not isinstance(k, str):")
                body.append("                return False")
                body.append(f"            for rx, pc in {pats}.items():")
                body.append("                if rx(k):")
                body.append("                    matched = True")
                body.append("                    if not pc(v):")
                body.append("                        return False")
                if extra is not True:
                    body.append(f"            if not matched and not {self.test(extra, 'v')}:")
                    body.append("                return False")
        if "required" in schema:
            req = " and ".join(f"{self.const(r)} in x" for r in schema["required"]) or "True"
            body.append(f"    if isinstance(x, dict) and not ({req}):")
            body.append("        return False")
        if "propertyNames" in schema:
            body.append("    if isinstance(x, dict):")
            body.append("        for k in x:")
            fail_unless(self.test(schema["propertyNames"], "k"), "            ")
        for kw, op in (("minProperties", ">="), ("maxProperties", "<=")):
            if kw in schema:
                body.append(f"    if isinstance(x, dict) and not len(x) {op} {self.const(schema[kw])}:")
                body.append("        return False")
        if "items" in schema:
            body.append("    if isinstance(x, list):")
            body.append("        for i in x:")
            fail_unless(self.test(schema["items"], "i"), "            ")
        for kw, op in (("minItems", ">="), ("maxItems", "<=")):
            if kw in schema:
                body.append(f"    if isinstance(x, list) and not len(x) {op} {self.const(schema[kw])}:")
                body.append("        return False")
        if schema.get("uniqueItems") is True:
            body.append("    if isinstance(x, list) and not _unique(x):")
            body.append("        return False")
        if "pattern" in schema:
            fail_unless(self._pattern_expr(schema, "x"))
        for expr in self._length_exprs(schema, "x"):
            fail_unless(expr)
        for kw, op in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
            if kw in schema:
                body.append(f"    if isinstance(x, (int, float)) and x.__class__ is not bool and "
                            f"not x {op} {self.const(schema[kw])}:")
                body.append("        return False")
        if "allOf" in schema:
            for s in schema["allOf"]:
                fail_unless(self.test(s, "x"))
        if "anyOf" in schema:
            fail_unless("(" + " or ".join(self.test(s, "x") for s in schema["anyOf"]) + ")")
        if "oneOf" in schema:
            count = " + ".join(f"(1 if {self.test(s, 'x')} else 0)" for s in schema["oneOf"]) or "0"
            body.append(f"    if {count} != 1:")
            body.append("        return False")
        if "not" in schema:
            body.append(f"    if {self.test(schema['not'], 'x')}:")
            body.append("        return False")
        self.funcs.append(f"def {name}(x):\n" + "\n".join(body + ["    return True"]))
        return name

    def _callable(self, schema):
        """A property's check, for the dispatch table: filled in once every function is defined."""
        if schema is True or schema is False:
            return (lambda x: True) if schema is True else (lambda x: False)
        return _Later(self.function(schema))

    def build(self, schema):
        top = self.function(schema)
        exec("\n\n".join(self.funcs), self.ns)  # noqa: S102 - source generated above from the schema
        for key, value in list(self.ns.items()):
            if key.startswith("_p"):
                for k, c in value.items():
                    if isinstance(c, _Later):
                        value[k] = self.ns[c.name]
        return self.ns[top]


class _Later:
    """A generated function's name, replaced by the function once the source is executed."""

    def __init__(self, name: str):
        self.name = name


def _generate(schema, defs: dict):
    """The yes/no check of ``schema`` as generated functions; raises _Unsupported (see _Gen)."""
    if schema is True or schema is False:
        return _compile(schema, defs, {})
    return _Gen(defs).build(schema)


@lru_cache(maxsize=None)
def _fast_check(name: str = "mlspec.schema.json", generated: bool = True):
    """The compiled yes/no check of a schema, or None when it uses something the compiler lacks."""
    schema = load_schema(name)
    defs = schema.get("$defs", {})
    try:
        schema = _inline_refs(schema, defs)
    except (KeyError, ValueError):
        pass
    if generated:
        try:
            return _generate(schema, defs)
        except (_Unsupported, TypeError, ValueError, KeyError):
            pass
    try:
        return _compile(schema, defs, {})
    except (_Unsupported, TypeError, ValueError, KeyError):
        return None


_DATA_CHECKS: dict = {}  # id(schema) -> (schema, its check)


def data_check(schema: dict):
    """The compiled yes/no check of a schema given as data (a backend plugin's settings schema), made once
    per schema object; None when it uses something the compiler lacks. Valid settings are then accepted
    without importing jsonschema (about 40 ms of every apply and plan); jsonschema runs only to say what
    is wrong."""
    hit = _DATA_CHECKS.get(id(schema))
    if hit is None or hit[0] is not schema:
        defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}
        try:
            inlined = _inline_refs(schema, defs)
        except (KeyError, ValueError, TypeError):
            inlined = schema
        try:
            check = _compile(inlined, defs, {})
        except (_Unsupported, TypeError, ValueError, KeyError):
            check = None
        hit = _DATA_CHECKS[id(schema)] = (schema, check)
    return hit[1]


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _type_text(t) -> str:
    if isinstance(t, list):
        return " or ".join(_TYPE_NAMES.get(x, x) for x in t)
    return _TYPE_NAMES.get(t, str(t))


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "null (nothing)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {str: "a string", int: "an integer", float: "a number"}.get(type(value), type(value).__name__)
    return f"{json.dumps(value, default=str)} ({kind})"  # default=str: YAML can also give bytes or dates


def _known_keys(schema: dict) -> list[str]:
    return sorted(schema.get("properties", {}))


def _described(schema: dict) -> str:
    d = schema.get("description", "")
    return d.rstrip(".") if d else ""


@paused
def schema_diagnostics(data: Any, smap: SourceMap, schema_name: str = "mlspec.schema.json",
                       prefix: tuple = ()) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    check = _fast_check(schema_name)
    if check is not None:
        try:
            if check(data):
                return out
        except RecursionError:
            pass  # jsonschema decides
    try:
        errors = list(_validator(schema_name).iter_errors(data))
    except TypeError:  # a YAML key that is a number or boolean: jsonschema's patterns need text keys
        errors = list(_validator(schema_name).iter_errors(_text_keys(data)))
    for err in errors:
        out.extend(_convert(err, smap, prefix))
    return out


def _text_keys(node: Any) -> Any:
    """A copy with every mapping key as text (the semantic checks report the non-text keys themselves)."""
    if isinstance(node, dict):
        return {str(k): _text_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_text_keys(v) for v in node]
    return node


def _convert(err, smap: SourceMap, prefix: tuple) -> Iterable[Diagnostic]:
    path = prefix + tuple(err.absolute_path)
    v, schema, inst = err.validator, err.schema, err.instance
    if "propertyNames" in err.relative_schema_path:
        # a bad key: jsonschema reports it at the mapping with the inner keyword (pattern, type, minLength)
        bad = str(inst)
        if v == "pattern" and schema.get("pattern") == NAME_PATTERN:
            msg = f"invalid name '{bad}': names start with a letter and use letters, digits, '_' or '-'"
        elif v == "pattern":
            msg = f"invalid name '{bad}'" + (f": {_described(schema)}" if _described(schema) else "")
        elif v == "type":
            msg = f"invalid name {_got(inst)}: names are strings"
        else:
            msg = f"invalid name '{bad}': {err.message}"
        yield smap.diag(path + (bad,), "bad-name", msg, prefer_key=True)
        return
    if v == "additionalProperties" and isinstance(inst, dict):
        known = _known_keys(schema)
        patterns = schema.get("patternProperties", {})
        import re

        for key in inst:
            key = str(key)  # YAML keys may be numbers or booleans
            if key in schema.get("properties", {}) or any(re.search(p, key) for p in patterns):
                continue
            where = ".".join(map(str, path)) or "the top level"
            yield smap.diag(path + (key,), "unknown-key",
                            f"unknown key '{key}' in {where}{did_you_mean(key, known)}"
                            + ("" if did_you_mean(key, known) else f" (allowed: {', '.join(known)})"),
                            prefer_key=True)
        return
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        desc = _described(schema.get("properties", {}).get(missing, {}))
        yield smap.diag(path, "missing-key", f"missing required key '{missing}'" + (f" ({desc})" if desc else ""),
                        prefer_key=True)
        return
    if v == "type":
        yield smap.diag(path, "wrong-type", f"expected {_type_text(err.validator_value)}, got {_got(inst)}")
        return
    if v in ("enum", "const"):
        allowed = err.validator_value if v == "enum" else [err.validator_value]
        hint = did_you_mean(str(inst), [str(a) for a in allowed])
        yield smap.diag(path, "bad-value", f"expected one of {', '.join(json.dumps(a) for a in allowed)}, "
                                           f"got {_got(inst)}{hint}")
        return
    if v == "propertyNames":  # a `false` propertyNames schema (not used by mlspec's schema)
        yield smap.diag(path, "bad-name", err.message)
        return
    if v == "pattern" and schema.get("pattern") == NAME_PATTERN:  # whatever the field's own description says
        yield smap.diag(path, "bad-format", f"{_got(inst)} is not a valid name: names start with a letter "
                                            "and use letters, digits, '_' or '-'")
        return
    if v == "pattern":
        desc = _described(schema)
        yield smap.diag(path, "bad-format", f"{_got(inst)} is not valid here" + (f": {desc}" if desc else ""))
        return
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        yield smap.diag(path, "out-of-range", f"must be {op} {err.validator_value}, got {_got(inst)}")
        return
    if v in ("minItems", "minProperties"):
        yield smap.diag(path, "too-few", f"must not be empty (at least {err.validator_value})")
        return
    if v == "uniqueItems":
        seen, dup, at = [], None, ()
        for i, item in enumerate(inst):
            if item in seen:
                dup, at = item, (i,)  # point at the repeated item, not at the list
                break
            seen.append(item)
        yield smap.diag(path + at, "duplicate-item",
                        f"{json.dumps(dup, default=str)} is listed twice; items must be unique")
        return
    if v in ("oneOf", "anyOf"):
        # Prefer a specific message from the branch that matched best.
        if isinstance(inst, dict) and {"run", "cmd"} <= set(inst) and path[:1] == ("steps",):
            yield smap.diag(path, "run-and-cmd", "a step has either `run:` (a Python function) or `cmd:` "
                                                 "(a shell command), not both")
            return
        if isinstance(inst, dict) and path[:1] == ("steps",) and len(path) == 2 and not ({"run", "cmd"} & set(inst)):
            yield smap.diag(path, "missing-key", "a step needs `run: package.module:function` or `cmd: COMMAND`",
                            prefer_key=True)
            return
        if isinstance(inst, dict) and path[:1] == ("triggers",) and len(path) == 2:
            n = len({"schedule", "dataset", "monitor"} & set(inst))
            yield smap.diag(path, "trigger-kind", "a trigger has exactly one of `schedule`, `dataset` or "
                                                  f"`monitor` (found {n})", prefer_key=True)
            return
        if not isinstance(inst, dict) and path[:1] in (("steps",), ("triggers",)) and len(path) == 2:
            return  # required-only branches say nothing about a non-mapping: the `type` error reports it
        ctx = sorted(err.context, key=lambda e: (-len(e.absolute_path), e.validator != "type"))
        specific = [e for e in ctx if e.validator != "type"]
        if specific:
            yield from _convert(specific[0], smap, prefix)
            return
        kinds = [s.get("type") for s in err.validator_value if isinstance(s, dict) and s.get("type")]
        yield smap.diag(path, "wrong-type",
                        f"expected {' or '.join(_type_text(k) for k in kinds) or 'another form'}, got {_got(inst)}")
        return
    if v == "not":
        yield smap.diag(path, "invalid", err.message)
        return
    yield smap.diag(path, "invalid", err.message)
