"""Hydra's and OmegaConf's exceptions, translated into located, actionable diagnostics."""

from __future__ import annotations

import difflib
import re
from typing import Any

from mlspec.errors import Diagnostic
from mlspec.yamlsrc import YamlSource
from mlspec.compose.sources import format_path, printable


def _key_suggestion(key: str, data: Any) -> str:
    """The key path of the root spec that an override key misspells ('a.b.c'), or ""."""
    parts, node = key.split("."), data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return ""
        if part not in node:
            best = difflib.get_close_matches(part, sorted(map(str, node)), n=1, cutoff=0.6)
            return ".".join(parts[:i] + best[:1] + parts[i + 1:]) if best else ""
        node = node[part]
    return ""


def hydra_diag(exc: Exception, overrides: list[str], shown: str, primary: YamlSource | None = None,
                group_names: set | frozenset = frozenset()) -> Diagnostic:
    cause = exc.__cause__ or exc.__context__
    if not str(exc).strip() and cause is not None and str(cause).strip():
        # ConfigCompositionException() raised from an OmegaConf error: a bad interpolation or value
        from omegaconf.errors import GrammarParseError

        text = str(cause).strip()
        first = text.splitlines()[0]
        full_key = re.search(r"full_key:[ \t]*(\S+)", text)
        line = col = 0
        value = None
        if full_key and primary is not None:
            kpath = tuple(full_key.group(1).split("."))
            if primary.depth_of(kpath) == len(kpath):
                line, col = primary.locate(kpath) or (0, 0)
                value = primary.data
                for part in kpath:
                    value = value.get(part) if isinstance(value, dict) else None
        kpath_text = printable(full_key.group(1)) if full_key else ""
        if isinstance(cause, GrammarParseError) and not line and primary is not None:
            bad = unparsable_interpolation(primary.data)  # e.g. under an empty key: no full_key to go by
            if bad is not None:
                kpath, value = bad
                line, col = primary.locate(kpath) or (0, 0)
                kpath_text = printable(format_path(kpath))
        first = printable(first)
        if isinstance(cause, GrammarParseError):
            what = f"the interpolation in {printable(repr(value))}" if isinstance(value, str) else "an interpolation"
            return Diagnostic(shown, line, col, kpath_text, "bad-interpolation",
                              f"cannot parse {what}: {first} (write ${{key.path}} or ${{oc.env:VAR}}; "
                              "escape a literal ${ as \\${)")
        m = re.match(r"Value '(\w+)' is not a supported primitive type", first)
        if m:
            return Diagnostic(shown, line, col, kpath_text, "unsupported-value",
                              f"a YAML value of type '{m.group(1)}' is not supported here; use a string, number, "
                              "boolean, list or mapping (quote it to keep it as text)")
        return Diagnostic(shown, line, col, kpath_text, "compose-error", f"cannot compose the spec: {first}")
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for text in overrides[1:]:
        body = text.lstrip("+~")
        key = body.split("=", 1)[0]
        if text in str(exc) or f"'{key}'" in str(exc) or f"'{body}'" in str(exc) or key in msg:
            where = f"override '{text}'"
            if "Could not override" in msg:
                known = primary.data if primary is not None and key.split(".")[0] not in group_names else {}
                close = _key_suggestion(key, known)
                return Diagnostic(where, 0, 0, key, "bad-override",
                                  f"there is no key '{key}' to override; "
                                  + (f"did you mean '{close}'? To add '{key}' as a new key" if close
                                     else "to add it as a new key") + f", write '+{body}'")
            if "Could not append" in msg:
                return Diagnostic(where, 0, 0, key, "bad-override",
                                  f"'{key}' is already set, so '+' cannot add it; write '{body}' to change it, "
                                  f"or '++{body}' to set it whether or not it exists")
            hint = ""
            if "not in struct" in msg or "Key '" in msg:
                hint = f"; to add a new key write '+{body}'"
            return Diagnostic(where, 0, 0, key, "bad-override", f"{msg.rstrip('.')}{hint}")
    return Diagnostic(shown, 0, 0, "", "compose-error", msg)


def unparsable_interpolation(node: Any, path: tuple = ()) -> tuple | None:
    """(key path, value) of the first string whose ${...} OmegaConf cannot parse, or None."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        if isinstance(node, str) and "${" in node:
            from omegaconf.errors import GrammarParseError
            from omegaconf.grammar_parser import parse

            try:
                parse(node)
            except GrammarParseError:
                return path, node
        return None
    for k, v in items:
        found = unparsable_interpolation(v, path + (k,))
        if found is not None:
            return found
    return None
