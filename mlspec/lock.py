"""The state lock: created atomically beside the state; says who holds it and whether it is stale."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

from mlspec.errors import LockedError
from mlspec.storage import Location


def _who() -> str:
    from mlspec.runs import who

    w = who()
    return f"{w['user']}@{w['host']}"


def process_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("State:"):
                    return "Z" not in line.split(":", 1)[1].split()[0]
        return True
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class LockInfo:
    id: str
    who: str
    operation: str
    created: float
    run_id: str = ""
    pid: int = 0
    host: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created))
        run = f", run {self.run_id}" if self.run_id else ""
        return f"{self.who} ({self.operation}{run}, pid {self.pid}, since {when}; lock ID {self.id})"

    def stale(self) -> bool | None:
        """True when the holder is on this host and its process is gone; None when unknown (other host)."""
        if self.host != socket.gethostname() or not self.pid:
            return None
        return not process_alive(self.pid)


class StateLock:
    def __init__(self, location: Location, workspace: str):
        self.loc = location
        self.name = f"{workspace}.lock"
        self.held: LockInfo | None = None

    def info(self) -> LockInfo | None:
        raw = self.loc.read_bytes(self.name)
        if raw is None:
            return None
        try:
            d = json.loads(raw)
            return LockInfo(d["id"], d.get("who", "?"), d.get("operation", "?"), float(d.get("created", 0)),
                            d.get("run_id", ""), int(d.get("pid", 0)), d.get("host", ""))
        except (ValueError, KeyError, TypeError):
            return LockInfo("unreadable", "?", "?", 0.0)

    def acquire(self, operation: str, run_id: str = "", timeout: float = 0.0) -> LockInfo:
        info = LockInfo(str(uuid.uuid4()), _who(), operation, time.time(), run_id, os.getpid(), socket.gethostname())
        body = json.dumps(info.__dict__, indent=1).encode()
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            if self.loc.create_exclusive(self.name, body):
                self.held = info
                return info
            if time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
            delay = min(delay * 1.5, 2.0)
        raise self.locked_error()

    def locked_error(self) -> LockedError:
        holder = self.info()
        if holder is None:
            return LockedError("the state lock could not be taken", hint="try again")
        stale = holder.stale()
        if stale:
            hint = (f"that process is no longer running: the lock is stale. Break it with:\n"
                    f"    mlspec state unlock {holder.id} --force")
        else:
            hint = (f"wait for it to finish (or pass --lock-timeout 10m); if it died, break the lock with:\n"
                    f"    mlspec state unlock {holder.id}")
        return LockedError(f"the state is locked by {holder.describe()}", hint=hint)

    def release(self) -> None:
        if self.held is None:
            return
        cur = self.info()
        if cur is not None and cur.id == self.held.id:
            self.loc.delete(self.name)
        self.held = None

    def force_unlock(self, lock_id: str) -> LockInfo:
        cur = self.info()
        if cur is None:
            raise LockedError("the state is not locked")
        if cur.id != lock_id:
            raise LockedError(f"the lock ID is {cur.id}, not {lock_id}", hint=f"held by {cur.describe()}")
        self.loc.delete(self.name)
        return cur
