"""The step check: at plan time, that every Python step the plan may run can be called as the spec says.

The runner (``mlspec.runner._call_function``) imports ``module``, takes ``function`` from it and calls it
with the step's inputs, params and matrix keys as keyword arguments. A typo in the function name, a
module that imports a package which is not installed, or a signature that does not take those names
would fail only there, at apply. This module finds them before anything runs:

- ``check()`` (mlspec's process) starts **one** subprocess per interpreter for all the steps of a plan:
  ``python -m mlspec.stepcheck PARENT_PID``, in the project directory with the project's code paths on
  ``sys.path`` (as the runner has them), no bytecode written, tied to mlspec like a step worker
  (:func:`mlspec.worker.guard`), stopped after a timeout with everything it started;
- the subprocess (``main()``) imports each module once (its top-level code runs, as when a step
  starts), then compares each function's signature with the keyword names, and answers one JSON line
  per module or function, so a module that hangs is named;
- in an apply, the local backend's first worker does the check instead (``runners``, see
  :meth:`mlspec.backends.local.LocalBackend.step_check`): it starts anyway, and would import the same
  modules for the steps; it answers as the check process does, line by line, and a module that ends or
  hangs it is named the same way. ``mlspec plan`` starts no worker, so it uses the check process;
- a verdict that passed is cached in ``.mlspec/cache/stepcheck.json`` by (hash of the step's code facts,
  module, function, keyword names, interpreter), so a re-plan of unchanged code starts no process.
  Failures are never cached: installing the missing package is seen by the next plan.

What is an error: anything wrong with the project's own code or spec (a missing function or project
module, a signature mismatch, a syntax error), everywhere; a module that does not import here (a
package not installed, an exception at import) only for steps on the local backend. For a step on
another backend (Ray, ...), whose environment may differ, that is a warning.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

CHECK_FORMAT = 1  # bump when what a passing verdict means changes: older cache entries are then ignored
CACHE_KEEP = 4096  # passing verdicts kept (most recent first)
TIMEOUT_VAR = "MLSPEC_STEP_CHECK_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # seconds for the whole check (one subprocess)
SHOW_STEPS = 3  # a finding shared by many steps names this many, then "and N more"
READY = b'{"ready": true}'  # the check process's first line: it runs, and is about to import the steps' code


@dataclass(frozen=True)
class StepCall:
    """How the runner will call these steps: import ``module``, call ``function`` with these keyword names."""

    steps: tuple  # step names (steps alike in all of the below are checked once)
    module: str
    function: str
    inputs: tuple = ()
    params: tuple = ()
    matrix: tuple = ()  # matrix keys (each arrives as a keyword argument, like a param)
    backend: str = "local"  # the backend's type
    python: str = ""  # the interpreter the step runs in; "" for this one
    code: dict = field(default_factory=dict, compare=False, hash=False)  # the step's code facts

    @property
    def remote(self) -> bool:
        """Runs in an environment that may differ from this machine's (any backend but local)."""
        return self.backend != "local"

    @property
    def names(self) -> tuple:
        return tuple(sorted(set(self.inputs) | set(self.params) | set(self.matrix)))


@dataclass(frozen=True)
class Finding:
    """One problem, shared by the steps named; ``error`` False is a warning (the plan goes on)."""

    steps: tuple
    message: str
    error: bool = True

    def line(self) -> str:
        shown = ", ".join(f"step.{s}" for s in self.steps[:SHOW_STEPS])
        more = len(self.steps) - SHOW_STEPS
        return f"{shown}{f' and {more} more step' + 's' * (more > 1) if more > 0 else ''}: {self.message}"


# --- mlspec's side ------------------------------------------------------------------------------------
def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_VAR, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        from mlspec.errors import MlspecError

        raise MlspecError(f"{TIMEOUT_VAR}={raw!r} is not a number of seconds",
                          hint=f"set it to e.g. 120, or unset it for the default ({DEFAULT_TIMEOUT:g})") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def interpreter(python: str, project_dir: str) -> tuple[str, str]:
    """(the executable to start, its identity for the cache) or (path, "") when it does not exist.

    The identity is the path as given (a venv's python is a symlink: the venv is the path, not the
    target), the target's size and mtime (an upgraded or replaced interpreter), and the mtimes of its
    site-packages directories, which installing, upgrading or removing a package changes: a verdict
    that passed is not trusted after ``pip install``/``uninstall``."""
    if not python:
        return sys.executable, f"{sys.executable}|{sys.version}|{_site_stamp(sys.prefix)}"
    path = python
    if os.sep in python and not os.path.isabs(python):
        path = os.path.join(project_dir, python)
    elif os.sep not in python:
        import shutil

        path = shutil.which(python) or python
    try:
        st = os.stat(path)
    except OSError:
        return path, ""
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return path, f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{_site_stamp(prefix)}"


def _site_stamp(prefix: str) -> str:
    """mtimes of the site-packages directories under an interpreter's prefix (a venv, or /usr)."""
    import glob

    stamps = []
    for d in sorted(glob.glob(os.path.join(glob.escape(prefix), "lib", "python*", "site-packages"))
                    + glob.glob(os.path.join(glob.escape(prefix), "lib", "site-packages"))):
        try:
            stamps.append(str(os.stat(d).st_mtime_ns))
        except OSError:
            pass
    return ",".join(stamps)


class VerdictCache:
    """Keys of checks that passed, in ``.mlspec/cache/stepcheck.json`` (0600, written atomically)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            keys = doc.get("passed") if isinstance(doc, dict) and doc.get("format") == CHECK_FORMAT else None
            self.keys = [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []
        except (OSError, ValueError):
            self.keys = []
        self.known = set(self.keys)
        self.added: list[str] = []

    def __contains__(self, key: str) -> bool:
        return key in self.known

    def add(self, key: str) -> None:
        if key not in self.known:
            self.known.add(key)
            self.added.append(key)

    def save(self) -> None:
        if not self.added:
            return
        from mlspec.storage import atomic_write_local

        fresh = set(self.added)
        keys = (self.added + [k for k in self.keys if k not in fresh])[:CACHE_KEEP]
        try:
            atomic_write_local(self.path, json.dumps({"format": CHECK_FORMAT, "passed": keys}).encode(),
                               durable=False)
        except OSError:
            pass  # a read-only project still plans; it checks again next time


def _key_of(parts) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(json.dumps(parts, separators=(",", ":")).encode())


def check(project_dir, code_paths: list[str], calls: list[StepCall], cache_path=None,
          timeout: float | None = None, runners: dict | None = None) -> list[Finding]:
    """Every problem of these calls, grouped by message (errors first). Starts at most one process per
    interpreter, none when every call passed before with the same code.

    ``runners``: a step's `python` setting ("" for this interpreter) -> a callable ``(request, timeout)``
    that answers a check request elsewhere than in a new check process (a local backend's worker), returning
    what :func:`_run_once` returns."""
    from mlspec import __version__

    project_dir = str(project_dir)
    timeout = timeout_seconds() if timeout is None else timeout
    cache = VerdictCache(cache_path) if cache_path else None
    code_hashes: dict = {}
    keys: dict = {}  # (interpreter id, code hash, module, function, names) -> cache key
    pending: dict = {}  # executable -> {target: [(call, key)]}
    found: list[tuple[str, str, bool]] = []  # (step, message, error)
    interpreters: dict = {}
    via: dict = {}  # executable -> the runner that answers for it
    for call in calls:
        if call.python not in interpreters:
            interpreters[call.python] = interpreter(call.python, project_dir)
        exe, ident = interpreters[call.python]
        if not ident:
            found.extend((s, f"the local backend's python {call.python!r} does not exist: fix the backend's "
                                "`python:` setting", True) for s in call.steps)
            continue
        items = tuple(call.code.items())
        code = code_hashes.get(items)
        if code is None:
            code = code_hashes[items] = _key_of(sorted(items))
        names = call.names
        ks = (ident, code, call.module, call.function, names)
        key = keys.get(ks)
        if key is None:
            key = keys[ks] = _key_of([CHECK_FORMAT, __version__, *ks[:4], list(names)])
        if cache is not None and key in cache:
            continue
        if runners and call.python in runners:
            via.setdefault(exe, runners[call.python])
        pending.setdefault(exe, {}).setdefault((call.module, call.function, names), []).append((call, key))
    for exe, targets in sorted(pending.items()):
        answers = _ask(exe, project_dir, code_paths, sorted(targets), timeout, via.get(exe))
        for target, uses in targets.items():
            verdict = answers.get(target)
            for call, key in uses:
                problems = _problems(call, verdict, project_dir, code_paths, exe)
                if not problems and cache is not None:
                    cache.add(key)
                found.extend((s, msg, err) for msg, err in problems for s in call.steps)
    if cache is not None:
        cache.save()
    return _grouped(found)


def _grouped(found: list[tuple[str, str, bool]]) -> list[Finding]:
    by: dict = {}
    for step, msg, err in found:
        by.setdefault((msg, err), []).append(step)
    out = [Finding(tuple(sorted(set(steps))), msg, err) for (msg, err), steps in by.items()]
    return sorted(out, key=lambda f: (not f.error, f.steps, f.message))


def request_of(code_paths: list[str], targets: list) -> dict:
    """What the check process (or a worker) is asked: the code paths and [module, function, [names]]."""
    return {"code_paths": code_paths, "targets": [[m, f, list(n)] for m, f, n in targets]}


def _ask(exe: str, project_dir: str, code_paths: list[str], targets: list, timeout: float, run=None) -> dict:
    """target -> its verdict from the check process, or a "checker" verdict saying why there is none. A
    module that ends the process is named, and the targets after it are checked by a new process, all
    within ``timeout``. ``run(request, timeout)``, when given, answers instead of a new check process."""
    import time

    answers: dict = {}
    remaining = list(targets)
    deadline = time.monotonic() + timeout
    while remaining:
        left = max(deadline - time.monotonic(), 0.1)
        ran = (run(request_of(code_paths, remaining), left) if run is not None
               else _run_once(exe, project_dir, code_paths, remaining, left))
        if isinstance(ran, str):  # could not start
            answers.update({t: {"checker": ran} for t in remaining})
            break
        out, err, timed_out, code = ran
        if not out.startswith(READY) and not timed_out:  # it never got to the steps' code (no mlspec there?)
            last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
            answers.update({t: {"checker": f"could not be checked: {exe} -m mlspec.stepcheck exited with code "
                                           f"{code}{': ' + last if last else ''}"} for t in remaining})
            break
        answers.update(_parse(out, remaining))
        remaining = [t for t in remaining if t not in answers]
        if not remaining:
            break
        stopped = remaining[0][0]  # targets are answered in order: this module hung or ended the process
        if timed_out:
            for t in remaining:
                why = (f"importing {stopped} did not finish within {timeout:g}s" if t[0] == stopped
                       else f"not checked: importing {stopped} did not finish within {timeout:g}s")
                answers[t] = {"checker": f"{why} (set {TIMEOUT_VAR} to wait longer)"}
            break
        last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
        for t in remaining:
            if t[0] == stopped:
                answers[t] = {"checker": f"the check process ended (exit code {code}) while importing {stopped}"
                                         f"{': ' + last if last else ''}", "crashed": True}
        remaining = [t for t in remaining if t[0] != stopped]
    return answers


def _run_once(exe: str, project_dir: str, code_paths: list[str], targets: list, timeout: float):
    """(stdout, stderr, timed out, exit code) of one check process, or why it could not start."""
    import subprocess

    from mlspec.worker import TOKEN_VAR

    request = request_of(code_paths, targets)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **{TOKEN_VAR: os.urandom(8).hex()})
    try:
        proc = subprocess.Popen([exe, "-m", "mlspec.stepcheck", str(os.getpid())], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=project_dir, env=env,
                                start_new_session=True)
    except OSError as exc:
        return f"could not be checked: cannot start {exe}: {exc.strerror or exc}"
    timed_out = False
    try:
        try:
            out, err = proc.communicate(json.dumps(request).encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a process outside the group holds the pipe: give up on it
                out, err = b"", b""
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C)
            _stop(proc)
    return out, err, timed_out, proc.returncode


def _stop(proc) -> None:
    """Kill the check process; its sentinel (mlspec.worker.guard) then kills what it started, its process
    group included. Whatever of the group is still there after a second is killed from here."""
    import signal
    import time

    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _parse(out: bytes, targets: list) -> dict:
    """target -> verdict, for the targets the process answered (a module that failed to import answers
    for all of its targets)."""
    modules: dict = {}
    functions: dict = {}
    for raw in out.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if "target" in msg:
            functions[msg["target"]] = msg
        elif "module" in msg:
            modules[msg["module"]] = msg
    got: dict = {}
    for i, t in enumerate(targets):
        if t[0] in modules:
            got[t] = modules[t[0]]
        elif i in functions:
            got[t] = functions[i]
    return got


def _rel(path: str, project_dir: str) -> str:
    if not path:
        return ""
    try:
        rel = os.path.relpath(path, project_dir)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _in_project(module: str, code_paths: list[str]) -> bool:
    """Whether the top-level package or module of ``module`` is one of the project's."""
    top = module.split(".", 1)[0]
    return any(os.path.isfile(os.path.join(p, top + ".py")) or os.path.isdir(os.path.join(p, top))
               for p in code_paths)


def _near(module: str, code_paths: list[str]) -> str:
    """' (did you mean 'pl.steps'?)' for a project module spelled almost right, else ''."""
    import difflib

    parts = module.split(".")
    for p in code_paths:
        base = os.path.join(p, *parts[:-1])
        if not os.path.isdir(base):
            continue
        names = [n[:-3] if n.endswith(".py") else n for n in os.listdir(base)
                 if (n.endswith(".py") and n != "__init__.py") or os.path.isfile(os.path.join(base, n, "__init__.py"))]
        best = difflib.get_close_matches(parts[-1], sorted(names), n=1, cutoff=0.6)
        if best:
            return f" (did you mean '{'.'.join(parts[:-1] + best)}'?)"
    return ""


def _problems(call: StepCall, v: dict | None, project_dir: str, code_paths: list[str], exe: str) -> list[tuple]:
    """(message, is error) for one call, from the check process's verdict."""
    if v is None:
        return [("could not be checked (no answer from the check process)", False)]
    if "checker" in v:
        # a module that ends the process when imported would end the step too (an error here); a timeout
        # or a check that could not start says nothing certain about the step (a warning)
        return [(v["checker"], bool(v.get("crashed")) and not call.remote)]
    if v.get("error"):
        return [_import_problem(call, v["error"], project_dir, code_paths, exe)]
    return _function_problems(call, v, project_dir)


def _import_problem(call: StepCall, e: dict, project_dir: str, code_paths: list[str], exe: str) -> tuple:
    where = _rel(e.get("file") or "", project_dir)
    at = f"{where}:{e['line']}" if where and e.get("line") else where
    missing = e.get("name") or ""
    here = "" if exe == sys.executable else f" for {exe}"
    remote = (f" (on this machine; the step runs on the {call.backend} backend, whose environment may have it)"
              if call.remote else "")
    if e["type"] == "ModuleNotFoundError" and missing and (call.module == missing
                                                         or call.module.startswith(missing + ".")):
        # the step's own module is not found: a wrong `run:` (or a package not installed)
        if _in_project(call.module, code_paths):
            return (f"there is no module '{call.module}' in the project{_near(call.module, code_paths)}: "
                    "fix its `run:`", True)
        paths = ", ".join(_rel(p, project_dir) or "." for p in code_paths)
        return (f"module '{call.module}' is neither in the project ({paths}) nor installed{here}{remote}: "
                "fix its `run:`, or install the package", not call.remote)
    if e["type"] == "SyntaxError" and where and not os.path.isabs(where):
        return (f"{where}:{e.get('line') or '?'}: {e['message']} (SyntaxError): fix the code", True)
    who = at or f"module {call.module}"
    if e["type"] == "ModuleNotFoundError" and missing:
        if _in_project(missing, code_paths):
            return (f"{who} imports '{missing}', which is not in the project{_near(missing, code_paths)}: "
                    "fix the import", True)
        return (f"{who} imports '{missing}', which is not installed{here}{remote}: install the package that "
                "provides it, or fix the import", not call.remote)
    text = f"{e['type']}: {e['message']}" if e.get("message") else e["type"]
    if e["type"] == "ImportError" and missing and _in_project(missing, code_paths):
        return (f"{who}: {text}: fix the import", True)
    return (f"importing {call.module} raised {text}{f' ({at})' if at else ''}{remote}: fix the module (its "
            "top-level code runs when the step starts)", not call.remote)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _function_problems(call: StepCall, v: dict, project_dir: str) -> list[tuple]:
    fn = call.function
    if v.get("missing"):
        import difflib

        where = _rel(v.get("file") or "", project_dir) or f"module {call.module}"
        best = difflib.get_close_matches(fn, sorted(v.get("candidates") or ()), n=1, cutoff=0.6)
        hint = f" (did you mean '{best[0]}'?)" if best else ""
        return [(f"{where} has no function '{fn}'{hint}: fix its `run:`", True)]
    if v.get("not_callable"):
        return [(f"'{call.module}:{fn}' is not a function (it is a {v['not_callable']}): fix its `run:`", True)]
    where = _rel(v.get("file") or "", project_dir)
    name = f"{fn}() ({where}:{v['line']})" if where and v.get("line") else f"{fn}()"
    out = []

    def kind(n: str) -> str:  # as the runner merges them: a matrix key overrides a param of its name
        return "matrix" if n in call.matrix else "params" if n in call.params else "inputs"

    unknown = v.get("unknown") or []
    if unknown:
        groups: dict = {}
        for n in unknown:
            groups.setdefault(kind(n), []).append(f"'{n}'")
        label = {"inputs": ("input", "inputs"), "params": ("param", "params"), "matrix": ("matrix key", "matrix keys")}
        listed = _and([f"{label[k][len(ns) > 1]} {_and(ns)}" for k, ns in groups.items()])
        where = _and([f"its `{k}:`" for k in groups]).replace(" and ", " or ")
        them = "them" if len(unknown) > 1 else "it"
        out.append((f"{name} does not accept {listed}: add {'keyword parameters' if len(unknown) > 1 else 'a keyword parameter'} "
                    f"(or **kwargs), or remove {them} from {where}", True))
    for n in v.get("positional_only") or []:
        what = {"inputs": "input", "params": "param", "matrix": "matrix key"}[kind(n)]
        out.append((f"{name} takes '{n}' positionally only (before '/'), but the {what} is passed by name: move it "
                    "after the '/'", True))
    required = v.get("required") or []
    if required:
        listed = _and([f"'{n}'" for n in required])
        them = "them" if len(required) > 1 else "it"
        out.append((f"{name} requires {listed}, which the step does not pass: declare {them} under the step's "
                    f"`params:` or `inputs:`, or give {them} a default", True))
    return out


# --- the check process --------------------------------------------------------------------------------
def _location(exc: BaseException, roots: tuple) -> tuple[str, int]:
    """The last place in the project's code that the exception passed through (or its file, for a
    SyntaxError)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno or 0
    import traceback

    found = ("", 0)
    for fr in traceback.extract_tb(exc.__traceback__):
        if fr.filename.startswith(roots):
            found = (fr.filename, fr.lineno or 0)
    return found


def _import_error(exc: BaseException, roots: tuple) -> dict:
    file, line = _location(exc, roots)
    msg = (exc.msg if isinstance(exc, SyntaxError) else str(exc)).strip().splitlines()
    return {"type": type(exc).__name__, "message": (msg[0] if msg else "")[:300],
            "name": getattr(exc, "name", None) if isinstance(exc, ImportError) else None, "file": file, "line": line}


def _signature_verdict(target, names: list[str]) -> dict:
    import inspect

    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call decides
        return {}
    params = sig.parameters
    P = inspect.Parameter
    var_kw = any(p.kind is P.VAR_KEYWORD for p in params.values())
    given = set(names)
    out: dict = {}
    if not var_kw:
        unknown = [n for n in names if n not in params or params[n].kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
        positional = [n for n in names if n in params and params[n].kind is P.POSITIONAL_ONLY]
        if unknown:
            out["unknown"] = unknown
        if positional:
            out["positional_only"] = positional
    required = [p.name for p in params.values() if p.default is P.empty
                and (p.kind is P.POSITIONAL_ONLY and not var_kw
                     or p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and p.name not in given)
                and p.name not in out.get("positional_only", ())]
    if required:
        out["required"] = required
    return out


def _function_verdict(module, function: str, names: list[str]) -> dict:
    import inspect

    missing = object()
    target = getattr(module, function, missing)
    if target is missing:
        candidates = [k for k, v in vars(module).items() if not k.startswith("_") and callable(v)][:500]
        return {"missing": True, "candidates": candidates, "file": getattr(module, "__file__", "") or ""}
    if not callable(target):
        return {"not_callable": "module" if inspect.ismodule(target) else type(target).__name__}
    code = getattr(inspect.unwrap(target), "__code__", None)
    out = {"file": code.co_filename if code else "", "line": code.co_firstlineno if code else 0}
    out.update(_signature_verdict(target, names))
    return out


def answer(request: dict, write) -> None:
    """Import each module of the request once and ``write`` one JSON line per module that failed to import
    or per target (the same in the check process and in a local backend's worker). The code paths are on
    ``sys.path`` while it runs, as the runner puts them."""
    import importlib

    code_paths = [os.path.abspath(p) for p in request["code_paths"]]
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in code_paths if p not in sys.path]
    roots = tuple(os.path.join(p, "") for p in code_paths)
    imported: dict = {}
    try:
        for i, (module, function, names) in enumerate(request["targets"]):
            if module not in imported:
                try:
                    imported[module] = importlib.import_module(module)
                except BaseException as exc:  # user code: anything may happen at import
                    imported[module] = None
                    write(json.dumps({"module": module, "error": _import_error(exc, roots)}) + "\n")
            if imported[module] is None:
                continue
            try:
                verdict = _function_verdict(imported[module], function, names)
            except Exception as exc:  # noqa: BLE001 - a module whose attributes raise on access
                verdict = {"error": _import_error(exc, roots)}
            write(json.dumps(dict(verdict, target=i), default=str) + "\n")
    finally:
        sys.path[:] = saved_path


def main() -> int:
    """``python -m mlspec.stepcheck [PARENT_PID]``: the request on stdin, one JSON line per answer on
    stdout; what the imported modules print goes to stderr."""
    from mlspec import worker

    if len(sys.argv) > 1:
        worker.guard(int(sys.argv[1]))
    else:
        worker._prctl(worker._PR_SET_CHILD_SUBREAPER, 1)
    request = json.loads(sys.stdin.read())
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    answers.write(READY.decode() + "\n")
    sys.dont_write_bytecode = True
    try:
        answer(request, answers.write)
    finally:
        answers.flush()
        try:
            worker.kill_leftovers()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
