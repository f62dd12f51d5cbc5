"""The data of a plain block-style YAML file, read line by line: the common shape of spec files, 3x faster.

A 50,000-step spec is 400,000 lines of ``key: value`` mappings, ``- item`` lists and ``[a, b]`` lists.
libyaml reads it in 1.35 s, most of it building an event object (with two position marks) per token
in Python; splitting lines with str methods takes a third of that. This reader accepts a deliberately
small part of YAML and raises :class:`Decline` on anything else, and the caller (mlspec.yamlsrc.parse_yaml)
then reads the file with libyaml as before, which also reports every error. What it reads:

- block mappings (``key: value`` and ``key:`` followed by a more indented block), block sequences
  (``- value``, ``- key: value`` starting a mapping, and a sequence at its key's own indentation);
- plain scalars (typed by the very resolvers and constructors of mlspec.yamlsrc._Loader, so ``yes``,
  ``1e-3``, ``0x1F``, ``~`` and ``2020-01-01`` become what they become there), single-quoted scalars
  without ``''``, double-quoted scalars without ``\\``, on one line;
- one-line flow sequences of plain or simply quoted scalars (``[a, b]``), and ``[]`` / ``{}``;
- comments (whole lines, and `` #...`` after a value), blank lines.

It declines: tabs, carriage returns, a byte-order mark, documents markers and directives, anchors,
aliases, tags, block scalars (``|``, ``>``), multi-line scalars, flow mappings with content, nested flow
collections, ``? `` keys, ``- - x``, empty or null or merge keys, a key twice in one mapping, a top level
that is not a mapping, and anything indented unlike its siblings. tests/test_yaml_plain.py checks, on
generated files and on every YAML file of the repository, that the result equals libyaml's, type for type,
whenever it does not decline.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_PLAIN_TAGS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
               "tag:yaml.org,2002:float")
_BAD_PLAIN_START = frozenset("-?:,[]{}#&*!|>'\"%@`")  # a plain scalar may not start with these


# what libyaml's reader refuses (it names the character): left to it
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# a plain scalar in a flow collection: up to a flow indicator, a colon (': ' ends a mapping's key; libyaml
# and YAML 1.1 differ on others, left to libyaml) or a comment
_FLOW_PLAIN = re.compile(r"(?:[^,\[\]{}:#?]|(?<! )#)*")


class Decline(Exception):
    """The text is outside what this reader accepts: read it with libyaml."""


class _Scalars:
    """Plain scalar text -> value, typed exactly as the loader types it (cached: most values repeat)."""

    def __init__(self, loader_cls):
        self.loader = loader_cls("")
        self.resolve = self.loader.resolve
        self.ctors = self.loader.yaml_constructors
        self.cache: dict = {}
        self.flows: dict = {}  # one-line flow sequence text -> its items
        # a plain scalar whose first character starts no implicit resolver is a string (as in resolve())
        self.typed_first = frozenset(self.loader.yaml_implicit_resolvers) | {""}

    def plain(self, text: str):
        v = self.cache.get(text, self)
        if v is not self:
            return v
        if not text or text[0] in _BAD_PLAIN_START and not (text[0] in "-?:" and len(text) > 1 and text[1] != " "):
            raise Decline
        if ": " in text or text.endswith(":") or " #" in text or "\t" in text:
            raise Decline
        if text[0] not in self.typed_first:
            return text  # not cached: most such texts (names, addresses) appear once
        if text.isdigit() and text.isascii() and (text[0] != "0" or text == "0"):
            return int(text)  # a decimal integer, as construct_yaml_int reads it (a leading 0 is octal there)
        tag = self.resolve(yaml.ScalarNode, text, (True, False))
        if tag == _STR:
            v = text
        elif tag in _PLAIN_TAGS:
            v = self.ctors[tag](self.loader, yaml.ScalarNode(tag, text))
        else:
            raise Decline  # a merge key, or a tag this reader does not build
        self.cache[text] = v
        return v

    def close(self) -> None:
        self.loader.dispose()


def _quoted(text: str) -> tuple[str, str]:
    """(the string, what follows it) for text starting with a quote; Decline for escapes or no closing quote."""
    q = text[0]
    end = text.find(q, 1)
    if end < 0:
        raise Decline  # continues on the next line
    body = text[1:end]
    if q == "'" and text[end + 1:end + 2] == "'":
        raise Decline  # '' is an escaped quote
    if q == '"' and "\\" in body:
        raise Decline
    return body, text[end + 1:]


def _after_value(rest: str) -> None:
    """What may follow a quoted scalar or a flow sequence on its line: nothing, or spaces and a comment."""
    if rest and (rest[0] != " " or rest.lstrip(" ")[:1] not in ("", "#")):
        raise Decline


def _value(text: str, scalars: _Scalars):
    """A value written on the key's (or the dash's) line; text has no leading spaces and is not empty."""
    c = text[0]
    if c == '"' or c == "'":
        body, rest = _quoted(text)
        _after_value(rest)
        return body
    if c == "[" or c == "{":
        known = scalars.flows.get(text)
        if known is None:
            known, pos = _flow(text, 0, scalars)
            _after_value(text[pos:])
            scalars.flows[text] = known  # `outputs: [out]` 50,000 times: read once
        return _copy(known)  # a new list or mapping each time: the data is changed later (overrides)
    cut = text.find(" #")
    if cut >= 0:
        text = text[:cut]
    return scalars.plain(text.rstrip(" "))


def _whole_flow(text: str, lines: list, at: int, ind: int) -> tuple[str, int]:
    """A flow collection that goes on over the lines after ``lines[at]`` (each indented more than ``ind``),
    as one line, and the index of the line after it. Its line breaks fold to spaces, as they do between
    items and inside plain scalars. Quotes and comments in it, and blank lines, are left to libyaml."""
    depth = text.count("[") + text.count("{") - text.count("]") - text.count("}")
    if depth <= 0:
        return text, at + 1
    parts = [text.rstrip(" ")]
    while depth > 0:
        at += 1
        if at >= len(lines):
            raise Decline
        line = lines[at]
        s = line.lstrip(" ")
        if not s or len(line) - len(s) <= ind:
            raise Decline
        s = s.rstrip(" ")
        parts.append(s)
        depth += s.count("[") + s.count("{") - s.count("]") - s.count("}")
    joined = " ".join(parts)
    if "#" in joined or "'" in joined or '"' in joined:
        raise Decline
    return joined, at + 1


def _block_scalar(header: str, lines: list, at: int, ind: int) -> tuple[str, int]:
    """A literal (``|``) or folded (``>``) block scalar whose header ends ``lines[at]``, with clip or strip
    (``-``) chomping, under a key indented ``ind``: (its text, the index of the line after it). Only the
    plain form: every content line at one indentation, no blank line between content lines, no trailing
    spaces, no explicit indentation or keep chomping (``+``); else Decline."""
    if header not in ("|", "|-", ">", ">-"):
        raise Decline
    content: list = []
    width = -1
    blank = False
    at += 1
    while at < len(lines):
        line = lines[at]
        s = line.lstrip(" ")
        if not s:
            if line:
                raise Decline  # spaces only: content or not depends on their number
            blank = True  # trailing (ignored by clip and strip chomping) unless content follows
            at += 1
            continue
        here = len(line) - len(s)
        if here <= ind:
            break
        if width < 0:
            width = here
        if here != width or blank or s[-1] == " ":
            raise Decline  # more indented lines, an inner blank line, trailing spaces: libyaml's rules
        content.append(s)
        last = at
        at += 1
    if not content:
        raise Decline
    text = ("\n" if header[0] == "|" else " ").join(content)
    # clip keeps the last content line's line break: there is none when it ends the file
    return (text if header.endswith("-") or last == len(lines) - 1 else text + "\n"), at


def _put(m: dict, k, v: str, lines: list, at: int, ind: int, scalars: _Scalars) -> tuple:
    """Store in ``m`` the value written after ``k:`` (indented ``ind``) on ``lines[at]``: (the pending key,
    when its value is the block below, else None; the index of the next line to read, 0 for the next)."""
    if v and v[0] in "|>":
        m[k], after = _block_scalar(v.rstrip(" "), lines, at, ind)
        return None, after
    if v and v[0] in "[{":
        v, after = _whole_flow(v, lines, at, ind)
        m[k] = _value(v, scalars)
        return None, after
    if v and v[0] != "#":
        m[k] = _value(v, scalars)
        return None, 0
    m[k] = None
    return (m, k, ind), 0


def _copy(v):
    if v.__class__ is list:
        return [_copy(x) for x in v]
    if v.__class__ is dict:
        return {k: _copy(x) for k, x in v.items()}
    return v


def _flow(text: str, pos: int, scalars: _Scalars) -> tuple[Any, int]:
    """A flow sequence or mapping starting at ``text[pos]`` (``[`` or ``{``) and ending on this line:
    (its data, the position after its closing bracket). Items are plain or quoted scalars or flow
    collections; a mapping's entries are ``key: value``."""
    is_map = text[pos] == "{"
    close = "}" if is_map else "]"
    out: Any = {} if is_map else []
    pos += 1
    n = len(text)
    while True:
        while pos < n and text[pos] == " ":
            pos += 1
        if pos >= n:
            raise Decline  # continues on the next line
        if text[pos] == close:
            return out, pos + 1
        item, pos = _flow_item(text, pos, scalars)
        if is_map:
            if item.__class__ in (list, dict) or item is None or pos >= n or text[pos] != ":" or \
                    pos + 1 >= n or text[pos + 1] != " ":
                raise Decline  # a complex or null key, or a key without ': value'
            if item in out:
                raise Decline
            value, pos = _flow_item(text, pos + 2, scalars)
            out[item] = value
        else:
            out.append(item)
        while pos < n and text[pos] == " ":
            pos += 1
        if pos >= n:
            raise Decline
        if text[pos] == ",":
            pos += 1
        elif text[pos] != close:
            raise Decline


def _flow_item(text: str, pos: int, scalars: _Scalars) -> tuple[Any, int]:
    n = len(text)
    while pos < n and text[pos] == " ":
        pos += 1
    if pos >= n:
        raise Decline
    c = text[pos]
    if c == "[" or c == "{":
        return _flow(text, pos, scalars)
    if c == "'" or c == '"':
        body, rest = _quoted(text[pos:])
        return body, n - len(rest)
    m = _FLOW_PLAIN.match(text, pos)
    word = m.group().rstrip(" ")
    if not word or word[0] in "?:-" and (len(word) == 1 or word[1] == " ") or word[0] in "?:":
        raise Decline  # an indicator in a flow context
    return scalars.plain(word), pos + len(word)


def _split_key(s: str, scalars: _Scalars):
    """(key, value text) of a ``key: value`` / ``key:`` line (s without indentation), or None: not a key."""
    c = s[0]
    if c == '"' or c == "'":
        body, rest = _quoted(s)
        rest = rest.lstrip(" ")
        if not rest.startswith(":") or (len(rest) > 1 and rest[1] != " "):
            raise Decline
        if not body:
            raise Decline  # an empty key
        return body, rest[1:].lstrip(" ")
    i = s.find(": ")
    if i < 0:
        if s.endswith(":"):
            i = len(s) - 1
        else:
            return None
    key = s[:i].rstrip(" ")
    if not key:
        raise Decline
    k = scalars.plain(key)
    if k is None:
        raise Decline  # a null key
    return k, s[i + 1:].lstrip(" ")


def load_plain(text: str, loader_cls) -> Any:
    """The data of ``text`` (None for a file of nothing but comments and blank lines), or Decline."""
    if "\t" in text or "\r" in text or text.startswith("\ufeff") or _NOT_PRINTABLE.search(text):
        raise Decline
    scalars = _Scalars(loader_cls)
    try:
        return _read(text, scalars)
    finally:
        scalars.close()


def _read(text: str, scalars: _Scalars) -> Any:
    root: dict | None = None
    # open blocks, innermost last: [indent, container, is_map]; a mapping's ``pending`` key waits for its value
    stack: list = []
    pending = None  # (mapping, key, indent of the key): a key with no value on its line yet
    plain, typed_first = scalars.plain, scalars.typed_first
    lines = text.split("\n")
    skip = 0  # lines up to this index were read with the line before (a block scalar, a long flow list)
    for at, line in enumerate(lines):
        if at < skip:
            continue
        s = line.lstrip(" ")
        if not s or s[0] == "#":
            continue
        ind = len(line) - len(s)
        if ind == 0 and (s.startswith("---") or s.startswith("...") or s[0] == "%"):
            raise Decline
        if s[0] == "-" and (len(s) == 1 or s[1] == " "):
            item = s[1:].lstrip(" ")
            if not item or item.startswith("- ") or item == "-":
                raise Decline  # a nested block under a bare dash, or - - x
            if pending is not None:
                m, k, kind = pending
                if ind < kind:
                    raise Decline
                seq: list = []
                m[k] = seq
                pending = None
                stack.append([ind, seq, False])
            else:
                while stack and stack[-1][0] > ind:
                    stack.pop()
                if not stack or stack[-1][0] != ind or stack[-1][2]:
                    raise Decline  # not the next item of an open sequence
                seq = stack[-1][1]
            item_ind = ind + len(s) - len(item)
            kv = None if item[0] in "[{" else _split_key(item, scalars)
            if kv is None:
                if item[0] in "[{":
                    item, skip = _whole_flow(item, lines, at, ind)
                elif item[0] in "|>":
                    item, skip = _block_scalar(item.rstrip(" "), lines, at, ind)
                    seq.append(item)
                    continue
                seq.append(_value(item, scalars))
                continue
            m = {}
            seq.append(m)
            stack.append([item_ind, m, True])
            k, v = kv
            pending, skip = _put(m, k, v, lines, at, item_ind, scalars)
            continue
        # a key line: ``key: value`` with plain text both sides is most lines, read inline here; anything
        # else goes through _split_key and _value
        i = s.find(": ")
        if i < 0 and s[-1] == ":":
            i = len(s) - 1
        key = s[:i]
        if i > 0 and s[0] not in _BAD_PLAIN_START and key[-1] not in " :" and " #" not in key:
            k = key if key[0] not in typed_first else plain(key)
            if k is None:
                raise Decline  # a null key
            v = s[i + 1:].lstrip(" ")
            if v and v[0] not in _BAD_PLAIN_START and v[-1] not in " :" and " #" not in v and ": " not in v:
                v = (v if v[0] not in typed_first else plain(v),)  # a value, boxed (None is a value too)
        else:
            kv = _split_key(s, scalars)
            if kv is None:
                raise Decline  # a scalar line: a multi-line value, or a top level that is not a mapping
            k, v = kv
        if pending is not None:
            m, pk, kind = pending
            pending = None
            if ind > kind:
                child: dict = {}
                m[pk] = child
                stack.append([ind, child, True])
            # else: the pending key's value stays None (``key:`` with nothing under it)
        if root is None:
            if ind != 0:
                raise Decline
            root = {}
            stack.append([0, root, True])
        while stack and stack[-1][0] > ind:
            stack.pop()
        if not stack or stack[-1][0] != ind:
            raise Decline  # indented unlike any open block
        top = stack[-1]
        if not top[2]:
            # a key at the indentation of an indentless sequence: that sequence has ended
            stack.pop()
            if not stack or stack[-1][0] != ind or not stack[-1][2]:
                raise Decline
            top = stack[-1]
        m = top[1]
        if k in m:
            raise Decline  # a key twice (reported with its lines by the libyaml path)
        if v.__class__ is tuple:
            m[k] = v[0]
        else:
            pending, skip = _put(m, k, v, lines, at, ind, scalars)
    return root
