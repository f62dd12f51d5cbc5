"""A pooled step worker: ``python -m mlspec.worker RESULT_FD``.

Reads one task per line on stdin ({"task", "log", "workdir"}), runs it with :func:`mlspec.runner.execute`
with fds 1 and 2 pointed at the task's log file and the step's env applied, writes one JSON result per
line to RESULT_FD. A step that crashes or hangs takes down only this worker; the local backend replaces it.
Reusing a worker saves the interpreter start-up and imports (~50-100 ms) on every step.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    result_fd = int(sys.argv[1])
    out = os.fdopen(result_fd, "w", buffering=1)
    from mlspec.runner import execute

    saved_out, saved_err = os.dup(1), os.dup(2)
    base_env = dict(os.environ)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        task = msg["task"]
        fd = os.open(msg["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.environ.update({k: str(v) for k, v in (task.get("env") or {}).items()})
        try:
            result = execute(task, msg["workdir"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.environ.clear()
            os.environ.update(base_env)
        out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
