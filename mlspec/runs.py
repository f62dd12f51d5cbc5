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
from mlspec.state import check_fields, json_safe, read_metrics
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


def run_record_problem(rec) -> str:
    """What makes a run record unusable, or "" (a shape check, to be replaced by a JSON Schema)."""
    problem = check_fields(rec, {"run_id": str, "status": str, "started": (int, float), "steps": dict})
    if problem:
        return problem
    for key, types in (("finished", (int, float, type(None))), ("counts", dict), ("user", str), ("host", str),
                       ("workspace", str), ("git", dict), ("state", dict)):
        if key in rec and not isinstance(rec[key], types):
            return f"its '{key}' has the wrong type"
    for addr, step in rec["steps"].items():
        if not isinstance(step, dict) or not isinstance(step.get("status"), str):
            return f"its step {addr} is not a step outcome"
    from mlspec import records

    return records.problem(records.RUN, rec)


def _read_steps(rec: dict) -> dict:
    for addr, step in rec["steps"].items():
        if isinstance(step.get("metrics"), dict):
            step["metrics"] = read_metrics(step["metrics"])
    return rec


class RunStore:
    def __init__(self, loc: Location):
        self.loc = loc

    def write(self, record: dict) -> None:
        # non-finite metrics are written as "nan"/"inf"/"-inf": the file stays valid JSON (docs/state.md)
        try:
            text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        except ValueError:
            text = json.dumps(json_safe(record), indent=1, sort_keys=True)
        self.loc.write_bytes(f"{record['run_id']}.json", text.encode())

    def ids(self) -> list[str]:
        return sorted(n[:-5] for n in self.loc.list() if n.endswith(".json") and not n.startswith("."))

    def path(self, run_id: str) -> str:
        return self.loc.join(f"{run_id}.json")

    def load(self, run_id: str) -> tuple[dict | None, str]:
        """A run record and "", or None and what is wrong with it (missing, not JSON, wrong shape)."""
        raw = self.loc.read_bytes(f"{run_id}.json")
        if raw is None:
            return None, "it is gone"
        try:
            rec = json.loads(raw)
        except ValueError:
            return None, "it is not JSON (truncated?)"
        problem = run_record_problem(rec)
        if problem:
            return None, problem
        return _read_steps(rec), ""

    def get(self, run_id: str) -> dict | None:
        """The record, or None when it is damaged (callers that scan many records skip those)."""
        return self.load(run_id)[0]

    def read(self, run_id: str) -> dict:
        ids = self.ids()
        matches = [i for i in ids if i == run_id] or [i for i in ids if i.startswith(run_id)]
        if run_id == "latest" and ids:
            matches = [ids[-1]]
        if len(matches) != 1:
            hint = "list them with `mlspec runs list`"
            raise MlspecError(f"no run '{run_id}'" if not matches else f"'{run_id}' matches {len(matches)} runs",
                              hint=hint)
        rec, problem = self.load(matches[0])
        if rec is None:
            raise MlspecError(f"run record {self.path(matches[0])} is corrupt: {problem}",
                              hint=f"a run record is history only (the state does not depend on it); move it away: "
                                   f"mv {self.path(matches[0])} {self.path(matches[0])}.corrupt")
        return rec

    def latest(self, n: int = 20) -> list[dict]:
        """The last ``n`` records; a damaged one is listed as ``{"run_id", "status": "corrupt", "problem"}``."""
        out = []
        for i in self.ids()[-n:]:
            rec, problem = self.load(i)
            out.append(rec if rec is not None else {"run_id": i, "status": "corrupt", "problem": problem})
        return out
