"""Process liveness, standard library only (the step worker imports it before anything else of mlspec)."""

from __future__ import annotations

import os

_HAVE_PROC = os.path.isdir("/proc/self")


def process_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie has exited; only its parent has yet to reap it)."""
    if _HAVE_PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                data = fh.read()
            return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X", b"")
        except FileNotFoundError:
            return False
        except OSError:
            return True
    try:  # no /proc (macOS, BSD): ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
