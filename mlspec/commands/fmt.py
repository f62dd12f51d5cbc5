"""`mlspec fmt [--check] [--diff] [FILE|DIR...]`: spec files in one canonical key order and style.

Reviewers read spec files in diffs; one order and one style keep those diffs about what changed. The
canonical order of a mapping's keys is the order of its properties in the JSON Schema (schemas/), with a
step's `matrix` and `fan_out` right after its `params` (what they expand); keys the schema does not name
keep their order, after the known ones; names the user chooses (steps, datasets, params) keep theirs.
Style: two-space indentation, sequences indented under their key (`  - item`), comments, quoting and
flow mappings (`{rows: 3000}`) kept as written, one newline at the end.

Formatting is a round trip through ruamel.yaml, which keeps comments; it changes no value, and `fmt`
checks that: a file whose data would differ after formatting is left alone with an error.
"""

from __future__ import annotations

import difflib
import io
import json
import sys
from pathlib import Path

from mlspec.console import Console
from mlspec.errors import MlspecError

# where a key order differs from the schema's property order (how the docs and examples write a step)
ORDER_OVERRIDES = {"step": ["run", "cmd", "description", "inputs", "outputs", "deps", "params", "matrix", "fan_out",
                            "metrics", "plots", "resources", "retries", "timeout", "backend", "env", "cache",
                            "external_paths"]}
SKIP_DIRS = {".git", ".mlspec", "node_modules", ".venv", "venv", "__pycache__", ".tox"}


def _schema() -> dict:
    from mlspec.schema import load_schema

    return load_schema()


def _resolve(node: dict, root: dict) -> tuple[dict, str]:
    """A schema node with its $ref followed; and the $defs name it came from ('' when none)."""
    name = ""
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 10:
        ref = node["$ref"]
        if not ref.startswith("#/$defs/"):
            break
        name = ref.rsplit("/", 1)[1]
        node = root.get("$defs", {}).get(name, {})
        seen += 1
    return (node if isinstance(node, dict) else {}), name


def _key_order(schema: dict, name: str) -> list[str]:
    return ORDER_OVERRIDES.get(name) or list((schema.get("properties") or {}).keys())


def _child(schema: dict, root: dict, key) -> tuple[dict, str]:
    props = schema.get("properties") or {}
    if key in props:
        return _resolve(props[key], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return _resolve(extra, root)
    return {}, ""


def _tail(node):
    """(container, key or index, slot) of the comment that follows ``node``'s last line, or None."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if not isinstance(node, (CommentedMap, CommentedSeq)) or not node or node.fa.flow_style():
        return None
    last = list(node.keys())[-1] if isinstance(node, CommentedMap) else len(node) - 1
    deeper = _tail(node[last])
    return deeper or (node, last, 2 if isinstance(node, CommentedMap) else 0)


def _detach_tail(node) -> str:
    """Take the lines after ``node``'s last line (blank lines, full-line comments) off it; keep an end-of-line
    comment where it is. Returns what was taken."""
    where = _tail(node)
    if where is None:
        return ""
    container, key, slot = where
    entry = container.ca.items.get(key)
    token = entry[slot] if entry and len(entry) > slot else None
    if token is None or not isinstance(getattr(token, "value", None), str):
        return ""
    head, nl, rest = token.value.partition("\n")
    if not nl or not rest:
        return ""
    if head.strip():
        token.value = head + nl
    else:
        entry[slot] = None
    return rest


def _attach_tail(node, rest: str) -> None:
    if not rest:
        return
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    where = _tail(node)
    if where is None:
        return
    container, key, slot = where
    entry = container.ca.items.setdefault(key, [None, None, None, None])
    while len(entry) <= slot:
        entry.append(None)
    token = entry[slot]
    if token is not None and isinstance(getattr(token, "value", None), str):
        token.value = token.value + rest
    else:
        entry[slot] = CommentToken("\n" + rest, CommentMark(0), None)


def reorder(node, schema: dict, name: str, root: dict) -> None:
    """Put the keys of ``node`` (and of the mappings under it that the schema describes) in canonical order."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        order = _key_order(schema, name)
        if order:
            rank = {k: i for i, k in enumerate(order)}
            keys = list(node.keys())
            wanted = sorted(keys, key=lambda k: (0, rank[k]) if k in rank else (1, keys.index(k)))
            if wanted != keys:
                after = _detach_tail(node)  # blank lines / comments after the mapping stay after it
                for k in wanted:
                    node.move_to_end(k)
                _attach_tail(node, after)
        for k in list(node.keys()):
            sub, sub_name = _child(schema, root, k)
            if sub or sub_name:
                reorder(node[k], sub, sub_name, root)
    elif isinstance(node, CommentedSeq):
        items = schema.get("items")
        if isinstance(items, dict):
            sub, sub_name = _resolve(items, root)
            for v in node:
                reorder(v, sub, sub_name, root)


def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never re-wrap long strings
    y.preserve_quotes = True
    return y


def _package_prefix(text: str, path: Path, spec_dir: Path | None) -> tuple | None:
    """Where a file's keys sit in the composed spec: () for the root spec or `@package _global_`, the group
    path for a config group file; None when unknown (only the style is normalised)."""
    from mlspec.compose.groups import PACKAGE_RE

    m = PACKAGE_RE.search(text)
    if m:
        pkg = m.group(1)
        return () if pkg == "_global_" else tuple(pkg.split("."))
    if spec_dir is None:
        return ()
    try:
        rel = path.parent.relative_to(spec_dir)
    except ValueError:
        return None
    return tuple(rel.parts)


def format_text(text: str, prefix: tuple | None = ()) -> str:
    """The canonical form of one spec file's text (raises ValueError for YAML it cannot read)."""
    y = _yaml()
    try:
        data = y.load(text)
    except Exception as exc:  # ruamel's errors have no common base worth naming
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if data is None:
        return text
    before = _plain(data)
    if prefix is not None:
        root = _schema()
        schema, name = root, ""
        for key in prefix:
            schema, name = _child(schema, root, key)
        reorder(data, schema, name, root)
    out = io.StringIO()
    y.dump(data, out)
    result = out.getvalue()
    if _plain(_yaml().load(result)) != before:  # never change a value: refuse instead
        raise ValueError("formatting would change its data (a ruamel.yaml round-trip problem)")
    return result.rstrip("\n") + "\n"


def _plain(data):
    return json.loads(json.dumps(data, default=str, sort_keys=True))


def spec_files(start: Path) -> list[tuple[Path, Path]]:
    """(file, the directory of its root spec) for every spec file under ``start``: each `mlspec.yaml` and the
    YAML files of its config groups (the sub-directories beside it that hold YAML)."""
    found: list[tuple[Path, Path]] = []
    roots = [start] if start.is_file() else sorted(
        p for p in start.rglob("mlspec.yaml") if not (set(p.relative_to(start).parts[:-1]) & SKIP_DIRS))
    for spec in roots:
        found.append((spec, spec.parent))
        if start.is_file() and spec.name != "mlspec.yaml":
            continue
        for d in sorted(p for p in spec.parent.iterdir() if p.is_dir() and p.name not in SKIP_DIRS
                        and not p.name.startswith(".")):
            for f in sorted(d.rglob("*.y*ml")):
                if f.suffix in (".yaml", ".yml") and not (set(f.relative_to(d).parts) & SKIP_DIRS):
                    found.append((f, spec.parent))
    return found


def run(args, console: Console) -> int:
    from mlspec.compose.groups import DEFAULT_SPEC

    base = Path(args.project_dir)
    if args.paths:
        targets: list[tuple[Path, Path | None]] = []
        for p in args.paths:
            path = base / p
            if not path.exists():
                raise MlspecError(f"no such file or directory: {p}")
            if path.is_dir():
                targets += spec_files(path)
            else:
                targets.append((path, path.parent if path.name == DEFAULT_SPEC else None))
    else:
        spec = base / (args.file or DEFAULT_SPEC)
        if not spec.is_file():
            raise MlspecError(f"no spec at {spec}", hint="pass the files to format, or run in the project directory")
        targets = spec_files(spec.parent) if spec.name == DEFAULT_SPEC else [(spec, spec.parent)]
        targets = [t for t in targets if t[0] == spec or t[0].parent != spec.parent]
    changed, errors = [], []
    for path, spec_dir in dict.fromkeys(targets):
        text = path.read_text(encoding="utf-8")
        is_root = spec_dir is not None and path.parent == spec_dir
        prefix = () if is_root else _package_prefix(text, path, spec_dir)
        try:
            new = format_text(text, prefix)
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
            continue
        if new == text:
            continue
        changed.append(str(path))
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), f"a/{path}",
                                                       f"b/{path}"))
        if not args.check and not args.diff:
            from mlspec.storage import atomic_write_local

            atomic_write_local(path, new.encode("utf-8"))
    for e in errors:
        console.error(f"Error: cannot format {e}")
    if args.check or args.diff:
        for c in changed:
            console.error(f"would reformat {c}")
        if changed:
            console.error(f"{len(changed)} file(s) would be reformatted; run `mlspec fmt` to fix them.")
            return 1
        if not errors:
            console.print(f"{len(targets)} spec file(s) already formatted.")
    else:
        for c in changed:
            console.print(f"reformatted {c}")
        console.print(f"{len(changed)} file(s) reformatted, {len(targets) - len(changed) - len(errors)} unchanged.")
    return 1 if errors else 0
