"""Fingerprints: what a step's result depends on, gathered before planning.

Gathering (this module) reads files: step code and the project-local modules it imports (found by
parsing imports, never by importing), declared deps, and dataset content (through the stat-keyed hash
cache, so unchanged data is not re-read; on object stores the ETag or version id). Planning then works on
these facts without any I/O. The backend and `resources` are never part of a fingerprint: switching
backend never re-runs a step.
"""

from __future__ import annotations

import ast
import glob as _glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mlspec import SPEC_FORMAT_VERSION
from mlspec.errors import MlspecError
from mlspec.hashing import HashCache, hash_json, manifest_hash
from mlspec.spec import Dataset, Secret, Spec, Step


@dataclass
class Facts:
    """Everything the planner needs to know about the world, as plain data."""

    datasets: dict = field(default_factory=dict)  # "dataset.X" -> {"hash", "size", "uri"}
    code: dict = field(default_factory=dict)  # step name -> {relpath or "module:x": hash}
    secrets: dict = field(default_factory=dict)  # sensitive scalar (JSON text) -> keyed fingerprint; never persisted
    runcache: Mapping = field(default_factory=dict)  # fingerprint -> run-cache entry (outputs, metrics)
    bad_outputs: dict = field(default_factory=dict)  # object hash -> what is wrong (missing, wrong size)

    def to_dict(self) -> dict:
        return {"datasets": self.datasets, "code": self.code}


# --- code -----------------------------------------------------------------------------------------
def _module_file(mod: str, roots: list[Path]) -> Path | None:
    parts = mod.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
    return None


class CodeScanner:
    """Finds a module's project-local import closure by parsing source (memoised per file)."""

    def __init__(self, project_dir: Path, roots: list[Path], cache: HashCache):
        self.project_dir, self.roots, self.cache = project_dir, roots, cache
        self._imports: dict[Path, list[str]] = {}
        self._closure: dict[str, dict] = {}

    def _imports_of(self, path: Path, modname: str) -> list[str]:
        if path in self._imports:
            return self._imports[path]
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError:
            tree = ast.Module(body=[], type_ignores=[])  # its hash still changes when it is fixed
        is_pkg = path.name == "__init__.py"
        package = modname if is_pkg else modname.rpartition(".")[0]
        names: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                if prefix:
                    names.append(prefix)
                names.extend(f"{prefix}.{a.name}" if prefix else a.name for a in node.names)
        self._imports[path] = names
        return names

    def closure(self, module: str) -> dict:
        """{relative path: hash} of the module, its parent packages and project-local imports."""
        if module in self._closure:
            return self._closure[module]
        out: dict = {}
        todo = [module]
        seen: set = set()
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            seen.add(mod)
            parts = mod.split(".")
            for i in range(1, len(parts)):  # parent packages run on import
                todo.append(".".join(parts[:i]))
            path = _module_file(mod, self.roots)
            if path is None:
                continue
            rel = os.path.relpath(path, self.project_dir)
            out[rel] = self.cache.file(path)[0]
            todo.extend(self._imports_of(path, mod))
        self._closure[module] = out
        return out


def code_facts(spec: Spec, step: Step, scanner: CodeScanner, cache: HashCache) -> dict:
    facts: dict = {}
    if step.run:
        module = step.run.partition(":")[0]
        facts = dict(scanner.closure(module))
        if not facts:
            facts = {f"module:{module}": "installed"}  # not in the project: an installed package
    for dep in step.deps:
        p = (spec.project_dir / dep)
        if p.is_dir():
            facts[dep] = cache.directory(p)[0]
        elif p.is_file():
            facts[dep] = cache.file(p)[0]
        else:
            raise MlspecError(f"step '{step.name}' declares deps '{dep}', which does not exist",
                              hint=f"create it or remove it from steps.{step.name}.deps")
    return facts


# --- data -----------------------------------------------------------------------------------------
def dataset_fact(spec: Spec, ds: Dataset, cache: HashCache) -> dict:
    uri = ds.uri
    if "://" not in uri or uri.startswith("file://"):
        raw = uri[len("file://"):] if uri.startswith("file://") else uri
        p = Path(raw) if Path(raw).is_absolute() else spec.project_dir / raw
        if any(c in raw for c in "*?["):
            files = sorted(f for f in _glob.glob(str(p), recursive=True) if os.path.isfile(f))
            if not files:
                raise MlspecError(f"dataset '{ds.name}': no files match {uri}",
                                  hint=f"check datasets.{ds.name}.uri")
            entries, total = {}, 0
            for f in files:
                d, s = cache.file(f)
                entries[os.path.relpath(f, spec.project_dir)] = d
                total += s
            return {"hash": manifest_hash(entries), "size": total, "uri": uri, "files": len(files)}
        if p.is_dir():
            d, s = cache.directory(p)
            return {"hash": d, "size": s, "uri": uri}
        if not p.exists():
            raise MlspecError(f"dataset '{ds.name}': {uri} does not exist",
                              hint=f"create it, or fix datasets.{ds.name}.uri")
        d, s = cache.file(p)
        return {"hash": d, "size": s, "uri": uri}
    return _remote_fact(ds)


def _remote_fact(ds: Dataset) -> dict:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(ds.uri, **dict(ds.options))
        paths = fs.glob(path) if any(c in path for c in "*?[") else [path]
        if not paths:
            raise FileNotFoundError(ds.uri)
        entries, total = {}, 0
        for p in sorted(paths):
            info = fs.info(p)
            total += int(info.get("size") or 0)
            tag = info.get("VersionId") or info.get("ETag") or info.get("etag") or info.get("md5Hash")
            if tag:
                entries[p] = f"etag:{str(tag).strip(chr(34))}:{info.get('size')}"
            else:
                from mlspec.hashing import hash_stream

                with fs.open(p, "rb") as fh:
                    entries[p] = hash_stream(fh)[0]
    except FileNotFoundError:
        raise MlspecError(f"dataset '{ds.name}': {ds.uri} does not exist", hint=f"check datasets.{ds.name}.uri") from None
    except ImportError as exc:
        raise MlspecError(f"dataset '{ds.name}': cannot open {ds.uri}: {exc}",
                          hint="install the fsspec implementation for this URL (e.g. pip install s3fs)") from None
    digest = entries[paths[0]] if len(entries) == 1 and not any(c in path for c in "*?[") else manifest_hash(entries)
    return {"hash": digest, "size": total, "uri": ds.uri}


# --- secrets --------------------------------------------------------------------------------------
def secret_fingerprint(value: str, key: str) -> str:
    """A keyed, deliberately slow fingerprint: a rotation shows as a change, the value stays unguessable."""
    dk = hashlib.pbkdf2_hmac("sha256", value.encode(), bytes.fromhex(key) if key else b"mlspec", 20_000)
    return "keyed:" + dk.hex()[:32]


def _leaf_key(leaf) -> str:
    import json

    return json.dumps(str.__str__(leaf) if isinstance(leaf, Secret) else leaf, sort_keys=True, default=str)


def sensitive_leaves(step: Step, redactor) -> list:
    """Every scalar of a step's params, matrix values, cmd and env that is or contains a sensitive value."""
    from mlspec.sensitive import _leaves

    found = []
    for source in (dict(step.params), {k: list(v) for k, v in step.matrix.items()}, step.cmd, dict(step.env)):
        for _path, leaf in _leaves(source, ()):
            if isinstance(leaf, Secret) or redactor.matches(leaf):
                found.append(leaf)
    return found


def gather_steps(spec: Spec, facts: Facts, cache: HashCache, key: str) -> None:
    """Code facts of every step, and keyed fingerprints of every sensitive value the steps use."""
    from mlspec.load import code_paths
    from mlspec.sensitive import Redactor

    roots = [Path(p) for p in code_paths(spec.project_dir)]
    scanner = CodeScanner(spec.project_dir, roots, cache)
    redactor = Redactor(spec.sensitive.values)
    for name, step in spec.steps.items():
        facts.code[name] = code_facts(spec, step, scanner, cache)
        for leaf in sensitive_leaves(step, redactor) if (redactor or step.secret_params) else ():
            k = _leaf_key(leaf)
            if k not in facts.secrets:
                facts.secrets[k] = secret_fingerprint(str.__str__(leaf) if isinstance(leaf, str) else k, key)


# --- the fingerprint itself (pure) -----------------------------------------------------------------
def _keyed(node, secret_fps: Mapping):
    """``node`` with every sensitive scalar (a key of ``secret_fps``) replaced by its keyed fingerprint."""
    if not secret_fps:
        return node
    if isinstance(node, dict):
        return {k: _keyed(v, secret_fps) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_keyed(v, secret_fps) for v in node]
    if isinstance(node, Secret) or isinstance(node, (str, int, float)) and not isinstance(node, bool):
        fp = secret_fps.get(_leaf_key(node))
        if fp is not None:
            return fp
        if isinstance(node, Secret):
            return "(sensitive)"
    return node


def step_facts(inst, code: Mapping, input_hashes: Mapping, secret_fps: Mapping) -> dict:
    """The canonical description of what a step instance's result depends on (stored in state).

    Sensitive values never enter it: each is replaced by a keyed fingerprint (``keyed:...``), so a rotated
    secret still re-runs the step and the plan can say that a sensitive value changed, without showing it.
    """
    step = inst.step
    facts = {
        "format": SPEC_FORMAT_VERSION,
        "run": step.run,
        "cmd": _keyed(step.cmd, secret_fps),
        "code": dict(sorted(code.items())),
        "params": _keyed(dict(inst.params), secret_fps),
        "inputs": dict(sorted(input_hashes.items())),
        "outputs": sorted(step.outputs),
        "metrics": sorted(step.metrics),
        "env": _keyed(dict(sorted(step.env.items())), secret_fps),
    }
    io = io_facts(step)
    if io:  # only when declared, so that steps declaring none keep their fingerprints
        facts["io"] = io
    return facts


def io_facts(step) -> dict:
    """Declared formats and their load/save arguments: they change what the function sees or writes."""
    ins = {n: dict(o) for n, o in sorted(step.input_opts.items())}
    outs = {n: {"format": o.format, "save_args": dict(o.save_args)}
            for n, o in sorted(step.output_opts.items()) if o.format or o.save_args}
    return {k: v for k, v in (("inputs", ins), ("outputs", outs)) if v}


def fingerprint_of(facts: Mapping) -> str:
    return hash_json(facts)
