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


def schema_diagnostics(data: Any, smap: SourceMap, schema_name: str = "mlspec.schema.json",
                       prefix: tuple = ()) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for err in _validator(schema_name).iter_errors(data):
        out.extend(_convert(err, smap, prefix))
    return out


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
