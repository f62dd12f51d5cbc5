"""Run records: one immutable JSON document per apply under ``<state>/runs/<run id>.json``."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

from mlspec.errors import MlspecError
from mlspec.storage import Location


def new_run_id(now: float | None = None) -> str:
    """``rYYYYMMDD-HHMMSS-MMMxxx``: MMM is the millisecond in hex, so ids sort in time order even when two
    applies start within one second (runs list, latest run, crashed-run recovery rely on that)."""
    now = time.time() if now is None else now
    ms = int((now % 1) * 1000)
    return time.strftime("r%Y%m%d-%H%M%S-", time.gmtime(now)) + f"{ms:03x}" + secrets.token_hex(2)[:3]


def git_info(project_dir: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, timeout=5)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def who() -> dict:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname()}


class RunStore:
    def __init__(self, loc: Location):
        self.loc = loc

    def write(self, record: dict) -> None:
        self.loc.write_bytes(f"{record['run_id']}.json", json.dumps(record, indent=1, sort_keys=True).encode())

    def ids(self) -> list[str]:
        return sorted(n[:-5] for n in self.loc.list() if n.endswith(".json"))

    def read(self, run_id: str) -> dict:
        ids = self.ids()
        matches = [i for i in ids if i == run_id] or [i for i in ids if i.startswith(run_id)]
        if run_id == "latest" and ids:
            matches = [ids[-1]]
        if len(matches) != 1:
            hint = "list them with `mlspec runs list`"
            raise MlspecError(f"no run '{run_id}'" if not matches else f"'{run_id}' matches {len(matches)} runs",
                              hint=hint)
        return json.loads(self.loc.read_bytes(f"{matches[0]}.json"))

    def latest(self, n: int = 20) -> list[dict]:
        return [json.loads(self.loc.read_bytes(f"{i}.json")) for i in self.ids()[-n:]]
