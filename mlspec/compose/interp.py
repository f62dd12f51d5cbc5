"""Plain interpolations (``${a.b}``, ``${.x}``, ``${..y}``) resolved without OmegaConf, exactly as it would.

Every ``cmd`` step has a ``${...}``, and one interpolation anywhere used to send the whole spec through
Hydra (about 1.5 ms per step). This resolves the forms whose meaning is plain: a key path, absolute or
relative (one leading dot: the mapping that holds the value; each further dot: one level up), in a string
or as the whole value, nested through other interpolations; ``\\${`` for a literal ``${``; and the run-time
placeholders ``${inputs.X}``, ``${outputs.X}``, ``${params.X}`` of a step's ``cmd``, kept as text (as the
Hydra path keeps them). Anything else (a resolver such as ``${oc.env:VAR}``, a missing key, a cycle, a
bracket index, a backslash elsewhere near an interpolation, a container inside a string) returns None, and
compose() goes through Hydra, which gives its own result or its own error. tests/test_compose_parity.py
resolves the same specs both ways.
"""

from __future__ import annotations

import re
from typing import Any

_REF = re.compile(r"\.*(?:[A-Za-z_][\w-]*|\d+)(?:\.(?:[A-Za-z_][\w-]*|\d+))*")
_CMD_PLACEHOLDER = re.compile(r"\$\{(inputs|outputs|params)\.")


class NotPlain(Exception):
    """This spec needs OmegaConf: resolve it through Hydra."""


def find_interpolations(node: Any, path: tuple, out: list) -> None:
    """(path, text) of every string holding ``${``, in the order the Hydra path lists them."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str) and "${" in k:
                raise NotPlain(k)
            find_interpolations(v, path + (k,), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            find_interpolations(v, path + (i,), out)
    elif isinstance(node, str) and "${" in node:
        out.append((path, node))


def _is_cmd(path: tuple) -> bool:
    return len(path) == 3 and path[0] == "steps" and path[2] == "cmd"


def _pieces(text: str, cmd: bool) -> list:
    """The text as literal strings and (reference,) tuples; NotPlain when it is not plain."""
    if "\\" in text.replace("\\${", ""):
        raise NotPlain(text)  # OmegaConf's escaping rules for other backslashes: leave them to it
    out: list = []
    buf: list = []
    i = 0
    while True:
        j = text.find("${", i)
        if j < 0:
            buf.append(text[i:])
            break
        if j and text[j - 1] == "\\":
            if j > 1 and text[j - 2] == "\\":
                raise NotPlain(text)  # an escaped backslash before an interpolation: OmegaConf's rules
            buf.append(text[i:j - 1] + "${")  # \${ is a literal ${
            i = j + 2
            continue
        if cmd and _CMD_PLACEHOLDER.match(text, j):  # filled in at run time: the rest is plain text
            buf.append(text[i:j + 2])
            i = j + 2
            continue
        end = text.find("}", j)
        ref = text[j + 2:end] if end > 0 else ""
        if not _REF.fullmatch(ref):
            raise NotPlain(text)
        buf.append(text[i:j])
        out.append("".join(buf))
        buf = []
        out.append((ref,))
        i = end + 1
    out.append("".join(buf))
    return out


class _Resolver:
    def __init__(self, data: dict, interp: list):
        self.data = data
        self.raw = dict(interp)  # path -> text
        self.done: dict = {}
        self.busy: set = set()

    def value_at(self, path: tuple) -> Any:
        """The resolved value at ``path`` (containers: resolved copies)."""
        node = self.data
        for part in path:
            node = node[part]
        return self.resolved(node, path)

    def resolved(self, node: Any, path: tuple) -> Any:
        if isinstance(node, dict):
            return {k: self.resolved(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolved(v, path + (i,)) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return self.string(path, node)
        return node

    def string(self, path: tuple, text: str) -> Any:
        if path in self.done:
            return self.done[path]
        if path in self.busy:
            raise NotPlain("cycle")
        self.busy.add(path)
        pieces = _pieces(text, _is_cmd(path))
        if len(pieces) == 3 and pieces[0] == "" and pieces[2] == "":  # the whole value: its type is kept
            out = self.lookup(path, pieces[1][0])
        else:
            parts = []
            for p in pieces:
                if isinstance(p, tuple):
                    v = self.lookup(path, p[0])
                    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                        raise NotPlain(p[0])  # OmegaConf's text of other values: leave it to OmegaConf
                    p = str(v)
                parts.append(p)
            out = "".join(parts)
        self.busy.discard(path)
        self.done[path] = out
        return out

    def lookup(self, where: tuple, ref: str) -> Any:
        dots = len(ref) - len(ref.lstrip("."))
        if dots:
            if dots > len(where):
                raise NotPlain(ref)
            base = where[:len(where) - dots]  # one dot: the node that holds the value
        else:
            base = ()
        node = self.data
        for part in base:
            node = node[part]
        path = base
        for seg in ref[dots:].split("."):
            if isinstance(node, dict) and seg in node:
                node = node[seg]
                path += (seg,)
            elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
                node = node[int(seg)]
                path += (int(seg),)
            else:
                raise NotPlain(ref)  # missing: Hydra reports it
        if isinstance(node, str) and node == "???":
            raise NotPlain(ref)
        return self.resolved(node, path)


def resolve_plain(data: dict) -> tuple[dict, list] | None:
    """(resolved data, [(path, raw text)]) when every interpolation is plain, else None. ``data`` is not
    changed: containers on the way to a resolved value are copied (each once)."""
    interp: list = []
    try:
        find_interpolations(data, (), interp)
        if not interp:
            return data, []
        r = _Resolver(data, interp)
        values = {path: r.string(path, text) for path, text in interp}
    except (NotPlain, RecursionError):
        return None
    return _replace(data, values), interp


def _replace(data: Any, values: dict) -> Any:
    trie: dict = {}
    for path, value in values.items():
        node = trie
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _Leaf(value)

    def build(node: Any, sub: dict) -> Any:
        out = dict(node) if isinstance(node, dict) else list(node)
        for k, s in sub.items():
            out[k] = s.value if isinstance(s, _Leaf) else build(node[k], s)
        return out

    return build(data, trie)


class _Leaf:
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value
