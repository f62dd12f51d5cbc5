"""The state lock: created atomically beside the state; says who holds it and whether it is stale.

On an object store the lock carries a **lease**: its holder renews it in a background thread every third of
the lease (60 s by default: `storage.lock_lease`, or $MLSPEC_LOCK_LEASE), and a lock whose lease has run out
(its holder was killed, or lost the network) is taken over by the next process that wants it, with a
compare-and-swap (S3 If-Match on the lock's ETag) so that of two waiters only one gets it. On local disk
the lock has no lease: a dead holder on this host is detected by its process id (see StateLock).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
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
    for key in ("created", "expires", "lease"):
        v = d.get(key, 0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1e11:
            return f"its '{key}' is not a {'duration' if key == 'lease' else 'time'}"
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
    lease: float = 0.0  # seconds; 0: no lease (a local lock)
    expires: float = 0.0  # when the lease runs out unless renewed (time.time())

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if (k not in ("problem", "lease", "expires") or v)}

    def lease_left(self, now: float | None = None) -> float | None:
        """Seconds until the lease runs out (negative: it has); None for a lock without a lease."""
        if not self.lease or self.problem:
            return None
        return self.expires - (time.time() if now is None else now)

    def describe(self) -> str:
        if self.problem:
            return f"an unreadable lock file ({self.problem}; lock ID {self.id})"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created))
        run = f", run {self.run_id}" if self.run_id else ""
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        left = self.lease_left()
        lease = ""
        if left is not None:
            until = time.strftime("%H:%M:%S UTC", time.gmtime(self.expires))
            lease = (f", lease until {until} (in {left:.0f}s)" if left >= 0 else
                     f", lease expired at {until}")
        return f"{self.who} ({self.operation}{run}, pid {self.pid}{where}, since {when}{lease}; lock ID {self.id})"

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
                    d.get("run_id", ""), d.get("pid", 0), d.get("host", ""), lease=float(d.get("lease", 0)),
                    expires=float(d.get("expires", 0)))


DEFAULT_LEASE = 60.0


def lease_seconds(setting=None) -> float:
    """The lease of a lock on an object store: $MLSPEC_LOCK_LEASE, else the setting, else 60 s."""
    from mlspec.units import parse_duration

    text = os.environ.get("MLSPEC_LOCK_LEASE") or setting
    if text in (None, ""):
        return DEFAULT_LEASE
    try:
        value = float(text) if isinstance(text, (int, float)) else parse_duration(str(text))
    except (ValueError, TypeError):
        from mlspec.errors import MlspecError

        raise MlspecError(f"the lock lease '{text}' is not a duration",
                          hint="e.g. 60s or 2m (storage.lock_lease, or $MLSPEC_LOCK_LEASE)") from None
    return max(float(value), 1.0)



class StateLock:
    """One workspace's lock. ``acquire`` breaks a stale lock by itself when its holder was a process on this host
    that is gone (``broken_stale`` then holds what the broken lock said); a lock held from another host, whose
    process cannot be checked, is only ever broken by hand (`mlspec state unlock ID`)."""

    def __init__(self, location: Location, workspace: str, lease: float | None = None):
        self.loc = location
        self.name = f"{workspace}.lock"
        self.breaking = f"{workspace}.lock.breaking"
        self.held: LockInfo | None = None
        self.broken_stale: LockInfo | None = None
        # a lease on object stores only: there a dead holder's process cannot be seen
        self.lease = 0.0 if location.local else (lease if lease is not None else lease_seconds())
        self._tag: str | None = None
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost: str = ""  # why the lease was lost while held ("" while it is ours)

    @property
    def where(self) -> str:
        return self.loc.join(self.name)

    def info(self) -> LockInfo | None:
        raw = self.loc.read_bytes(self.name)
        if raw is None:
            return None
        return parse_lock(raw)

    def acquire(self, operation: str, run_id: str = "", timeout: float = 0.0) -> LockInfo:
        info = LockInfo(str(uuid.uuid4()), _who(), operation, time.time(), run_id, os.getpid(), socket.gethostname(),
                        lease=self.lease, expires=time.time() + self.lease if self.lease else 0.0)
        body = json.dumps(info.to_dict(), indent=1).encode()
        deadline = time.monotonic() + timeout
        delay = 0.1
        breaks = 0
        watched: tuple[str | None, float] = (None, 0.0)  # (the holder's tag, when we first saw it)
        while True:
            if self.lease:  # the lease starts when the lock is written
                info.created = time.time()
                info.expires = info.created + self.lease
                body = self._body(info)
            if self.loc.create_exclusive(self.name, body):
                self.held = info
                if self.lease:
                    self._start_renewing(info)
                return info
            if self.lease:
                took, watched = self._take_expired(info, watched)
                if took:
                    return info
            elif breaks < 3:
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

    # --- the lease (object stores) -------------------------------------------------------------------
    def _body(self, info: LockInfo) -> bytes:
        return json.dumps(info.to_dict(), indent=1).encode()

    def _take_expired(self, info: LockInfo, watched: tuple) -> tuple[bool, tuple]:
        """Take the lock over when its lease has run out: by the holder's own clock (``expires``), or because
        it has not changed for a whole lease while we watched (a holder whose clock runs ahead). One
        conditional write on the tag we read, so of two waiters only one takes it."""
        raw, tag = self.loc.read_tagged(self.name)
        if raw is None:
            return False, (None, 0.0)  # released just now: the next create may succeed
        holder = parse_lock(raw)
        now_m = time.monotonic()
        if tag != watched[0]:
            watched = (tag, now_m)
        lease = holder.lease or (None if not holder.problem else self.lease)
        expired_by_clock = holder.lease_left() is not None and holder.lease_left() < 0
        unchanged_for_lease = lease is not None and now_m - watched[1] > lease
        if not (expired_by_clock or unchanged_for_lease) or tag is None:
            return False, watched
        info.created = time.time()
        info.expires = info.created + self.lease
        new_tag = self.loc.replace_if_match(self.name, self._body(info), tag)
        if new_tag is None:
            return False, (None, 0.0)  # another waiter (or the holder, renewing) wrote first
        self._tag = new_tag or None
        self.held = info
        self.broken_stale = holder
        self._start_renewing(info)
        print(f"Note: took over the lock of {holder.describe()}: its holder stopped renewing the lease "
              f"(killed, or cut off), so it expired.", file=sys.stderr, flush=True)
        return True, watched

    def _start_renewing(self, info: LockInfo) -> None:
        if self._tag is None:
            raw, tag = self.loc.read_tagged(self.name)
            if raw is None or parse_lock(raw).id != info.id:
                self.lost = "the lock vanished right after it was taken"
                return
            self._tag = tag
        self._stop.clear()
        self.lost = ""
        t = threading.Thread(target=self._renew_loop, args=(info,), name="mlspec-lock-lease", daemon=True)
        self._renewer = t
        t.start()

    def _renew_loop(self, info: LockInfo) -> None:
        every = max(self.lease / 3.0, 0.2)
        while not self._stop.wait(every):
            info.expires = time.time() + self.lease
            try:
                new_tag = self.loc.replace_if_match(self.name, self._body(info), self._tag or "")
            except Exception as exc:  # noqa: BLE001  (a network blip: try again at the next tick)
                print(f"Warning: could not renew the state lock's lease: {exc}", file=sys.stderr, flush=True)
                continue
            if new_tag is None:
                cur = self.info()
                self.lost = (f"the lease of the state lock ran out and it was taken by "
                             f"{cur.describe() if cur else 'someone else (and released)'}")
                print(f"Warning: {self.lost}; this process no longer holds the lock.", file=sys.stderr, flush=True)
                return
            self._tag = new_tag

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=30)
        self._renewer = None
        self._tag = None

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
        left = holder.lease_left()
        stale = holder.stale() if left is None else False
        if left is not None:
            hint = (f"wait for it to finish (or pass --lock-timeout 10m); if its holder died, its lease runs out "
                    f"{'now' if left <= 0 else f'in {left:.0f}s'} and the next apply takes the lock over; "
                    f"or break it at once with:\n    mlspec state unlock {holder.id}")
        elif stale:  # only when breaking it automatically failed
            hint = (f"that process is no longer running: the lock is stale. Break it with:\n"
                    f"    mlspec state unlock {holder.id} --force")
        else:
            hint = (f"wait for it to finish (or pass --lock-timeout 10m); if it died, break the lock with:\n"
                    f"    mlspec state unlock {holder.id}")
        return LockedError(f"the state is locked by {holder.describe()}", hint=hint)

    def release(self) -> None:
        if self.held is None:
            return
        self._stop_renewing()
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
