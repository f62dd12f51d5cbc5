"""YAML sources with positions: every key path maps back to its file, line and column.

PyYAML's C loader builds the node graph once; we walk it for duplicate keys and positions, then let the
constructor turn the same nodes into plain data. Hydra re-reads the files for composition; we read them
here for diagnostics (syntax errors, tabs, empty files, duplicate keys) and to locate every key path.
"""

from __future__ import annotations

import gc
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mlspec.errors import Diagnostic, SpecError

# Aliases (`*name`) may repeat at most this many nodes in one file, counted with nesting: an alias of a
# list of 9 aliases of a 9-item list repeats 1 + 9 * 10 nodes. A spec that needs more is refused before
# anything expands it (a 557-byte "billion laughs" file expands to ~400 million nodes). docs/errors.md.
MAX_ALIAS_NODES = 1_000_000

try:  # libyaml is ~10x faster; fall back to the pure-Python loader when it is missing
    _Base = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Base = yaml.SafeLoader


class _Loader(_Base):
    """YAML as OmegaConf reads it (so Hydra and our fast path agree): `1e-3` is a float, dates stay strings.

    While constructing, it notices duplicate or null keys (``suspect``); only then does parse_yaml walk
    the node tree to report them with their positions.
    """

    suspect = False

    def construct_mapping(self, node, deep=False):
        if not self.suspect:
            keys = set()
            for knode, _ in node.value:
                if not isinstance(knode, yaml.ScalarNode) or knode.tag == "tag:yaml.org,2002:merge":
                    continue
                if knode.tag == "tag:yaml.org,2002:null" or knode.value in keys:
                    self.suspect = True
                    break
                keys.add(knode.value)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))
_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in _Loader.yaml_implicit_resolvers.items()}


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_SCALARS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                  "tag:yaml.org,2002:float")


def _construct_tree(loader: _Loader, root: yaml.Node) -> tuple[Any, bool]:
    """The data of a node *tree* (no node appears twice: the file has no aliases), and whether a mapping
    has a duplicate or null key. Same result as ``loader.construct_document`` at a third of the cost: plain
    maps, lists and scalars are built directly; anything else (merge keys, explicit tags) goes through the
    loader's own constructors."""
    ctors = loader.yaml_constructors
    scalar_node, mapping_node, sequence_node = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode
    suspect = False

    def build(node):
        nonlocal suspect
        cls, tag = node.__class__, node.tag
        if cls is scalar_node:
            if tag == _STR:
                return node.value
            if tag in _PLAIN_SCALARS:
                return ctors[tag](loader, node)
        elif cls is mapping_node and tag == _MAP:
            out = {}
            for knode, vnode in node.value:
                if knode.__class__ is not scalar_node or knode.tag == _MERGE:
                    return loader.construct_object(node, deep=True)
                if knode.tag == _NULL:
                    suspect = True
                out[build(knode)] = build(vnode)
            if len(out) != len(node.value):
                suspect = True
            return out
        elif cls is sequence_node and tag == _SEQ:
            return [build(item) for item in node.value]
        return loader.construct_object(node, deep=True)

    data = build(root)
    return data, suspect or loader.suspect


class _Unusual(Exception):
    """The file has something the event reader leaves to the node tree (see _data_from_events)."""


_NO_KEY = object()


def _data_from_events(text: str) -> Any:
    """The data of ``text`` read straight from libyaml's events, without building the node tree: the
    result of ``_construct_tree`` on a file of plain mappings, lists and scalars, a third faster (0.4 s of
    a 50,000-step spec: no node object, and no mark object kept, for its 850,000 nodes).

    Positions are not needed to build the data: YamlSource parses again for them when a message needs one.
    Anything else raises: an anchor, alias or explicit tag, a key that is not a scalar, a null key, a
    merge key (``<<``), a key twice in one mapping (or two keys Python finds equal), more than one
    document, or a YAML error. parse_yaml then reads the file the general way, which reports each of
    them as before.
    """
    from yaml.events import (DocumentEndEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent,
                             ScalarEvent, SequenceEndEvent, SequenceStartEvent, StreamEndEvent)

    loader = _Loader(text)
    try:
        get, resolve, ctors, scalar_node = loader.get_event, loader.resolve, loader.yaml_constructors, yaml.ScalarNode
        get()  # StreamStartEvent
        ev = get()
        if ev.__class__ is StreamEndEvent:
            return None  # an empty file
        if ev.__class__ is not DocumentStartEvent:
            raise _Unusual
        tags: dict = {}  # plain scalar text -> its tag (a plain scalar's tag depends on its text alone)
        built: dict = {tag: {} for tag in _PLAIN_SCALARS}  # null, booleans, numbers: immutable, built once
        root: Any = None
        stack: list = []
        cur: Any = None  # the mapping or list being filled (None: at the top)
        is_map = False
        key: Any = _NO_KEY  # in a mapping: the key read, waiting for its value
        while True:
            ev = get()
            cls = ev.__class__
            if cls is ScalarEvent:
                if ev.anchor is not None or ev.tag is not None:
                    raise _Unusual
                value = ev.value
                if ev.implicit[0]:  # plain: resolved like the composer does; quoted text is a string
                    tag = tags.get(value)
                    if tag is None:
                        tag = tags[value] = resolve(scalar_node, value, (True, False))
                    if tag != _STR:
                        known = built.get(tag)
                        if known is None or (tag == _NULL and is_map and key is _NO_KEY):
                            raise _Unusual  # a merge key, or a null key (reported from the node tree)
                        v = known.get(value, _NO_KEY)
                        if v is _NO_KEY:
                            v = known[value] = ctors[tag](loader, scalar_node(tag, value))
                        value = v
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                if ev.anchor is not None or ev.tag is not None:
                    raise _Unusual
                value = {} if cls is MappingStartEvent else []
                if cur is None:
                    root = value
                elif is_map:
                    if key is _NO_KEY:
                        raise _Unusual  # a mapping or list as a key
                    cur[key] = value
                    key = _NO_KEY
                else:
                    cur.append(value)
                stack.append((cur, is_map, key))
                cur, is_map, key = value, cls is MappingStartEvent, _NO_KEY
                continue
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                cur, is_map, key = stack.pop()
                continue
            elif cls is DocumentEndEvent:
                break
            else:
                raise _Unusual  # an alias
            if cur is None:
                root = value
            elif not is_map:
                cur.append(value)
            elif key is _NO_KEY:
                if value in cur:
                    raise _Unusual  # a duplicate key
                key = value
            else:
                cur[key] = value
                key = _NO_KEY
        if get().__class__ is not StreamEndEvent:
            raise _Unusual  # a second document
        return root
    finally:
        loader.dispose()


def _alias_problem(root: yaml.Node, file: str, text: str) -> Diagnostic | None:
    """A diagnostic when aliases repeat more than MAX_ALIAS_NODES nodes or an alias contains itself.

    The composer gives an alias the very node object of its anchor, so the node graph is a DAG (or has a
    cycle, for `&a [*a]`): expanded sizes are counted once per distinct node, in time linear in the file.
    """
    size: dict[int, int] = {}
    refs: dict[int, int] = {}
    shared: dict[int, yaml.Node] = {}
    entered: set[int] = set()
    stack: list = [(root, False)]

    def children(node):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                yield k
                yield v
        elif isinstance(node, yaml.SequenceNode):
            yield from node.value

    while stack:
        node, done = stack.pop()
        i = id(node)
        if done:
            total = 1
            for c in children(node):
                ic = id(c)
                total += size[ic]
                r = refs[ic] = refs.get(ic, 0) + 1
                if r == 2:
                    shared[ic] = c
            size[i] = total
            entered.discard(i)
            continue
        if i in size:
            continue
        entered.add(i)
        stack.append((node, True))
        for c in children(node):
            if id(c) in entered:
                line, col = _mark(c)
                name = _anchor_name(c, text)
                return Diagnostic(file, line, col, "", "recursive-alias",
                                  f"the anchor {'&' + name + ' ' if name else ''}is used (as an alias) inside "
                                  "itself: the value would be infinite; remove the alias")
            if id(c) not in size:
                stack.append((c, False))
    extra = size[id(root)] - len(size)
    if extra <= MAX_ALIAS_NODES:
        return None
    # name the anchor whose repeats add the most nodes, at its first alias
    worst = max(shared, key=lambda k: (refs[k] - 1) * size[k])
    node = shared[worst]
    name = _anchor_name(node, text)
    line, col = _mark(node)
    anchor_line = line
    name = name or "?"
    m = re.compile(r"\*" + re.escape(name) + r"(?![^\s,\[\]{}])").search(text, node.start_mark.index)
    if m:
        before = text[:m.start()]
        line, col = before.count("\n") + 1, m.start() - before.rfind("\n")
    return Diagnostic(file, line, col, "", "alias-limit",
                      f"YAML aliases would expand this file by {extra:,} nodes, more than the limit of "
                      f"{MAX_ALIAS_NODES:,} (see docs/errors.md); *{name} (anchor at line {anchor_line}, "
                      f"{size[worst]:,} nodes) is used {refs[worst] - 1} times: write the values out, or use "
                      "fewer nested aliases")


def _anchor_name(node: yaml.Node, text: str) -> str:
    m = re.compile(r"&([^\s,\[\]{}]+)").match(text, node.start_mark.index)
    return m.group(1) if m else ""


def parse_scalar(text: str):
    """A YAML scalar/flow value parsed the way spec files are (used for simple overrides)."""
    return yaml.load(text, Loader=_Loader)

Path_ = tuple  # a key path: ("steps", "train", "params", "C") or ("steps", "x", "outputs", 0)


@dataclass
class YamlSource:
    """A parsed YAML file: its data and the (line, column) of every key and value (1-based).

    Positions are computed from the node tree on first use: a valid spec never needs them.
    """

    file: str  # as shown to the user (relative to the project when possible)
    data: Any
    text: str = ""
    root: Any = field(default=None, repr=False)  # the YAML node tree
    _marks: tuple | None = field(default=None, repr=False)

    def _ensure_marks(self) -> tuple:
        if self._marks is None:
            self._marks = ({}, {})
            if self.root is None and self.text:  # the data came from the parse cache: parse for positions
                self.root = _node_tree(self.text)
            if self.root is not None:
                _walk(self.root, (), self, [])
        return self._marks

    @property
    def key_marks(self) -> dict:
        return self._ensure_marks()[0]

    @property
    def value_marks(self) -> dict:
        return self._ensure_marks()[1]

    def locate(self, path: Path_, prefer_key: bool = False) -> tuple[int, int] | None:
        """Position of the longest prefix of ``path`` present in this file."""
        p = tuple(path)
        while True:
            if prefer_key and p in self.key_marks:
                return self.key_marks[p]
            if p in self.value_marks:
                return self.value_marks[p]
            if p in self.key_marks:
                return self.key_marks[p]
            if not p:
                return None
            p = p[:-1]

    def depth_of(self, path: Path_) -> int:
        """How many leading parts of ``path`` this file defines (0 = none)."""
        p = tuple(path)
        while p:
            if p in self.value_marks:
                return len(p)
            p = p[:-1]
        return 0


def _node_tree(text: str) -> yaml.Node | None:
    """The YAML node tree of text that parsed before (None if it no longer does)."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(node: yaml.Node, path: tuple, src: YamlSource, diags: list[Diagnostic]) -> None:
    src.value_marks[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, tuple[int, int]] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                continue
            key = knode.value if isinstance(knode, yaml.ScalarNode) else str(knode.value)
            if knode.tag == "tag:yaml.org,2002:null":  # `~:`, `null:` or a bare `?`: Hydra rejects it
                line, col = _mark(knode)
                diags.append(Diagnostic(src.file, line, col, ".".join(map(str, path)), "empty-key",
                                        "a key is empty (null); write a name before the ':'"))
            if key in seen:
                line, col = _mark(knode)
                first = seen[key][0]
                shown = str(key).encode("unicode_escape").decode("ascii") if not str(key).isprintable() else key
                diags.append(Diagnostic(src.file, line, col, ".".join(map(str, path + (shown,))),
                                        "duplicate-key",
                                        f"key '{shown}' appears twice in this mapping (first at line {first}); "
                                        "YAML keeps only the last one: remove or rename one"))
            seen[key] = _mark(knode)
            src.key_marks[path + (key,)] = _mark(knode)
            _walk(vnode, path + (key,), src, diags)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            src.key_marks[path + (i,)] = _mark(item)
            _walk(item, path + (i,), src, diags)


def _syntax_diag(file: str, text: str, exc: yaml.YAMLError) -> Diagnostic:
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: located by offset, not by a mark
        before = text[:exc.position]
        ch = exc.character
        code = ord(ch) if isinstance(ch, str) and len(ch) == 1 else ch
        return Diagnostic(file, before.count("\n") + 1, exc.position - before.rfind("\n"), "", "yaml-syntax",
                          f"invalid YAML: character #x{code:04x} is not allowed ({exc.reason})"
                          if isinstance(code, int) else f"invalid YAML: {exc.reason}")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    lines = text.splitlines()
    # Find a tab used for indentation near the error: the most common YAML mistake.
    for i, ln in enumerate(lines, 1):
        stripped = ln.lstrip(" ")
        if stripped.startswith("\t") and (not line or abs(i - line) <= 1 or "\t" in problem):
            return Diagnostic(file, i, len(ln) - len(stripped) + 1, "", "yaml-tab",
                              "tab character used for indentation; YAML indents with spaces only")
    context = getattr(exc, "context", None)
    msg = f"invalid YAML: {problem}"
    if context:
        msg += f" ({context})"
    return Diagnostic(file, line, col, "", "yaml-syntax", msg)


def parse_yaml(text: str, file: str, *, require_mapping: bool = True) -> YamlSource:
    """Parse YAML text into a :class:`YamlSource`; every problem becomes a diagnostic."""
    src = YamlSource(file=file, data=None, text=text)
    diags: list[Diagnostic] = []
    # The cyclic garbage collector runs every few hundred allocations and each run scans the nodes built
    # so far: with it on, a 50,000-step spec takes 5x longer to load. Nothing here makes cycles.
    gc_was_on = gc.isenabled()
    gc.disable()
    maybe_aliases = "*" in text and "&" in text
    read = False
    try:
        if not maybe_aliases:
            from mlspec.yamlplain import Decline, load_plain

            try:  # plain block YAML, line by line (mlspec.yamlplain); anything else: libyaml's events
                src.data, read = load_plain(text, _Loader), True
            except Decline:
                pass
            if not read:
                try:
                    src.data, read = _data_from_events(text), True
                except Exception:  # noqa: BLE001 - anything unusual (or wrong): the general way below says what
                    src.data = None
        if not read:
            loader = _Loader(text)
            try:
                node = loader.get_single_node()
                if node is not None:
                    src.root = node
                    problem = _alias_problem(node, file, text) if maybe_aliases else None
                    if problem is not None:
                        raise SpecError([problem])
                    if maybe_aliases:  # maybe aliases: shared nodes, the loader's constructor
                        src.data, suspect = loader.construct_document(node), loader.suspect
                    else:
                        src.data, suspect = _construct_tree(loader, node)
                    if suspect:  # duplicate or null keys somewhere: walk now to report them
                        src._marks = ({}, {})
                        _walk(node, (), src, diags)
            finally:
                loader.dispose()
    except yaml.YAMLError as exc:
        raise SpecError([_syntax_diag(file, text, exc)]) from None
    except RecursionError:
        raise SpecError([Diagnostic(file, 0, 0, "", "yaml-too-deep",
                                    "the YAML nests lists or mappings too deeply (hundreds of levels) to be read")]
                        ) from None
    finally:
        if gc_was_on:
            # the file's nodes and data live as long as the command: keep later collections from
            # scanning them again and again (they are still freed by reference counting)
            gc.freeze()
            gc.enable()
    check_root(src, require_mapping, diags)
    return src


def check_root(src: YamlSource, require_mapping: bool, diags: list | None = None) -> None:
    """Raise SpecError for ``diags`` and, when a mapping is required, for an empty file or another root type."""
    diags = list(diags or ())
    file = src.file
    if require_mapping:
        if src.data is None:
            diags.append(Diagnostic(file, 1, 1, "", "empty-spec",
                                    "the file is empty; a spec needs at least `project: NAME` "
                                    "(run `mlspec init` for a starting point)"))
        elif not isinstance(src.data, dict):
            kind = type(src.data).__name__.replace("str", "string").replace("list", "list")
            diags.append(Diagnostic(file, 1, 1, "", "root-not-mapping",
                                    f"the top level must be a mapping of keys (project:, steps:, ...), got a {kind}"))
    if diags:
        raise SpecError(diags)


def read_yaml_text(path: str | os.PathLike, shown: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SpecError([Diagnostic(shown, 0, 0, "", "file-not-found", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Diagnostic(shown, 0, 0, "", "not-utf8", f"the file is not UTF-8 text ({exc.reason})")]) from None


def load_yaml(path: str | os.PathLike, shown_as: str | None = None, *, require_mapping: bool = True) -> YamlSource:
    shown = shown_as or str(path)
    return parse_yaml(read_yaml_text(path, shown), shown, require_mapping=require_mapping)


def check_alias_limit(path: str | os.PathLike, shown_as: str | None = None) -> None:
    """Raise SpecError when a YAML file's aliases break the limit (MAX_ALIAS_NODES) or recurse; nothing
    else is checked (a syntax error, an unreadable file: whoever reads the file reports it). For files that
    another parser (Hydra/OmegaConf) reads before load_yaml does: it would expand the aliases."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        return
    if "*" not in text or "&" not in text:
        return
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError:
        return
    finally:
        loader.dispose()
    problem = _alias_problem(node, shown_as or str(path), text) if node is not None else None
    if problem is not None:
        raise SpecError([problem])
