"""What `metrics diff --base` and `plots diff --base` compare with: a recorded state, found from what the user typed.

A base is always a *state* (what was recorded at one point), never a run record: a run record holds only the
steps that run ran, so comparing with one shows `-` for everything else.

    (nothing)         the previous state serial of this workspace
    N, serial:N       state serial N of this workspace (`mlspec state history` lists them)
    workspace:NAME    the current state of another workspace sharing the state store
    run:ID, rID...    the state serial that run wrote (an id, a unique prefix or `latest`)
    REV, rev:REV      a git revision: the newest kept serial applied at REV or at an ancestor of REV
                      (each run record notes the project's git HEAD at apply, and the serial it wrote)
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlspec.errors import MlspecError
from mlspec.runs import RunStore
from mlspec.state import State, StateStore

_RUN_ID = re.compile(r"^r\d{8}-\d{6}")
FORMS = "a state serial (N), workspace:NAME, run:ID or a git revision"


@dataclass(frozen=True)
class Point:
    """One recorded state to compare: its description and where it came from (for --format json)."""

    label: str
    state: State
    workspace: str
    serial: int
    commit: str | None = None

    def to_dict(self) -> dict:
        return {"label": self.label, "workspace": self.workspace, "serial": self.serial, "commit": self.commit}


def current_point(project) -> Point:
    st = project.read_state()
    if not st.exists and not st.resources:
        raise MlspecError("nothing is recorded yet in workspace "
                          f"'{project.store.ws}'", hint="run `mlspec apply` first")
    return Point(f"state serial {st.serial}", st, project.store.ws, st.serial)


def resolve_base(project, text: str | None, current: Point) -> Point:
    """The state named by ``--base TEXT`` (see the module's doc); a one-line MlspecError for anything else."""
    store = project.store
    text = (text or "").strip()
    if not text:
        older = [s for s in store.history_serials() if s < current.serial]
        if not older:
            raise MlspecError(f"there is no state serial before {current.serial} in workspace '{store.ws}' to "
                              "compare with", hint=f"pass --base as {FORMS}")
        return _serial_point(project, store, older[-1])
    kind, _, rest = text.partition(":")
    if kind == "workspace" and rest:
        other = StateStore(project.state_loc, rest)
        st = other.read(project.spec.project)
        if not st.exists and not st.resources:
            raise MlspecError(f"--base {text}: workspace '{rest}' has no state",
                              hint="apply in that workspace first (mlspec -w NAME apply), or name another base")
        return Point(f"workspace {rest} (state serial {st.serial})", st, rest, st.serial)
    if kind == "serial" and rest:
        if not rest.isdigit():
            raise MlspecError(f"--base {text}: a serial is a number", hint="see `mlspec state history`")
        return _serial_point(project, store, int(rest))
    if text.isdigit():
        return _serial_point(project, store, int(text))
    if kind == "run" and rest:
        return _run_point(project, store, rest)
    if _RUN_ID.match(text):
        return _run_point(project, store, text)
    rev = rest if kind == "rev" and rest else text
    return _rev_point(project, store, rev, text)


def _serial_point(project, store: StateStore, serial: int, label: str = "", commit: str | None = None) -> Point:
    cur = project.read_state()
    st = cur if cur.serial == serial and cur.exists else store.read_serial(serial)
    return Point(label or f"state serial {serial}", st, store.ws, serial, commit)


def _run_point(project, store: StateStore, run_id: str) -> Point:
    rec = RunStore(project.runs_loc).read(run_id)
    serial = (rec.get("state") or {}).get("serial_after")
    if not isinstance(serial, int):
        raise MlspecError(f"--base {run_id}: run {rec['run_id']} ({rec['status']}) wrote no state serial",
                          hint=f"pass --base as {FORMS}")
    ws = rec.get("workspace") or "default"
    other = store if ws == store.ws else StateStore(project.state_loc, ws)
    commit = (rec.get("git") or {}).get("commit")
    return _serial_point(project, other, serial, f"state serial {serial} (run {rec['run_id']})", commit)


def _git(project_dir: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def serial_commits(project, store: StateStore, lineage: str) -> dict[int, str]:
    """Kept serial -> the git commit its apply started from, read from the run records of this workspace."""
    kept = set(store.history_serials())
    cur = project.read_state()
    if cur.exists:
        kept.add(cur.serial)
    runs = RunStore(project.runs_loc)
    out: dict[int, str] = {}
    for rid in reversed(runs.ids()):
        if len(out) == len(kept):
            break
        rec = runs.get(rid)  # a damaged record is skipped: it is history only
        if rec is None or (rec.get("workspace") or "default") != store.ws:
            continue
        st, commit = rec.get("state") or {}, (rec.get("git") or {}).get("commit")
        serial = st.get("serial_after")
        if isinstance(serial, int) and serial in kept and commit and st.get("lineage") == lineage:
            out.setdefault(serial, commit)
    return out


def _rev_point(project, store: StateStore, rev: str, text: str) -> Point:
    where = project.spec.project_dir
    found = _git(where, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found is None or found.returncode != 0:
        raise MlspecError(f"--base {text}: not {FORMS} (git does not know '{rev}' in {where})",
                          hint="list the serials with `mlspec state history`")
    commit = found.stdout.strip()
    lineage = project.read_state().lineage
    commits = serial_commits(project, store, lineage)
    for serial in sorted(commits, reverse=True):
        c = commits[serial]
        if c == commit or (_git(where, "merge-base", "--is-ancestor", c, commit) or
                           subprocess.CompletedProcess([], 1)).returncode == 0:
            return _serial_point(project, store, serial, f"state serial {serial} (git {c[:10]}, for {rev})", c)
    raise MlspecError(f"--base {text}: no kept state of workspace '{store.ws}' was applied at {commit[:10]} or an "
                      "ancestor of it", hint="list the serials with `mlspec state history`, and pass one as --base N")
