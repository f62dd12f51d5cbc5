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


def _load(name: str, path: str, fmt: str, kind: str, load_args: dict | None = None):
    """One input as the function's annotation asks for it; StepFailed naming the input otherwise."""
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
    """Write one returned value (in its declared format, if any); returns (path, format)."""
    if (isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isfile(value))) \
            and not (fmt == "text" and isinstance(value, str)):
        p = Path(value)
        if not p.is_file():
            raise StepFailed(f"returned path {p} is not a file")
        return str(p), fmt or formats.guess(str(p))  # a file is kept as it is: a declared format names it
    try:
        return formats.save(value, dest_base, fmt, save_args)
    except formats.FormatError as exc:
        raise StepFailed(f"output '{name}' {exc}") from None


def _materialise_inputs(task: dict, store, workdir: Path) -> dict:
    """input name -> (local path, format)."""
    from mlspec.artifacts import CorruptArtifact

    out = {}
    indir = workdir / "inputs"
    indir.mkdir(parents=True, exist_ok=True)
    for name, spec in sorted(task["inputs"].items()):
        fmt = spec.get("format") or "auto"
        if spec.get("hash") and not spec.get("path"):
            try:  # content-checked: a corrupt object is quarantined, never handed to the step
                src = store.local_path(spec["hash"], workdir / "cache", produced_by=spec.get("from", ""))
            except FileNotFoundError:
                raise StepFailed(f"input '{name}': object {spec['hash']} ({spec.get('from', 'an upstream output')}) "
                                 "is missing from the artifact store; the next plan re-runs the step that makes it"
                                 ) from None
            except CorruptArtifact as exc:
                raise StepFailed(f"input '{name}': {exc}; the next plan re-runs "
                                 f"{spec.get('from', 'the producing step').rsplit('.', 1)[0]} to make it again") from None
            link = indir / (name + formats.suffix(fmt))
            if not link.exists():
                os.symlink(src, link)
            out[name] = (str(link), fmt)
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
        kwargs[name] = _load(name, path, fmt, _annotation_kind(p.annotation if p else inspect.Parameter.empty),
                             task["inputs"][name].get("load_args"))
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
    metrics = dict(result.pop("metrics", None) or {})
    for m in task["metrics"]:
        if m in result:
            metrics[m] = result.pop(m)
    missing = [m for m in task["metrics"] if m not in metrics]
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
    out_paths = {name: str(outdir / name) for name in task["outputs"]}
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
        if not os.path.isfile(path):
            raise StepFailed(f"command did not write output '{name}' (expected a file at $MLSPEC_OUTPUT_"
                             f"{name.upper()} / ${{outputs.{name}}})")
        declared = ((task.get("output_formats") or {}).get(name) or {}).get("format")
        outputs[name] = (path, declared or _guess_format(path))
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    missing = [m for m in task["metrics"] if m not in metrics]
    if missing:
        raise StepFailed(f"command did not report metrics {', '.join(missing)} (write JSON to $MLSPEC_METRICS_FILE)")
    return outputs, metrics


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
            raise StepFailed(f"metrics must be numbers: {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
        for name, (path, _fmt) in produced.items():
            _check_location(task, name, path, tmp, inputs)
        outputs = {}
        for name, (path, fmt) in produced.items():
            digest, size = store.put_file(path)
            outputs[name] = {"hash": digest, "size": size, "format": fmt}
        return {"status": "succeeded", "outputs": outputs, "metrics": {k: float(v) for k, v in metrics.items()},
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
