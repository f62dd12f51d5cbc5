"""The state lock: created atomically beside the state; says who holds it and whether it is stale."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass

from mlspec.errors import LockedError
from mlspec.procs import process_alive
from mlspec.storage import Location


def _who() -> str:
    from mlspec.runs import who

    w = who()
    return f"{w['user']}@{w['host']}"


def lock_problem(d) -> str:
    """What makes a lock file unusable, or "" (a shape check, to be replaced by a JSON Schema)."""
    if not isinstance(d, dict):
        return "it is not a JSON object"
    if not isinstance(d.get("id"), str) or not d["id"]:
        return "it has no lock ID"
    for key in ("who", "operation", "run_id", "host"):
        if key in d and not isinstance(d[key], str):
            return f"its '{key}' is not a string"
    if "pid" in d and (not isinstance(d["pid"], int) or isinstance(d["pid"], bool) or not 0 <= d["pid"] < 2 ** 31):
        return "its 'pid' is not a process id"
    created = d.get("created", 0)
    if not isinstance(created, (int, float)) or isinstance(created, bool) or not 0 <= created < 1e11:
        return "its 'created' is not a time"
    return ""


UNREADABLE = "unreadable"  # the ID `mlspec state unlock` takes for a lock file that cannot be parsed


@dataclass
class LockInfo:
    id: str
    who: str
    operation: str
    created: float
    run_id: str = ""
    pid: int = 0
    host: str = ""
    problem: str = ""  # set for a lock file that cannot be parsed (id is UNREADABLE)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "problem" or v}

    def describe(self) -> str:
        if self.problem:
            return f"an unreadable lock file ({self.problem}; lock ID {self.id})"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created))
        run = f", run {self.run_id}" if self.run_id else ""
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        return f"{self.who} ({self.operation}{run}, pid {self.pid}{where}, since {when}; lock ID {self.id})"

    def stale(self) -> bool | None:
        """True when the holder is on this host and its process is gone; None when unknown (other host)."""
        if self.problem or self.host != socket.gethostname() or not self.pid:
            return None
        return not process_alive(self.pid)


def parse_lock(raw: bytes) -> LockInfo:
    try:
        d = json.loads(raw)
    except ValueError:
        d, problem = None, "it is not JSON (empty or truncated?)"
    else:
        problem = lock_problem(d)
    if problem:
        return LockInfo(UNREADABLE, "?", "?", 0.0, problem=problem)
    return LockInfo(d["id"], d.get("who", "?"), d.get("operation", "?"), float(d.get("created", 0)),
                    d.get("run_id", ""), d.get("pid", 0), d.get("host", ""))


class StateLock:
    """One workspace's lock. ``acquire`` breaks a stale lock by itself when its holder was a process on this host
    that is gone (``broken_stale`` then holds what the broken lock said); a lock held from another host, whose
    process cannot be checked, is only ever broken by hand (`mlspec state unlock ID`)."""

    def __init__(self, location: Location, workspace: str):
        self.loc = location
        self.name = f"{workspace}.lock"
        self.breaking = f"{workspace}.lock.breaking"
        self.held: LockInfo | None = None
        self.broken_stale: LockInfo | None = None

    @property
    def where(self) -> str:
        return self.loc.join(self.name)

    def info(self) -> LockInfo | None:
        raw = self.loc.read_bytes(self.name)
        if raw is None:
            return None
        return parse_lock(raw)

    def acquire(self, operation: str, run_id: str = "", timeout: float = 0.0) -> LockInfo:
        info = LockInfo(str(uuid.uuid4()), _who(), operation, time.time(), run_id, os.getpid(), socket.gethostname())
        body = json.dumps(info.to_dict(), indent=1).encode()
        deadline = time.monotonic() + timeout
        delay = 0.1
        breaks = 0
        while True:
            if self.loc.create_exclusive(self.name, body):
                self.held = info
                return info
            if breaks < 3:
                holder = self.info()
                if holder is not None and holder.stale():
                    breaks += 1
                    if self._break_stale(holder):
                        continue
            if time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
            delay = min(delay * 1.5, 2.0)
        raise self.locked_error()

    def _break_stale(self, holder: LockInfo) -> bool:
        """Remove ``holder``'s lock if it is still there and still stale. Breakers take turns (an exclusive
        ``<ws>.lock.breaking`` file), and each checks again under it, so two of them never remove a lock that a
        third has just taken. True when the lock may now be free."""
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}).encode()
        if not self.loc.create_exclusive(self.breaking, me):
            return False
        try:
            cur = self.info()
            if cur is None:
                return True
            if cur.id != holder.id or not cur.stale():
                return False
            self.loc.delete(self.name)
            self.broken_stale = cur
        finally:
            self.loc.delete(self.breaking)
        print(f"Note: broke a stale lock of {cur.describe()}: that process is no longer running on this host.",
              file=sys.stderr, flush=True)
        return True

    def locked_error(self) -> LockedError:
        holder = self.info()
        for _ in range(5):  # a lock being created right now is empty for a moment
            if holder is None or not holder.problem:
                break
            time.sleep(0.1)
            holder = self.info()
        if holder is None:
            return LockedError("the state lock could not be taken", hint="try again")
        if holder.problem:
            return LockedError(f"the lock file {self.where} is unreadable: {holder.problem}",
                               hint=f"if no mlspec command is running on this state, break it: "
                                    f"mlspec state unlock {UNREADABLE} --force")
        stale = holder.stale()
        if stale:  # only when breaking it automatically failed
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
        self.loc.delete(self.breaking)  # left only by a process that died while breaking a stale lock
        return cur
