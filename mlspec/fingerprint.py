"""Fingerprints: what a step's result depends on, gathered before planning.

Gathering (this module) reads files: the code a step's function can reach (mlspec/codegraph.py: found by
parsing, never by importing), declared deps (whole files, or named keys of a YAML/JSON/TOML file), and
dataset content (through the stat-keyed hash cache, so unchanged data is not re-read; on object stores
the ETag or version id). Planning then works on these facts without any I/O. The backend and `resources`
are never part of a fingerprint: switching backend never re-runs a step. A step that pins a container image
(`image:`) has that image's digest in its fingerprint, resolved at plan time by the step's backend.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mlspec import SPEC_FORMAT_VERSION
from mlspec.codegraph import CodeGraph, CodeMemo
from mlspec.errors import MlspecError, did_you_mean
from mlspec.hashing import HashCache, hash_json, manifest_hash
from mlspec.spec import Dataset, Secret, Spec, Step


@dataclass
class Facts:
    """Everything the planner needs to know about the world, as plain data."""

    datasets: dict = field(default_factory=dict)  # "dataset.X" -> {"hash", "size", "uri"}
    code: dict = field(default_factory=dict)  # step name -> {"path.py:name", "path.py" or "module:x": hash}
    deps: dict = field(default_factory=dict)  # step name -> {"files": {path: hash}, "keys": {path: {key: value}}}
    secrets: dict = field(default_factory=dict)  # sensitive scalar (JSON text) -> keyed fingerprint; never persisted
    runcache: Mapping = field(default_factory=dict)  # fingerprint -> run-cache entry (outputs, metrics)
    bad_outputs: dict = field(default_factory=dict)  # object hash -> what is wrong (missing, wrong size)
    drift: dict = field(default_factory=dict)  # step address -> [(output, project path, "modified"|"missing")]
    models: dict = field(default_factory=dict)  # the model kind's: recorded outputs and metrics of metrics steps
    images: dict = field(default_factory=dict)  # step name -> id (digest) of the image it pins with `image:`
    selected: tuple | None = None  # (targets, the addresses they cover): worked out once, for make_plan too

    def to_dict(self) -> dict:
        return {"datasets": self.datasets, "code": self.code, "deps": _keyed(self.deps, self.secrets)}


# --- code -----------------------------------------------------------------------------------------
def code_facts(step: Step, graph: CodeGraph) -> dict:
    """What a python step's function can reach (see mlspec/codegraph.py); a module outside the project
    (an installed package) counts by name only."""
    if not step.run:
        return {}
    module, _, func = step.run.partition(":")
    facts = graph.reach(module, func)
    return dict(facts) if facts else {f"module:{module}": "installed"}


# --- deps -----------------------------------------------------------------------------------------
PARAMS_FORMATS = (".yaml", ".yml", ".json", ".toml")  # files whose keys a step may depend on


class ParamsFiles:
    """Parsed YAML/JSON/TOML files of keyed ``deps:`` entries, each read once per plan."""

    def __init__(self, project_dir: Path):
        self.project_dir = project_dir
        self._data: dict[str, object] = {}

    def data(self, step: Step, rel: str):
        if rel in self._data:
            return self._data[rel]
        p = self.project_dir / rel
        suffix = p.suffix.lower()
        if suffix not in PARAMS_FORMATS:
            raise MlspecError(f"step '{step.name}' depends on keys of {rel}, which is not a YAML, JSON or TOML file",
                              hint=f"name a .yaml, .json or .toml file in steps.{step.name}.deps, or list {rel} "
                                   "as a plain path")
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise _missing_dep(step, rel) from None
        except OSError as exc:
            raise MlspecError(f"step '{step.name}': cannot read {rel} (deps): {exc.strerror}",
                              hint=f"check the file, or steps.{step.name}.deps") from None
        try:
            if suffix == ".json":
                import json

                data = json.loads(raw)
            elif suffix == ".toml":
                import tomllib

                data = tomllib.loads(raw.decode())
            else:
                import yaml

                data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except Exception as exc:  # each parser has its own error types; all mean "not valid"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MlspecError(f"step '{step.name}': {rel} (deps) is not valid {suffix[1:].upper()}: {first}",
                              hint=f"fix {rel}") from None
        self._data[rel] = data
        return data

    def value(self, step: Step, rel: str, key: str):
        """The JSON value at dotted ``key`` of the file (list items by index), or a one-line error."""
        node = self.data(step, rel)
        done: list[str] = []
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                where = ".".join(done) or "the top level"
                have = sorted(map(str, node)) if isinstance(node, dict) else []
                known = (did_you_mean(part, have) or f" ({where} has: {', '.join(have[:10])})") if have else ""
                raise MlspecError(f"step '{step.name}' depends on key '{key}' of {rel}, which is not there: "
                                  f"{where} has no '{part}'{known}",
                                  hint=f"add the key to {rel}, or fix steps.{step.name}.deps")
            done.append(part)
        return _jsonable(node)


def _jsonable(v):
    """A value as it is recorded in the state: plain JSON (YAML/TOML dates become their ISO text)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def _missing_dep(step: Step, rel: str) -> MlspecError:
    return MlspecError(f"step '{step.name}' declares deps '{rel}', which does not exist",
                       hint=f"create it or remove it from steps.{step.name}.deps")


def deps_facts(spec: Spec, step: Step, cache: HashCache, params: ParamsFiles) -> dict:
    """``{"files": {path: hash}, "keys": {path: {key: value}}}`` of a step's ``deps:`` (empty parts left out)."""
    files: dict = {}
    keys: dict = {}
    for dep in step.deps:
        if dep.keys:
            keys[dep.path] = {k: params.value(step, dep.path, k) for k in dep.keys}
            continue
        p = spec.project_dir / dep.path
        if p.is_dir():
            files[dep.path] = cache.directory(p)[0]
        elif p.is_file():
            files[dep.path] = cache.file(p)[0]
        else:
            raise _missing_dep(step, dep.path)
    out: dict = {}
    if files:
        out["files"] = files
    if keys:
        out["keys"] = keys
    return out


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
    """Code and deps facts of every step, and keyed fingerprints of every sensitive value the steps use."""
    from mlspec.load import code_paths
    from mlspec.sensitive import Redactor, _leaves

    roots = [Path(p) for p in code_paths(spec.project_dir)]
    memo = CodeMemo(cache.path.parent / "code.json" if cache.path else None)
    graph = CodeGraph(spec.project_dir, roots, cache, memo)
    params = ParamsFiles(spec.project_dir)
    redactor = Redactor(spec.sensitive.values)
    by_run: dict = {}  # one facts mapping per function, shared by the steps that run it (read only)
    for name, step in spec.steps.items():
        code = by_run.get(step.run)
        if code is None:
            code = by_run[step.run] = code_facts(step, graph)
        facts.code[name] = code
        if step.deps:
            facts.deps[name] = deps_facts(spec, step, cache, params)
        leaves = sensitive_leaves(step, redactor) if (redactor or step.secret_params) else []
        if redactor and name in facts.deps:  # a secret copied into a params file is not recorded either
            leaves += [leaf for _p, leaf in _leaves(facts.deps[name].get("keys", {}), ()) if redactor.matches(leaf)]
        for leaf in leaves:
            k = _leaf_key(leaf)
            if k not in facts.secrets:
                facts.secrets[k] = secret_fingerprint(str.__str__(leaf) if isinstance(leaf, str) else k, key)
    memo.save()


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


CODE_FORMAT = 2  # 2: code by function, class and constant (codegraph); deps apart from code. 1 (absent): by file


def step_facts(inst, code: Mapping, input_hashes: Mapping, secret_fps: Mapping, deps: Mapping | None = None,
               image: str = "") -> dict:
    """The canonical description of what a step instance's result depends on (stored in state).

    Sensitive values never enter it: each is replaced by a keyed fingerprint (``keyed:...``), so a rotated
    secret still re-runs the step and the plan can say that a sensitive value changed, without showing it.
    ``code_format``, ``deps`` and ``dep_keys`` are present only when there is code or a dep to record, so
    that a command step without deps keeps the fingerprint earlier versions gave it.
    """
    step = inst.step
    out = {
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
    deps = deps or {}
    if code or deps:
        out["code_format"] = CODE_FORMAT
    if deps.get("files"):
        out["deps"] = dict(sorted(deps["files"].items()))
    if deps.get("keys"):
        out["dep_keys"] = _keyed({f: dict(sorted(ks.items())) for f, ks in sorted(deps["keys"].items())}, secret_fps)
    io = io_facts(step)
    if io:  # only when declared, so that steps declaring none keep their fingerprints
        out["io"] = io
    if step.image:  # the image's digest: a rebuilt image re-runs the step (only when pinned, as with io)
        out["image"] = {"name": step.image, "id": image}
    return out


def io_facts(step) -> dict:
    """Declared formats and their load/save arguments: they change what the function sees or writes."""
    if not step.input_opts and not step.output_opts:  # the usual step: nothing declared (50,000 calls)
        return {}
    ins = {n: dict(o) for n, o in sorted(step.input_opts.items())}
    outs = {n: {"format": o.format, "save_args": dict(o.save_args)}
            for n, o in sorted(step.output_opts.items()) if o.format or o.save_args}
    return {k: v for k, v in (("inputs", ins), ("outputs", outs)) if v}


def fingerprint_of(facts: Mapping) -> str:
    return hash_json(facts)
