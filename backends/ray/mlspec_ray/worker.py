"""What runs on the cluster: the step task and the import check of preflight.

Both are nested in :func:`worker_functions` so that Ray (cloudpickle) ships them by value: the cluster
needs ``mlspec`` (the runner) but not this package. They import only the standard library and
``mlspec.runner``.
"""

from __future__ import annotations


def worker_functions():
    """The two functions that run in Ray workers, nested so that Ray ships them by value (see module doc)."""

    def _remap(payload):
        """With a runtime_env working_dir, the project lives in the worker's cwd, not at the driver's path."""
        import os

        project_dir = payload["project_dir"]
        if os.path.isdir(project_dir):
            return payload
        here = os.getcwd()
        payload = dict(payload)
        payload["project_dir"] = here
        payload["code_paths"] = [here + p[len(project_dir):] if p.startswith(project_dir) else p
                                 for p in payload.get("code_paths") or []]
        return payload

    def _forget_project_modules(before, code_paths):
        """Drop the project modules an import check loaded outside the runner (which tracks its own)."""
        import importlib
        import os
        import sys

        roots = tuple(p.rstrip(os.sep) + os.sep for p in code_paths)
        if not roots:
            return
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            where = [getattr(mod, "__file__", None) or ""] + list(getattr(mod, "__path__", None) or [])
            if any(w.startswith(roots) for w in where if isinstance(w, str)):
                del sys.modules[name]
        importlib.invalidate_caches()

    scratch: dict = {}  # per worker process: Ray keeps this function, and so this dict, between tasks

    def _scratch_dir():
        """One scratch directory per worker process, reused by its tasks: creating and removing directories
        costs ~2 ms each on some file systems (ext4 with discard), more than the rest of a trivial step.

        Ray ends workers without running atexit hooks, so the directory is named after the process and a
        new worker removes those of processes that are gone."""
        import os
        import shutil
        import tempfile

        if scratch.get("pid") == os.getpid() and os.path.isdir(scratch.get("dir", "")):
            return scratch["dir"]
        base = tempfile.gettempdir()
        try:
            for name in os.listdir(base):
                if name.startswith("mlspec-ray-"):
                    pid = name.split("-")[2]
                    if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            pass
        scratch["dir"] = tempfile.mkdtemp(prefix=f"mlspec-ray-{os.getpid()}-")
        scratch["pid"] = os.getpid()
        return scratch["dir"]

    def _empty(root, keep):
        """Remove every file under root, and every directory but those in keep (the runner's own)."""
        import os

        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    os.unlink(path)
                elif path not in keep:
                    os.rmdir(path)

    def run_step(payload, log_limit):
        import os
        import shutil
        import sys

        from mlspec.runner import execute

        payload = _remap(payload)
        workdir = _scratch_dir()
        taskdir = os.path.join(workdir, "task")
        log_path = os.path.join(workdir, "log.txt")
        env = {k: str(v) for k, v in (payload.get("env") or {}).items()}
        saved_env = {k: os.environ.get(k) for k in env}
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        saved_fds = (os.dup(1), os.dup(2))
        saved_streams = (sys.stdout, sys.stderr)
        try:
            os.environ.update(env)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
            sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
            result = execute(payload, taskdir)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in (*saved_fds, log_fd):
                os.close(fd)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        with open(log_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > log_limit:
                fh.seek(size - log_limit)
            log = fh.read().decode("utf-8", "replace")
        keep = {taskdir} | {os.path.join(taskdir, d) for d in ("outputs", "inputs", "cache")}
        try:
            _empty(workdir, keep)
        except OSError:  # something odd was left behind: start the next task in a fresh directory
            shutil.rmtree(workdir, ignore_errors=True)
            scratch.clear()
        return result, log

    def check_imports(modules, payload):
        """Import each module with the project's code paths first on sys.path; {module: error} for failures."""
        import importlib
        import platform
        import sys

        payload = _remap(payload)
        problems = {}
        try:
            import mlspec.runner  # noqa: F401 - the runner must exist where steps run
        except Exception as exc:  # noqa: BLE001
            problems["mlspec"] = f"{type(exc).__name__}: {exc}"
        before, old_path = set(sys.modules), list(sys.path)
        sys.path[:0] = [p for p in payload.get("code_paths") or [] if p not in sys.path]
        try:
            for name in modules:
                try:
                    importlib.import_module(name)
                except BaseException as exc:  # noqa: BLE001 - user code may raise anything at import
                    problems[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            sys.path[:] = old_path
            _forget_project_modules(before, payload.get("code_paths") or [])
        return {"problems": problems, "python": platform.python_version()}

    return run_step, check_imports
