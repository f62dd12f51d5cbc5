"""The core apply: ``prepare`` (recover, re-plan, refuse a stale saved plan) then ``apply`` (execute the plan
on the backends, journal every resource, record the run, write the state) -> :class:`ApplyResult`.

Like Terraform's ``Context.Apply``: the command takes the lock, shows the plan, asks for confirmation and
renders; everything between is here and prints nothing. What happens is reported to hooks
(:class:`ApplyHooks`), typed events that a console view and ``apply --format json`` render.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from mlspec.core.kind import Outcome
from mlspec.core.types import EventKind, Status
from mlspec.errors import MlspecError
from mlspec.executor import Executor, Interrupted, Run
from mlspec.plan import Plan
from mlspec.runs import RunStore, git_info, who
from mlspec.sensitive import mask_overrides
from mlspec.state import State

STALE_HINT = "make a new plan: mlspec plan -o FILE (then apply that file)"


class ApplyHooks:
    """What the core reports while it applies. The defaults ignore everything; views override."""

    def begin(self, plan: Plan, run_id: str, total: int) -> None:
        pass

    def event(self, kind: EventKind, outcome: Outcome) -> None:
        pass

    def end(self, result: "ApplyResult") -> None:
        pass

    def note(self, message: str) -> None:
        """Something the user should know that is not about one resource (a recovered journal)."""


@dataclass
class Prepared:
    plan: Plan
    state: State
    facts: object
    nodes: list


@dataclass
class ApplyResult:
    run_id: str
    status: str  # succeeded | failed | interrupted
    outcomes: dict = field(default_factory=dict)  # address -> Outcome
    counts: dict = field(default_factory=dict)  # status value -> n
    serial: int = 0
    elapsed: float = 0.0

    @property
    def failed(self) -> int:
        return self.counts.get(Status.FAILED.value, 0)

    def summary(self) -> str:
        c = self.counts
        checked = f", {c['checked-out']} checked out" if c.get("checked-out") else ""
        return (f"{c.get('ran', 0)} ran, {c.get('restored', 0)} restored from cache{checked}, {c.get('failed', 0)} "
                f"failed, {c.get('skipped', 0)} skipped, {c.get('up-to-date', 0)} up to date")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "status": self.status, "counts": dict(sorted(self.counts.items())),
                "serial": self.serial, "elapsed": round(self.elapsed, 3)}


def prepare(project, hooks: ApplyHooks, run_id: str, *, targets: Sequence[str] = (), replace: Sequence[str] = (),
            saved: dict | None = None, nodes: list | None = None) -> Prepared:
    """Recover what a crashed apply finished, close its run record, and plan under the lock (a saved plan is
    re-planned and refused if anything it assumed moved)."""
    store = project.store
    state = project.read_state()
    if store.journal_entries(state.lineage):
        state = store.write(state)
        hooks.note(f"Recovered the steps an interrupted apply had finished (state serial {state.serial}).")
    close_crashed_runs(project, RunStore(project.runs_loc), run_id)
    project.artifacts.clean_temp()
    from mlspec.policies import enforce

    # policies again at apply, against the spec and the state as they are under the lock: before a saved plan
    # is found stale, so that what the state or spec now breaks is named
    enforce(project.spec, state)
    if saved is not None:
        plan_data = saved["plan"]
        new_state = saved.get("new_state")
        stale = stale_reason(plan_data, state, project)
        if stale:
            raise MlspecError(f"the saved plan is stale: {stale}", hint=STALE_HINT)
        if new_state and not state.exists:
            state = State.new(state.workspace, project.spec.project, new_state["lineage"], new_state["fingerprint_key"])
    plan, state, facts, nodes = project.plan(state, targets, replace, nodes)
    if saved is not None:
        moved = facts_moved(saved["plan"].get("facts") or {}, plan.facts)
        if moved:
            raise MlspecError(f"the saved plan is stale: {moved}", hint=STALE_HINT)
    return Prepared(plan, state, facts, nodes)


def apply(project, prepared: Prepared, hooks: ApplyHooks, run_id: str, *, overrides: Sequence[str] = (),
          parallelism: int | None = None, fail_fast: bool = False, backends: dict | None = None) -> ApplyResult:
    """Carry out the plan. Returns when every resource is settled (or raises nothing on Ctrl-C: the result
    says 'interrupted', and what finished is saved)."""
    from mlspec.plan import select

    plan, state, facts, nodes = prepared.plan, prepared.state, prepared.facts, prepared.nodes
    spec = project.spec
    runs = RunStore(project.runs_loc)
    selected = select(nodes, plan.targets)
    started = time.time()
    record = {"run_id": run_id, "status": "running", "started": round(started, 3), "finished": None,
              **who(), "git": git_info(spec.project_dir), "project": spec.project,
              "workspace": spec.storage.workspace, "spec_digest": spec.digest,
              "config": spec.config, "overrides": mask_overrides(overrides, spec.sensitive),
              "backend": plan.backend, "state": {"lineage": state.lineage, "serial_before": state.serial},
              "plan": {k: v for k, v in plan.to_dict().items() if k != "facts"}, "steps": {}}
    broken = project.lock.broken_stale
    if broken is not None:
        record["broke_stale_lock"] = broken.to_dict()
    runs.write(record)
    hooks.begin(plan, run_id, len(selected))
    run = Run(project, state, facts, run_id, hooks.event, parallelism=parallelism, backends=backends)
    ex = Executor(run, nodes, selected, {c.address: c for c in plan.changes}, fail_fast=fail_fast)
    interrupted = False
    try:
        outcomes = ex.execute()
    except Interrupted:
        interrupted = True
        outcomes = ex.outcomes
    if ex.journaled or not state.exists:
        state = project.store.write(state)
    keep_project_files(project)
    counts: dict = {}
    for oc in outcomes.values():
        counts[oc.status.value] = counts.get(oc.status.value, 0) + 1
    status = "interrupted" if interrupted else ("failed" if counts.get("failed") else "succeeded")
    record.update(status=status, finished=round(time.time(), 3),
                  steps={a: oc.to_dict() for a, oc in sorted(outcomes.items())}, counts=counts)
    record["state"]["serial_after"] = state.serial
    runs.write(record)
    result = ApplyResult(run_id, status, dict(outcomes), counts, state.serial, time.time() - started)
    hooks.end(result)
    return result


def keep_project_files(project) -> None:
    """After an apply: the hash cache learns the outputs put in the project, and .gitignore lists their paths."""
    from mlspec.materialise import declared_paths, sync_gitignore

    project.cache.save()
    sync_gitignore(project.spec.project_dir, [p for _s, _o, p in declared_paths(project.spec)])


def close_crashed_runs(project, runs: RunStore, run_id: str = "") -> None:
    """Mark 'running' records of applies that died as 'crashed'. Workspaces share runs/ but not locks, so a
    record is judged by its own workspace's lock: its apply is alive while that lock names its run and the
    holder is not a dead process on this host. A damaged record is skipped (it is history only)."""
    from mlspec.lock import StateLock

    for rid in runs.ids()[-20:]:
        rec = runs.get(rid)
        if rec is None or rec.get("status") != "running":
            continue
        holder = StateLock(project.state_loc, rec.get("workspace") or "default").info()
        if holder is not None and holder.run_id == rid and holder.stale() is not True:
            continue  # still running (or on another host, where we cannot tell)
        rec = runs.get(rid)  # read again after the lock: an apply writes its last record before it unlocks
        if rec is None or rec.get("status") != "running":
            continue
        rec["status"] = "crashed"
        broken = project.lock.broken_stale
        if broken is not None and broken.run_id == rid:
            rec["lock_broken_by"] = run_id  # its stale lock was broken by this apply
        runs.write(rec)


def stale_reason(plan: dict, state: State, project) -> str:
    ps = plan["state"]
    if not ps["exists"]:
        if state.exists:
            return ("it was made when there was no state, and the state now exists (serial "
                    f"{state.serial}): it was applied already, or another apply ran since")
    else:
        if state.lineage != ps["lineage"]:
            return f"the state's lineage is {state.lineage}, the plan's {ps['lineage']} (another state)"
        if state.serial != ps["serial"]:
            return f"the state moved from serial {ps['serial']} to {state.serial} since the plan was made"
    if plan["spec_digest"] != project.spec.digest:
        return "the spec changed since the plan was made"
    return ""


def facts_moved(old: dict, new: dict) -> str:
    for addr, f in sorted((old.get("datasets") or {}).items()):
        nf = (new.get("datasets") or {}).get(addr)
        if not nf or nf.get("hash") != f.get("hash"):
            return f"{addr} has new content since the plan was made"
    for step, files in sorted((old.get("code") or {}).items()):
        nfiles = (new.get("code") or {}).get(step) or {}
        for f, h in sorted(files.items()):
            if nfiles.get(f) != h:
                return f"code {f} changed since the plan was made"
    for step, deps in sorted((old.get("deps") or {}).items()):
        if (new.get("deps") or {}).get(step) != deps:
            return f"a deps file of step '{step}' changed since the plan was made"
    return ""
