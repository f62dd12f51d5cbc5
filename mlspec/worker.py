"""A pooled step worker: ``python -m mlspec.worker RESULT_FD [PARENT_PID]``, and the process lifecycle.

Reads one task per line on stdin ({"task", "log", "workdir"}), runs it with :func:`mlspec.runner.execute`
with fds 1 and 2 pointed at the task's log file and the step's env applied, writes one JSON result per
line to RESULT_FD. A step check ({"check", "log"}: :func:`mlspec.stepcheck.answer`, asked by the local
backend before an apply) is answered on RESULT_FD as the check process answers it, one line per answer,
then ``{"checked": true}``; the modules it imported stay imported for the steps. A step that crashes or
hangs takes down only this worker; the local backend replaces it. Reusing a worker saves the interpreter
start-up and imports (~50-100 ms) on every step.

No process an apply starts outlives it (docs/backends.md, "Process lifecycle"). With PARENT_PID (the
mlspec process; the local backend passes it) :func:`guard` ties this process to it:

- on Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment mlspec dies, even
  when a step holds the GIL in C code;
- a *sentinel*, a small process forked at start-up (before any thread exists) and detached from the
  worker, waits for the worker to die (EOF on a pipe only the worker holds) or for mlspec to die (polled,
  the portable fallback); then it kills every process carrying the worker's token (``MLSPEC_WORKER_TOKEN``,
  set by the backend in the worker's environment and so inherited by everything a step starts) and the
  worker's process group. The sentinel does the killing because a worker killed by SIGKILL cannot;
- the worker is a child subreaper (Linux), so a step's orphaned grandchildren (``sleep 300 &`` in a
  ``cmd``, a ``Popen`` nobody waited for) become its children; after every step :func:`kill_leftovers`
  kills and reaps every descendant the step left, before the result is reported.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

from mlspec.procs import process_alive

TOKEN_VAR = "MLSPEC_WORKER_TOKEN"
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36
_libc = None


def _prctl(option: int, arg) -> bool:
    """prctl(2) through ctypes; False where there is none (not Linux) or it fails."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):
        return False


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state letter) of every process, read from /proc; {} where there is no /proc."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) > 1:
            table[int(name)] = (int(fields[1]), fields[0].decode("ascii", "replace"))
    return table


def descendants(root: int, table: dict[int, tuple[int, str]] | None = None) -> list[int]:
    """Every live (not zombie) descendant of ``root``, parents before children."""
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if table[pid][1] != "Z":
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _has_children() -> bool:
    """Whether this process has any child (running or a zombie): one syscall, no /proc scan."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (OSError, AttributeError):
        return True
    return True


def _reap(pid: int, block: bool) -> None:
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        pass


def kill_leftovers() -> int:
    """Kill (SIGKILL) and reap every process the last step left behind: all descendants of this process.

    With the subreaper flag set (Linux) orphaned grandchildren are re-parented here, so walking the
    process tree finds them all. Costs one syscall when the step left nothing. Returns how many were killed.
    """
    if not _has_children():
        return 0
    me, killed = os.getpid(), set()
    for _ in range(50):  # a step forking in a loop may add processes while we kill: repeat until none
        table = _proc_table()
        victims = descendants(me, table)
        for pid, (ppid, state) in table.items():
            if ppid == me and state == "Z":
                _reap(pid, block=False)
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in victims:
            if table[pid][0] == me:
                _reap(pid, block=True)  # dies at once: SIGKILL cannot be caught
    return len(killed)


def _token_processes(token: str, exclude: int) -> list[int]:
    """Live processes whose initial environment carries ``TOKEN_VAR=token``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    out = []
    for pid, (_ppid, state) in _proc_table().items():
        if pid == exclude or state == "Z":
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(pid)
    return out


def _sentinel(read_fd: int, worker: int, parent: int, token: str) -> None:
    """The sentinel's body: wait until the worker or mlspec is gone, then kill what is left; never returns."""
    _prctl(_PR_SET_NAME, b"mlspec-sentinel")
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], 0.25)
            if ready or not process_alive(worker) or (parent and not process_alive(parent)):
                break
        for _ in range(50):
            victims = _token_processes(token, os.getpid()) if token else []
            if process_alive(worker):
                victims.append(worker)
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        if os.getpgrp() == worker:  # the worker led its own group (the local backend starts it so)
            os.killpg(worker, signal.SIGKILL)  # whatever is left of the group, this sentinel included
    finally:
        os._exit(0)


def _start_sentinel(parent: int, token: str) -> None:
    worker = os.getpid()
    r, w = os.pipe()  # the worker keeps w (close-on-exec, so exec'd step processes never hold it)
    try:
        mid = os.fork()
    except OSError:  # no process to spare: run without a sentinel (the death signal still holds on Linux)
        os.close(r)
        os.close(w)
        return
    if mid == 0:  # intermediate: fork the sentinel and exit, so that the sentinel is not the worker's child
        try:
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a group SIGTERM (timeout) must leave it to sweep
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                os.closerange(3, r)  # hold nothing of the worker's: its result pipe must see EOF when it dies
                os.closerange(r + 1, 1 << 16)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                _sentinel(r, worker, parent, token)
        finally:
            os._exit(0)  # a forked child never returns into the worker's code
    os.close(r)
    os.waitpid(mid, 0)
    _keep.append(w)


_keep: list[int] = []  # the worker's end of the sentinel pipe: open for the worker's whole life


def guard(parent: int) -> None:
    """Tie this process, and every process it starts, to the mlspec process ``parent`` (see module doc)."""
    token = os.environ.get(TOKEN_VAR) or os.urandom(8).hex()
    os.environ[TOKEN_VAR] = token
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent and not process_alive(parent):
        os._exit(70)  # mlspec died before the death signal was armed: run nothing
    _start_sentinel(parent, token)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def restore_env(base: dict) -> None:
    """Put ``os.environ`` back as ``base`` (the worker's own), changing only what a step changed: clearing and
    refilling all of it cost a putenv/unsetenv per variable on every step."""
    env = os.environ
    if env == base:
        return
    for key in [k for k in env if k not in base]:
        del env[key]
    for key, value in base.items():
        if env.get(key) != value:
            env[key] = value


def _output_to(log: str) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log``, truncated."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _check(msg: dict, out, saved_out: int, saved_err: int, base_env: dict) -> None:
    """Answer a step check (mlspec.stepcheck) here, with what the imported modules print in the log file."""
    from mlspec import stepcheck
    from mlspec.runner import _purge_stale_project_modules

    _output_to(msg["log"])
    out.write(stepcheck.READY.decode() + "\n")
    try:
        stepcheck.answer(msg["check"], out.write)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        restore_env(base_env)  # as after a step: what a module's top-level code set does not stay
        try:
            kill_leftovers()
        except OSError:
            pass
    _purge_stale_project_modules(msg["check"]["code_paths"])  # notes the modules' files as they were imported
    out.write('{"checked": true}\n')


def main() -> int:
    result_fd = int(sys.argv[1])
    if len(sys.argv) > 2:
        guard(int(sys.argv[2]))
    else:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    out = os.fdopen(result_fd, "w", buffering=1)
    os.set_inheritable(result_fd, False)
    from mlspec.runner import execute

    saved_out, saved_err = os.dup(1), os.dup(2)
    base_env = dict(os.environ)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if "check" in msg:
            _check(msg, out, saved_out, saved_err, base_env)
            continue
        task = msg["task"]
        _output_to(msg["log"])
        os.environ.update({k: str(v) for k, v in (task.get("env") or {}).items()})
        try:
            result = execute(task, msg["workdir"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            restore_env(base_env)
            try:
                kill_leftovers()  # nothing the step started outlives it, and it is gone before the result is sent
            except OSError:
                pass
        out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    code = main()
    # stdin closed: the pool is done with this worker. It ends at once, without Python's teardown (atexit
    # handlers, freeing every module: 10-25 ms of CPU): the way every pooled worker started by a pool thread
    # has always ended, killed by its death signal when the backend's threads exit (local.py starts the
    # step check's worker from the main thread, which would otherwise end differently). Every result is
    # written and flushed, and what each step started was killed when it ended.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
