"""The code a python step can reach: its function, and the functions, classes and constants it names.

A step's code fingerprint is not its module's file hash but one entry per piece of code its function can
reach, found by reading source with :mod:`ast` (never importing it):

- ``src/pl/steps.py:train``: a top-level function, class or constant, hashed in a normal form (the
  unparsed AST without comments, docstrings, other bare strings or formatting). A function reaches
  what its body, decorators, default values and annotations name; a class what its bases, decorators and
  body name; a constant what its value names; transitively, across the project's modules (attribute
  chains like ``util.weight`` and ``pl.util.weight`` are followed through imports and re-exports).
- ``src/pl/util.py:<module>``: the module-level code that runs on import (statements other than defs,
  classes, constant assignments and imports; the body of ``if __name__ == "__main__":`` does not run on
  import and does not count). Importing a module runs it, its parent packages and the modules it imports,
  so every step depends on that part of each module it imports.
- ``src/pl/plugins.py``: the whole module (normalised), when use of it cannot be resolved statically: the
  module object used as a value (``getattr(util, name)``, passed to a function), a dynamic import of a
  constant name (``importlib.import_module("pl.plugins")``), or code that reads its own module's namespace
  (``globals()``, ``vars()``, ``eval``, ``exec``, or a dynamic import of a computed name: the imported
  module cannot be known, so declare it in ``deps:``). A module that does not parse counts by its bytes.

Analysis of a module (per file content, so 50,000 steps calling one function cost one analysis) is pure and
kept in a memo keyed by the file's hash (:class:`CodeMemo`, ``.mlspec/cache/code.json``): with the stat-keyed
:class:`~mlspec.hashing.HashCache`, a re-plan over unchanged code reads and parses no source file. The memo
holds names and hashes only, never source.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from mlspec.hashing import HashCache, hash_bytes

MODULE = "<module>"  # the pseudo-symbol of a module's import-time code (Python's own name for it)
ANALYSIS_VERSION = 1  # bump when analyse() changes what it returns: the memo is then discarded

_DYNAMIC_IMPORTS = {"__import__", "import_module"}
_OWN_NAMESPACE = {"globals", "eval", "exec"}  # code that reads its module's namespace by name
_ATTR_CALLS = {"getattr", "hasattr", "setattr", "delattr"}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


# --- analysis of one module (pure) ------------------------------------------------------------------
def _strip_strings(tree: ast.AST) -> None:
    """Drop docstrings and other bare string statements (no-ops) from every body, in place."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                            and isinstance(s.value.value, str))]
            if len(kept) != len(body):
                node.body = kept or [ast.Pass()]


def _stmt_hash(stmt: ast.stmt) -> str:
    return hash_bytes(ast.unparse(stmt).encode())


def _is_main_guard(stmt: ast.stmt) -> bool:
    t = stmt.test if isinstance(stmt, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def _absolute(module: str | None, level: int, package: str) -> str:
    if not level:
        return module or ""
    base = package.split(".") if package else []
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _import_bindings(stmt: ast.Import | ast.ImportFrom, package: str) -> tuple[dict, list]:
    """{bound name: target chain ["m", module, attr...]} and the modules the statement imports."""
    binds, imported = {}, []
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            imported.append(a.name)
            if a.asname:
                binds[a.asname] = ["m", a.name]
            else:
                binds[a.name.partition(".")[0]] = ["m", a.name.partition(".")[0]]
        return binds, imported
    mod = _absolute(stmt.module, stmt.level, package)
    if mod:
        imported.append(mod)
    for a in stmt.names:
        if a.name == "*":
            continue
        imported.append(f"{mod}.{a.name}" if mod else a.name)  # a submodule, if it is one
        binds[a.asname or a.name] = ["m", mod, a.name] if mod else ["m", a.name]
    return binds, imported


def _bound_names(body: list) -> tuple[set, set]:
    """Names a function body binds (its locals, imports aside) and the names it declares global."""
    bound, declared = set(), set()
    todo = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            todo.extend(node.decorator_list)
            continue  # its body is its own scope
        if isinstance(node, (ast.Lambda, *_COMPREHENSIONS)):
            continue
        if isinstance(node, ast.Global):
            declared.update(node.names)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
        todo.extend(ast.iter_child_nodes(node))
    return bound - declared, declared


class _Refs:
    """Collects what a piece of code reads from outside itself, as reference lists.

    ``["g", name, attr...]`` a module-level name of this module (and the attribute chain read from it);
    ``["m", module, attr...]`` a chain on an imported module; ``["i", module]`` a module that is imported
    (its import-time code runs, when it is a project module); ``["w", module]`` the whole module.
    """

    def __init__(self, modname: str, package: str):
        self.modname, self.package = modname, package
        self.out: list = []

    def emit_name(self, name: str, attrs: list, env: dict) -> None:
        target = env.get(name)
        if target is None:
            self.out.append(["g", name, *attrs])
        elif target is not True:  # a function-local import
            self.out.append([*target, *attrs])

    def chain(self, node) -> tuple[str | None, list]:
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        return (node.id if isinstance(node, ast.Name) else None), attrs[::-1]

    def visit(self, node, env: dict) -> None:
        """``env``: name -> True (a local) or a target chain (a local import) for the enclosing functions."""
        if isinstance(node, ast.Name):
            self.emit_name(node.id, [], env)
        elif isinstance(node, ast.Attribute):
            root, attrs = self.chain(node)
            if root is None:
                inner = node
                while isinstance(inner, ast.Attribute):
                    inner = inner.value
                self.visit(inner, env)
            else:
                self.emit_name(root, attrs, env)
        elif isinstance(node, ast.Call):
            self.call(node, env)
        elif isinstance(node, _SCOPES):
            self.function(node, env)
        elif isinstance(node, ast.ClassDef):
            for sub in (*node.decorator_list, *node.bases, *node.keywords):
                self.visit(sub, env)
            for stmt in node.body:  # class-level names are not visible in methods: treat them as globals
                self.visit(stmt, env)
        elif isinstance(node, _COMPREHENSIONS):
            inner = dict(env)
            for gen in node.generators:
                self.visit(gen.iter, inner)
                for n in ast.walk(gen.target):
                    if isinstance(n, ast.Name):
                        inner[n.id] = True
                for cond in gen.ifs:
                    self.visit(cond, inner)
            for part in ((node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)):
                self.visit(part, inner)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            _binds, imported = _import_bindings(node, self.package)
            self.out.extend(["i", m] for m in imported)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, env)

    def call(self, node: ast.Call, env: dict) -> None:
        func_root, func_attrs = self.chain(node.func)
        name = func_attrs[-1] if func_attrs else func_root
        plain = func_root is not None and not func_attrs and func_root not in env
        args = node.args
        if name in _DYNAMIC_IMPORTS and (plain or func_attrs):
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) \
                    and not args[0].value.startswith("."):
                self.out += [["i", args[0].value], ["w", args[0].value]]
            else:
                self.out.append(["w", self.modname])
        elif plain and func_root in _OWN_NAMESPACE:
            self.out.append(["w", self.modname])
        elif plain and func_root in _ATTR_CALLS and len(args) >= 2:
            root, attrs = self.chain(args[0])
            if root is not None:
                const = isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)
                self.emit_name(root, [*attrs, args[1].value if const else "*"], env)
                for sub in (*args[1:], *node.keywords):
                    self.visit(sub, env)
                return
        self.visit(node.func, env)
        for sub in (*args, *node.keywords):
            self.visit(sub, env)

    def function(self, node, env: dict) -> None:
        a = node.args
        if not isinstance(node, ast.Lambda):
            for sub in node.decorator_list:
                self.visit(sub, env)
            if node.returns:
                self.visit(node.returns, env)
        for sub in (*a.defaults, *[d for d in a.kw_defaults if d is not None]):
            self.visit(sub, env)
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
        for p in params:
            if p.annotation is not None:
                self.visit(p.annotation, env)
        body = node.body if isinstance(node.body, list) else [node.body]
        bound, declared = _bound_names(body)
        inner = {k: v for k, v in env.items() if k not in declared}
        for p in params:
            inner[p.arg] = True
        for n in bound:
            inner[n] = True
        for stmt in body:  # imports inside the function: resolvable locals
            for sub in ast.walk(stmt):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    binds, _ = _import_bindings(sub, self.package)
                    inner.update({k: v for k, v in binds.items() if k not in declared})
        for stmt in body:
            self.visit(stmt, inner)


def _package(modname: str, is_pkg: bool) -> str:
    return modname if is_pkg else modname.rpartition(".")[0]


def analyse(source: bytes, modname: str, is_pkg: bool) -> dict:
    """A module's symbols: ``{"symbols": {name: [hash|None, refs, alias|None]}, "star": [...], "whole": h}``.

    ``symbols[MODULE]`` is its import-time code. ``alias`` is the target chain of a name bound only by one
    import (so that ``util.weight`` follows into ``util``). A module that does not parse is
    ``{"error": msg, "whole": hash of its bytes}``.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        return {"error": str(exc), "whole": hash_bytes(source)}
    _strip_strings(tree)
    package = _package(modname, is_pkg)
    parts: dict[str, list] = {}  # name -> [(hash or None, refs, alias or None)] in source order
    import_time: list = []  # hashes of import-time statements
    import_refs: list = []
    star: list = []
    whole: list = []
    for stmt in tree.body:
        h = _stmt_hash(stmt)
        whole.append(h)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            binds, imported = _import_bindings(stmt, package)
            import_refs.extend(["i", m] for m in imported)
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                import_time.append(h)  # changes how the whole module compiles
                continue
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                star.append(_absolute(stmt.module, stmt.level, package))
            for name, target in binds.items():
                parts.setdefault(name, []).append((None, [], target))
            continue
        refs = _Refs(modname, package)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            refs.visit(stmt, {})
            parts.setdefault(stmt.name, []).append((h, refs.out, None))
            continue
        targets = _assigned_names(stmt)
        if targets is not None:
            if getattr(stmt, "value", None) is not None:
                refs.visit(stmt.value, {})
            if isinstance(stmt, ast.AnnAssign):
                refs.visit(stmt.annotation, {})
            if isinstance(stmt, ast.AugAssign):
                refs.out.append(["g", stmt.target.id])
            for name in targets:
                parts.setdefault(name, []).append((h, refs.out, None))
            continue
        if _is_main_guard(stmt) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue  # does not run on import / does nothing
        refs.visit(stmt, {})
        import_time.append(h)
        import_refs.extend(refs.out)
        for name, extra in _module_level_bound(stmt, package).items():  # reaching it reaches that code
            parts.setdefault(name, []).append((None, [["g", MODULE], *extra], None))
    symbols: dict = {}
    for name, ps in parts.items():
        if len(ps) == 1 and ps[0][2] is not None:
            symbols[name] = [None, [], ps[0][2]]
            continue
        hashes = [p[0] for p in ps if p[0]]
        refs = [r for p in ps for r in p[1]] + [p[2] for p in ps if p[2] is not None]
        h = hashes[0] if len(hashes) == 1 else hash_bytes("\n".join(hashes).encode()) if hashes else None
        symbols[name] = [h, _dedup(refs), None]
    symbols[MODULE] = [hash_bytes("\n".join(import_time).encode()), _dedup(import_refs), None]
    return {"symbols": symbols, "star": star, "whole": hash_bytes("\n".join(whole).encode())}


def _dedup(refs: list) -> list:
    seen, out = set(), []
    for r in refs:
        t = tuple(r)
        if t not in seen:
            seen.add(t)
            out.append(r)
    return out


def _assigned_names(stmt: ast.stmt) -> list | None:
    """The names a module-level constant assignment binds, or None when it is not one."""
    if isinstance(stmt, ast.Assign):
        names = []
        for t in stmt.targets:
            for n in ast.walk(t):
                if isinstance(n, (ast.Attribute, ast.Subscript)):
                    return None  # `obj.x = ...` / `d[k] = ...` changes something else: import-time code
                if isinstance(n, ast.Name):
                    names.append(n.id)
        return names
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    type_alias = getattr(ast, "TypeAlias", None)
    if type_alias is not None and isinstance(stmt, type_alias):
        return [stmt.name.id]
    return None


def _module_level_bound(stmt: ast.stmt, package: str) -> dict:
    """Names a compound module-level statement (if/try/for/with...) binds: name -> import targets it may be."""
    names: dict = {}
    for n in ast.walk(stmt):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            if not isinstance(n, ast.Lambda):
                names.setdefault(n.name, [])
        elif isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            names.setdefault(n.id, [])
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for name, target in _import_bindings(n, package)[0].items():
                names.setdefault(name, []).append(target)
    return names


# --- the memo of analyses, kept between plans -------------------------------------------------------
class CodeMemo:
    """Analyses by (module, file hash), in one JSON file beside the hash cache; only used entries are kept."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.entries: dict = {}
        self.used: set = set()
        self.dirty = False
        if self.path and self.path.is_file():
            try:
                doc = json.loads(self.path.read_text())
                if doc.get("version") == ANALYSIS_VERSION and isinstance(doc.get("modules"), dict):
                    self.entries = doc["modules"]
            except (ValueError, OSError, AttributeError):
                self.entries = {}  # only a cache: start again

    def get(self, key: str, make) -> dict:
        self.used.add(key)
        hit = self.entries.get(key)
        if hit is None:
            hit = self.entries[key] = make()
            self.dirty = True
        return hit

    def save(self) -> None:
        if not self.path or not (self.dirty or len(self.used) != len(self.entries)):
            return
        from mlspec.storage import atomic_write_local

        keep = {k: v for k, v in self.entries.items() if k in self.used}
        atomic_write_local(self.path, json.dumps({"version": ANALYSIS_VERSION, "modules": keep},
                                                 separators=(",", ":")).encode())
        self.dirty = False


# --- linking: what a step reaches --------------------------------------------------------------------
class CodeGraph:
    """Resolves references across the project's modules; reach() is memoised per (module, function)."""

    def __init__(self, project_dir: Path, roots: list[Path], cache: HashCache, memo: CodeMemo):
        self.project_dir, self.roots, self.cache, self.memo = project_dir, roots, cache, memo
        self._files: dict[str, tuple | None] = {}
        self._mods: dict[str, dict | None] = {}
        self._reach: dict[tuple, dict] = {}

    def _file(self, modname: str) -> tuple | None:
        """(path, relative path, is package) of a project module, or None."""
        if modname in self._files:
            return self._files[modname]
        found = None
        if modname and all(p.isidentifier() for p in modname.split(".")):
            parts = modname.split(".")
            for root in self.roots:
                base = root.joinpath(*parts)
                for cand, is_pkg in ((base.with_suffix(".py"), False), (base / "__init__.py", True)):
                    if cand.is_file():
                        found = (cand, Path(os.path.relpath(cand, self.project_dir)).as_posix(), is_pkg)
                        break
                if found:
                    break
        self._files[modname] = found
        return found

    def module(self, modname: str) -> dict | None:
        """The analysis of a project module (with its "rel" path), or None when it is not in the project."""
        if modname in self._mods:
            return self._mods[modname]
        f = self._file(modname)
        info = None
        if f is not None:
            path, rel, is_pkg = f
            digest = self.cache.file(path)[0]
            info = dict(self.memo.get(f"{modname}:{int(is_pkg)}:{digest}",
                                      lambda: analyse(path.read_bytes(), modname, is_pkg)), rel=rel)
        self._mods[modname] = info
        return info

    def reach(self, modname: str, func: str) -> dict:
        """{"rel/path.py:name" or "rel/path.py" (whole module): hash} of what ``modname:func`` can reach."""
        key = (modname, func)
        if key not in self._reach:
            self._reach[key] = _Reach(self).run(modname, func)
        return self._reach[key]


class _Reach:
    def __init__(self, graph: CodeGraph):
        self.g = graph
        self.symbols: set = set()  # (module, name)
        self.whole: set = set()
        self.imported: set = set()
        self.todo: list = []

    def run(self, modname: str, func: str) -> dict:
        self.import_module(modname)
        info = self.g.module(modname)
        if info is not None and not self.resolve(modname, [func]):
            self.whole_module(modname)  # not found statically (made at import time): the whole module
        while self.todo:
            mod, refs = self.todo.pop()
            for ref in refs:
                self.follow(mod, ref)
        out = {}
        for mod, name in self.symbols:
            if mod not in self.whole:
                info = self.g.module(mod)
                h = info["symbols"][name][0]
                if h is not None:
                    out[f"{info['rel']}:{name}"] = h
        for mod in self.whole:
            info = self.g.module(mod)
            out[info["rel"]] = info["whole"]
        return dict(sorted(out.items()))

    def follow(self, mod: str, ref: list) -> None:
        kind = ref[0]
        if kind == "g":
            self.resolve(mod, ref[1:])
        elif kind == "m":
            self.resolve_module(ref[1], ref[2:])
        elif kind == "i":
            self.import_module(ref[1])
        elif kind == "w":
            self.import_module(ref[1])
            self.whole_module(ref[1])

    def add(self, mod: str, name: str) -> None:
        if (mod, name) in self.symbols:
            return
        self.symbols.add((mod, name))
        self.todo.append((mod, self.g.module(mod)["symbols"][name][1]))

    def import_module(self, mod: str) -> None:
        """Importing ``mod`` runs the import-time code of it and of its parent packages."""
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            m = ".".join(parts[:i])
            if m in self.imported:
                continue
            self.imported.add(m)
            info = self.g.module(m)
            if info is None:
                continue
            if "error" in info:
                self.whole.add(m)
            else:
                self.add(m, MODULE)

    def whole_module(self, mod: str) -> None:
        info = self.g.module(mod)
        if info is None or mod in self.whole:
            return
        self.whole.add(mod)
        for name in info.get("symbols", {}):
            self.add(mod, name)

    def resolve_module(self, mod: str, attrs: list) -> None:
        if self.g.module(mod) is None:
            return  # not a project module: installed packages are not part of fingerprints
        self.import_module(mod)
        if not attrs or attrs[0] == "*":
            self.whole_module(mod)  # the module object itself is used: anything in it may be
        else:
            self.resolve(mod, attrs)

    def resolve(self, mod: str, chain: list, _depth: int = 0) -> bool:
        """Reach ``chain[0]`` as bound in project module ``mod`` (following imports); False if not found."""
        info = self.g.module(mod)
        if info is None:
            return False
        if "error" in info:
            self.whole.add(mod)
            return True
        name, rest = chain[0], chain[1:]
        sym = info["symbols"].get(name)
        if sym is not None:
            if sym[2] is not None and sym[0] is None:  # only an import: follow it with the rest of the chain
                target = sym[2]
                self.resolve_module(target[1], target[2:] + rest)
            else:
                self.add(mod, name)
            return True
        if self.g.module(f"{mod}.{name}") is not None:
            self.resolve_module(f"{mod}.{name}", rest)
            return True
        found = False
        if _depth < 20:
            for other in info.get("star", ()):
                if self.g.module(other) is not None:
                    found = self.resolve(other, chain, _depth + 1) or found
        return found
