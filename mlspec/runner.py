"""The step runner: executes one task inside the worker process (a local subprocess, a Ray worker, ...).

It puts the project's code on the import path, materialises inputs (as paths, or loaded objects when
the function's annotation asks for a DataFrame, a dict or a model), calls the function (or runs the
`cmd`), saves what it returns (in the output's declared format, else DataFrame -> parquet, dict/list ->
JSON, a path -> that file, bytes -> raw, any other object -> pickle: :mod:`mlspec.formats`), stores every
output in the content-addressed store and returns a plain result dict. Backends call :func:`execute`; the
local backend runs ``python -m mlspec.runner``.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from mlspec import formats


class StepFailed(Exception):
    """The user's step failed; carries a short error text."""


def _annotation_kind(ann) -> str:
    """How to hand an input to the function: by its annotation; unannotated inputs load by format."""
    if ann is inspect.Parameter.empty or ann is None:
        return "object"
    text = ann if isinstance(ann, str) else getattr(ann, "__qualname__", str(ann))
    mod = "" if isinstance(ann, str) else getattr(ann, "__module__", "")
    if "DataFrame" in text:
        return "dataframe"
    if text in ("dict", "list", "Dict", "List") or text.startswith(("dict[", "list[", "Dict[", "List[")):
        return "json"
    if text in ("str", "Path", "pathlib.Path", "os.PathLike") or mod == "pathlib":
        return "path"
    if text in ("bytes",):
        return "bytes"
    return "object"


def _guess_format(path: str) -> str:
    return formats.guess(path)


PICKLE_FORMATS = ("pickle", "joblib")


def _load(name: str, path: str, fmt: str, kind: str, load_args: dict | None = None, trust_pickle: bool = False,
          source: str = ""):
    """One input as the function's annotation asks for it; StepFailed naming the input otherwise. A directory
    input is always its path. A pickle (or joblib) file is unpickled only when the spec declares that format
    for it (``trust_pickle``): unpickling runs code of the file's choosing."""
    if fmt == "dir":
        return path
    real = fmt if fmt and fmt != "auto" else formats.guess(path)
    if real in PICKLE_FORMATS and kind not in ("path", "bytes") and not trust_pickle:
        where = f" ({source})" if source else ""
        raise StepFailed(f"input '{name}'{where} is a {real} file, and loading it would run code of the file's "
                         f"choosing: mlspec unpickles only what the spec declares `format: {real}` for (on the "
                         "producing step's output, or on this input); return a scikit-learn model (stored as "
                         "skops) or plain data instead, or declare the format if you trust the file "
                         "(docs/security.md)")
    if load_args and kind in ("path", "bytes"):
        raise StepFailed(f"input '{name}' has load_args, but the function takes it as {kind} (by its annotation), "
                         "so nothing loads it: drop the load_args or annotate the parameter with the type to load")
    try:
        return formats.load(fmt if fmt and fmt != "auto" else formats.guess(path), path, kind, load_args)
    except formats.FormatError as exc:
        raise StepFailed(f"input '{name}': {exc}") from None
    except TypeError as exc:
        if not load_args:
            raise
        raise StepFailed(f"input '{name}' could not be loaded as {fmt} ({exc}): check its load_args") from None


def _save(value, dest_base: Path, name: str = "", fmt: str = "", save_args: dict | None = None) -> tuple[str, str]:
    """Write one returned value (in its declared format, if any); returns (path, format). A returned directory is
    a directory output (format "dir")."""
    if (isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.exists(value))) \
            and not (fmt == "text" and isinstance(value, str)):
        p = Path(value)
        if p.is_dir():
            return str(p), "dir"
        if not p.is_file():
            raise StepFailed(f"returned path {p} is not a file or directory")
        return str(p), fmt or formats.guess(str(p))  # a file is kept as it is: a declared format names it
    try:
        return formats.save(value, dest_base, fmt, save_args)
    except formats.FormatError as exc:
        raise StepFailed(f"output '{name}' {exc}") from None


def flatten_metrics(values: dict, prefix: str = "") -> dict:
    """Nested metrics as dotted names, the way dvclive writes them: ``{"avg_prec": {"train": 0.9}}`` ->
    ``{"avg_prec.train": 0.9}``. Leaves are kept as they are (the caller checks they are numbers)."""
    out: dict = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        flat = flatten_metrics(value, name + ".") if isinstance(value, dict) else {name: value}
        for k, v in flat.items():
            if k in out:
                raise StepFailed(f"metric '{k}' is reported twice (once nested, once with a dotted name)")
            out[k] = v
    return out


def missing_metrics(declared, flat: dict) -> list[str]:
    """The declared names that are neither a reported metric nor the prefix of dotted ones."""
    return [m for m in declared if m not in flat and not any(k.startswith(m + ".") for k in flat)]


def _stored_input(name: str, spec: dict, store, workdir: Path, dest: Path) -> tuple[str, str]:
    """Place one stored object (a file, or a tree as a directory) at ``dest`` (+ extension); (path, format)."""
    from mlspec.artifacts import CorruptArtifact
    from mlspec.errors import MlspecError

    fmt = spec.get("format") or "auto"
    cache = workdir / "cache"
    try:  # content-checked: a corrupt object is quarantined, never handed to the step
        if fmt == "dir":
            dest.mkdir(parents=True, exist_ok=True)
            for rel, h, _size in store.read_tree(spec["hash"], produced_by=spec.get("from", "")):
                src = store.local_path(h, cache, produced_by=f"{spec.get('from', '')}/{rel}")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.symlink(src, target)
            return str(dest), "dir"
        src = store.local_path(spec["hash"], cache, produced_by=spec.get("from", ""))
    except FileNotFoundError:
        raise StepFailed(f"input '{name}': object {spec['hash']} ({spec.get('from', 'an upstream output')}) "
                         "is missing from the artifact store; the next plan re-runs the step that makes it"
                         ) from None
    except (CorruptArtifact, MlspecError) as exc:
        raise StepFailed(f"input '{name}': {exc}; the next plan re-runs "
                         f"{spec.get('from', 'the producing step').rsplit('.', 1)[0]} to make it again") from None
    link = dest.with_name(dest.name + formats.suffix(fmt))
    if not link.exists():
        os.symlink(src, link)
    return str(link), fmt


class Gathered(list):
    """A gathered input: [(key, path, format), ...] in matrix order; its directory is the input's path."""


def _materialise_inputs(task: dict, store, workdir: Path) -> dict:
    """input name -> (local path, format); a gather's format is a :class:`Gathered` list of its members."""
    out = {}
    indir = workdir / "inputs"
    indir.mkdir(parents=True, exist_ok=True)
    for name, spec in sorted(task["inputs"].items()):
        fmt = spec.get("format") or "auto"
        if "gather" in spec:  # one entry per instance, named by its matrix values: inputs/NAME/C=0.1.json
            gdir = indir / name
            gdir.mkdir(parents=True, exist_ok=True)
            members = Gathered()
            for m in spec["gather"]:
                path, mfmt = _stored_input(name, m, store, workdir, gdir / (m["label"] or "_"))
                key = tuple(m["key"]) if len(m["key"]) != 1 else m["key"][0]
                members.append((key, path, mfmt))
            out[name] = (str(gdir), members)
        elif spec.get("hash") and not spec.get("path"):
            out[name] = _stored_input(name, spec, store, workdir, indir / name)
        else:
            path = spec["path"]
            if "://" in path and not path.startswith("file://"):
                import fsspec

                local = indir / (name + Path(path).suffix)
                with fsspec.open(path, "rb", **spec.get("options", {})) as src, open(local, "wb") as dst:
                    while chunk := src.read(4 << 20):
                        dst.write(chunk)
                path = str(local)
            out[name] = (path, fmt if fmt != "auto" else _guess_format(path))
    return out


def _call_function(task: dict, inputs: dict, outdir: Path) -> tuple[dict, dict]:
    import importlib

    mod_name, _, func_name = task["run"].partition(":")
    module = importlib.import_module(mod_name)
    func = getattr(module, func_name)
    sig = inspect.signature(func)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    kwargs = {}
    for name, (path, fmt) in inputs.items():
        p = sig.parameters.get(name)
        ann = p.annotation if p else inspect.Parameter.empty
        if isinstance(fmt, Gathered):  # a mapping from matrix values to each instance's input
            import typing

            args = typing.get_args(ann) if not isinstance(ann, str) else ()
            member_kind = _annotation_kind(args[1] if len(args) == 2 else inspect.Parameter.empty)
            spec = task["inputs"][name]
            kwargs[name] = {key: _load(name, mpath, mfmt, member_kind, spec.get("load_args"),
                                       bool(spec.get("trust_pickle")), spec.get("from", ""))
                            for key, mpath, mfmt in fmt}
        else:
            spec = task["inputs"][name]
            kwargs[name] = _load(name, path, fmt, _annotation_kind(ann), spec.get("load_args"),
                                 bool(spec.get("trust_pickle")), spec.get("from", ""))
    for k, v in task["params"].items():
        kwargs[k] = v
    if not accepts_any:
        missing = [k for k in kwargs if k not in sig.parameters]
        if missing:
            raise StepFailed(f"{task['run']}() does not accept {', '.join(missing)}: add "
                             f"{'them' if len(missing) > 1 else 'it'} as keyword parameter"
                             f"{'s' if len(missing) > 1 else ''} (or **kwargs)")
        kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
    from mlspec.steplog import captured

    with captured():
        result = func(**kwargs)
    if result is None:
        result = {}
    if isinstance(result, tuple) and len(task["outputs"]) > 1:
        result = _by_position(task, result)
    if not isinstance(result, dict):
        if len(task["outputs"]) == 1:
            result = {task["outputs"][0]: result}
        else:
            raise StepFailed(f"{task['run']}() must return a dict of named outputs, got {type(result).__name__}")
    metrics = result.pop("metrics", None) or {}
    if not isinstance(metrics, dict):
        raise StepFailed(f"{task['run']}() returned `metrics` as {type(metrics).__name__}; return a dict of "
                         "metric name -> number (nested dicts allowed)")
    metrics = dict(metrics)
    for m in task["metrics"]:
        for key in (m, m.split(".", 1)[0]):  # `avg_prec.test` may come nested: {"avg_prec": {"test": ...}}
            if key in result and key not in task["outputs"]:
                metrics[key] = result.pop(key)
    metrics = flatten_metrics(metrics)
    missing = missing_metrics(task["metrics"], metrics)
    if missing:
        raise StepFailed(f"{task['run']}() did not return metric{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (declared under `metrics:`)")
    outputs = {}
    for name in task["outputs"]:
        if name not in result:
            raise StepFailed(f"{task['run']}() did not return output '{name}' (returned: "
                             f"{', '.join(sorted(result)) or 'nothing'})")
        declared = (task.get("output_formats") or {}).get(name) or {}
        outputs[name] = _save(result.pop(name), outdir / name, name, declared.get("format", ""),
                              declared.get("save_args"))
    if result:
        raise StepFailed(f"{task['run']}() returned undeclared outputs: {', '.join(sorted(result))}; "
                         "declare them under `outputs:` (or `metrics:`)")
    return outputs, metrics


def _by_position(task: dict, values: tuple) -> dict:
    """A tuple return: its items are the declared outputs, in declared order."""
    names = task["outputs"]
    if len(values) != len(names):
        raise StepFailed(f"{task['run']}() returned {len(values)} values, but the step declares {len(names)} outputs "
                         f"({', '.join(names)}): return one value per output, in that order (or a dict)")
    return dict(zip(names, values))


def _run_cmd(task: dict, inputs: dict, outdir: Path, project_dir: str) -> tuple[dict, dict]:
    env = dict(os.environ)
    opts = task.get("output_opts") or {}
    out_paths = {}
    for name in task["outputs"]:
        o = opts.get(name) or {}
        # a declared project path is written in place, as DVC users expect; first cleared, so that a stale
        # file can never pass for the output
        path = os.path.join(project_dir, o["path"]) if o.get("path") else str(outdir / name)
        if o.get("path"):
            _remove(path)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if o.get("type") == "dir":
            os.makedirs(path, exist_ok=True)
        out_paths[name] = path
    metrics_file = outdir / "_metrics.json"
    subst = {}
    for name, (path, _fmt) in inputs.items():
        subst[f"inputs.{name}"] = path
        env[f"MLSPEC_INPUT_{name.upper().replace('-', '_')}"] = path
    for name, path in out_paths.items():
        subst[f"outputs.{name}"] = path
        env[f"MLSPEC_OUTPUT_{name.upper().replace('-', '_')}"] = path
    for k, v in task["params"].items():
        text = v if isinstance(v, str) else json.dumps(v)
        subst[f"params.{k}"] = text
        env[f"MLSPEC_PARAM_{k.upper().replace('-', '_')}"] = text
    env["MLSPEC_METRICS_FILE"] = str(metrics_file)
    cmd = task["cmd"]
    for key, val in subst.items():
        cmd = cmd.replace("${" + key + "}", shlex.quote(val))
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.run(cmd, shell=True, cwd=project_dir, env=env)
    if proc.returncode != 0:
        raise StepFailed(f"command exited with code {proc.returncode}: {task['cmd']}")
    outputs = {}
    for name, path in out_paths.items():
        if os.path.isdir(path):
            outputs[name] = (path, "dir")
            continue
        if not os.path.isfile(path):
            raise StepFailed(f"command did not write output '{name}' (expected a file or directory at "
                             f"$MLSPEC_OUTPUT_{name.upper()} / ${{outputs.{name}}})")
        declared = ((task.get("output_formats") or {}).get(name) or {}).get("format")
        outputs[name] = (path, declared or _guess_format(path))
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except ValueError as exc:
        raise StepFailed(f"$MLSPEC_METRICS_FILE is not JSON ({exc}); write one JSON object") from None
    if not isinstance(metrics, dict):
        raise StepFailed(f"$MLSPEC_METRICS_FILE holds {type(metrics).__name__}; write one JSON object of metric "
                         "name -> number (nested objects allowed)")
    metrics = flatten_metrics(metrics)
    missing = missing_metrics(task["metrics"], metrics)
    if missing:
        raise StepFailed(f"command did not report metrics {', '.join(missing)} (write JSON to $MLSPEC_METRICS_FILE)")
    return outputs, metrics


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_location(task: dict, name: str, path: str, workdir: Path, inputs: dict) -> None:
    """Refuse an output file that resolves (symlinks followed) outside the project and the step's work dir.

    A step returning ``/etc/passwd``, or a command whose output is a symlink to ``~/.aws/credentials``,
    would otherwise copy that file into a store the whole team reads. Allowed besides the project and the
    work dir: the step's own inputs (an output may be an input passed through) and the directories the
    step declares under ``external_paths``.
    """
    real = os.path.realpath(path)
    roots = [task["project_dir"], str(workdir), *(task.get("external_paths") or ())]
    if any(_under(real, os.path.realpath(r)) for r in roots):
        return
    if any(real == os.path.realpath(p) for p, _fmt in inputs.values()):
        return
    step = str(task.get("address") or "step.NAME").split(".", 1)[-1].split("[", 1)[0]
    raise StepFailed(f"output '{name}' resolves to {real}, outside the project; declare its directory under "
                     f"steps.{step}.external_paths to allow it")


_SEEN_MTIMES: dict[str, int] = {}  # project module file -> mtime when first seen
_SCANNED: set = set()  # module names already classified (project or not)


def _purge_stale_project_modules(code_paths: list[str]) -> None:
    """In a reused worker, forget the project's modules when any of their files changed since import.

    Project modules are those loaded from the code paths; all of them go at once, so a module that
    imported a changed helper (``from util import f``) does not keep the old function. Only modules not
    seen before are classified, so a worker with a thousand modules loaded pays for the new ones only.
    """
    roots = tuple(os.path.join(os.path.abspath(p), "") for p in code_paths)
    for name in sys.modules.keys() - _SCANNED:
        _SCANNED.add(name)
        f = getattr(sys.modules.get(name), "__file__", None)
        if f and f.startswith(roots):
            try:
                _SEEN_MTIMES.setdefault(f, os.stat(f).st_mtime_ns)
            except OSError:
                pass
    stale = False
    for f, m in _SEEN_MTIMES.items():
        try:
            if os.stat(f).st_mtime_ns != m:
                stale = True
                break
        except OSError:
            stale = True
            break
    if stale:
        files = set(_SEEN_MTIMES)
        for name, mod in list(sys.modules.items()):
            if getattr(mod, "__file__", None) in files:
                sys.modules.pop(name, None)
                _SCANNED.discard(name)
        _SEEN_MTIMES.clear()
        import importlib

        importlib.invalidate_caches()


def payload_mismatch(task: dict) -> str:
    """'' when this runner speaks the task's payload format; else the message naming both versions."""
    from mlspec import __version__
    from mlspec.backends.api import TASK_FORMAT_VERSION

    fmt = task.get("format_version", TASK_FORMAT_VERSION)
    if fmt == TASK_FORMAT_VERSION:
        return ""
    return (f"this step's environment has mlspec {__version__} (task format {TASK_FORMAT_VERSION}), but the task "
            f"came from mlspec {task.get('mlspec_version', '?')} (task format {fmt}): install the same mlspec "
            "version where the step runs (the backend's image or cluster)")


def execute(task: dict, workdir: str | None = None) -> dict:
    """Run one task; always returns a result dict (status succeeded/failed), never raises for user errors."""
    from mlspec.artifacts import ArtifactStore

    started = time.time()
    mismatch = payload_mismatch(task)
    if mismatch:
        return {"status": "failed", "outputs": {}, "metrics": {}, "error": mismatch, "duration": 0.0}
    own_tmp = workdir is None
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlspec-task-"))
    outdir = tmp / "outputs"
    outdir.mkdir(parents=True, exist_ok=True)
    project_dir = task["project_dir"]
    old_cwd, old_path = os.getcwd(), list(sys.path)
    try:
        store = ArtifactStore(task["artifacts"]["url"], task["artifacts"].get("options"))
        for p in reversed(task.get("code_paths", [])):
            if p not in sys.path:
                sys.path.insert(0, p)
        _purge_stale_project_modules(task.get("code_paths", []))
        os.chdir(project_dir)
        inputs = _materialise_inputs(task, store, tmp)
        if task.get("run"):
            produced, metrics = _call_function(task, inputs, outdir)
        else:
            produced, metrics = _run_cmd(task, inputs, outdir, project_dir)
        bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        if bad:
            shown = ", ".join(f"{k}={v!r}"[:80] for k, v in list(bad.items())[:5])
            raise StepFailed(f"metrics must be numbers: {shown}{', ...' if len(bad) > 5 else ''}")
        opts = task.get("output_opts") or {}
        for name, (path, fmt) in produced.items():
            want = (opts.get(name) or {}).get("type")
            got = "dir" if fmt == "dir" else "file"
            if want and want != got:
                raise StepFailed(f"output '{name}' is declared `type: {want}` but the step produced a {got} ({path})")
            _check_location(task, name, path, tmp, inputs)
            if fmt == "dir":  # every file of a directory output, symlinks followed, must be allowed too
                for dirpath, _dirs, files in os.walk(path, followlinks=True):
                    for fn in files:
                        _check_location(task, f"{name}/{os.path.relpath(os.path.join(dirpath, fn), path)}",
                                        os.path.join(dirpath, fn), tmp, inputs)
        outputs = {}
        for name, (path, fmt) in produced.items():
            if fmt == "dir":
                digest, size, nfiles = store.put_tree(path)
                outputs[name] = {"hash": digest, "size": size, "format": "dir", "files": nfiles}
            else:
                digest, size = store.put_file(path)
                outputs[name] = {"hash": digest, "size": size, "format": fmt}
        return {"status": "succeeded", "outputs": outputs, "metrics": {k: v if isinstance(v, int) else float(v)
                                                             for k, v in metrics.items()},
                "error": "", "duration": time.time() - started}
    except StepFailed as exc:
        return {"status": "failed", "outputs": {}, "metrics": {}, "error": str(exc), "duration": time.time() - started}
    except BaseException as exc:  # user code: anything may happen; report it, do not die silently
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        last = f"{type(exc).__name__}: {exc}"
        return {"status": "failed", "outputs": {}, "metrics": {}, "error": last, "traceback": tb,
                "duration": time.time() - started}
    finally:
        _purge_stale_project_modules(task.get("code_paths", []))  # records what this task imported
        os.chdir(old_cwd)
        sys.path[:] = old_path
        if own_tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    """``python -m mlspec.runner RESULT_PATH [PARENT_PID]``: the task JSON arrives on stdin (secrets never
    touch disk). With PARENT_PID (the local backend passes mlspec's pid) this process and everything the
    step starts die with that process (:func:`mlspec.worker.guard`); either way nothing the step started
    outlives it (:func:`mlspec.worker.kill_leftovers`)."""
    from mlspec import worker

    result_path = sys.argv[1]
    if len(sys.argv) > 2:
        worker.guard(int(sys.argv[2]))
    else:
        worker._prctl(worker._PR_SET_CHILD_SUBREAPER, 1)
    task = json.loads(sys.stdin.read())
    workdir = os.path.dirname(result_path)
    result = execute(task, workdir)
    try:
        worker.kill_leftovers()
    except OSError:
        pass
    from mlspec.storage import atomic_write_local

    atomic_write_local(result_path, json.dumps(result).encode())
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
