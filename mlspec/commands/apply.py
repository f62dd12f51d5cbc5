"""`mlspec apply`: lock, plan (or load a saved plan and refuse it when stale), confirm, execute, record."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time

from mlspec.commands.plan import check_addresses, emit, load_planfile, preflight
from mlspec.console import Console
from mlspec.errors import EXIT_ERROR, EXIT_INTERRUPTED, MlspecError
from mlspec.executor import Executor, Interrupted, StepOutcome
from mlspec.plan import Action, select_targets
from mlspec.project import Project
from mlspec.runs import RunStore, git_info, new_run_id, who
from mlspec.sensitive import is_masked_override, mask_overrides
from mlspec.state import State
from mlspec.units import parse_duration


def _resupply_secrets(saved: list, given: list) -> list:
    """A saved plan's overrides, with the sensitive ones (stored masked) given again on the command line."""
    from mlspec.sensitive import is_masked_override

    def key(o: str) -> str:
        return o.split("=", 1)[0].lstrip("+~")

    masked = {key(o): o for o in saved if is_masked_override(o)}
    extra = [o for o in given if key(o) not in masked]
    if extra:
        raise MlspecError("a saved plan is applied as it is: no overrides with a plan file",
                          hint=f"make a new plan: mlspec plan {' '.join(extra)} -o FILE")
    supplied = {key(o): o for o in given}
    missing = [k for k in masked if k not in supplied]
    if missing:
        raise MlspecError(f"the plan was made with {', '.join(missing)} given on the command line; a sensitive "
                          "value is never saved in a plan file, so give it again",
                          hint="mlspec apply PLANFILE " + " ".join(f"{k}=..." for k in missing) +
                               " (or set it from the environment in the spec: ${oc.env:VAR})")
    return [supplied[key(o)] if key(o) in masked else o for o in saved]


def _is_planfile(arg: str) -> bool:
    return "=" not in arg and not arg.startswith(("+", "~")) and (arg.endswith((".json", ".plan")) or os.path.isfile(arg))


def _resume_command(args, overrides) -> str:
    parts = ["mlspec"]
    where = getattr(args, "resume_dir", None) or args.project_dir
    if where not in (".", ""):
        parts += ["-C", where]
    if args.file:
        parts += ["-f", args.file]
    parts += ["apply", "--auto-approve"]
    for t in getattr(args, "target", None) or []:
        parts += ["--target", t]
    for r in getattr(args, "replace", None) or []:
        parts += ["--replace", r]
    parts += list(overrides)
    return " ".join(shlex.quote(p) for p in parts)


class _Reporter:
    """Prints step events as plain lines (and a live status line on a terminal)."""

    def __init__(self, console: Console, total: int):
        self.console, self.total, self.done = console, total, 0
        self.t0 = time.monotonic()
        self.running: set = set()

    def __call__(self, event: str, oc: StepOutcome) -> None:
        c = self.console
        st = c.style
        if event == "start":
            self.running.add(oc.address)
            extra = f" (attempt {oc.attempts})" if oc.attempts > 1 else ""
            line = f"  {st('start', 'cyan')}     {oc.address}{extra}"
        elif event == "done":
            self.running.discard(oc.address)
            self.done += 1
            line = f"  {st('done', 'green')}      {oc.address}  ran in {oc.duration:.2f}s"
        elif event == "restored":
            self.done += 1
            line = f"  {st('restored', 'green')}  {oc.address}  from the run-cache"
        elif event == "uptodate":
            self.done += 1
            return  # unchanged steps are counted in the summary, not listed
        elif event == "retry":
            self.running.discard(oc.address)
            line = f"  {st('retry', 'yellow')}     {oc.address}  attempt {oc.attempts} failed: {oc.error}"
        elif event == "fail":
            self.running.discard(oc.address)
            self.done += 1
            line = f"  {st('failed', 'red', 'bold')}    {oc.address}  after {oc.duration:.2f}s: {oc.error}"
            if oc.reason and oc.reason.strip() not in oc.error:
                line += "\n" + "\n".join(f"              | {ln}" for ln in oc.reason.splitlines())
        elif event == "skip":
            self.done += 1
            line = f"  {st('skipped', 'yellow')}   {oc.address}  ({oc.reason})"
        elif event == "warning":
            line = f"  {st('warning', 'yellow')}   {oc.address}  {oc.reason}"
        elif event == "cancelled":
            self.running.discard(oc.address)
            line = f"  {st('cancelled', 'yellow')} {oc.address}"
        else:
            line = f"  {event} {oc.address}"
        if c.interactive:
            c.out.write("\r\033[K")
        c.print(line)
        if c.interactive and self.running:
            c.out.write(f"  [{self.done}/{self.total}] running: {', '.join(sorted(self.running))[:100]}")
            c.out.flush()


def run(args, console: Console) -> int:
    overrides = list(args.overrides)
    bundle = None
    if overrides and _is_planfile(overrides[0]):
        bundle = load_planfile(overrides[0])
        ws = [o.split("=", 1)[1] for o in overrides[1:] if o.startswith("++storage.workspace=")]
        if ws and ws[-1] != bundle["plan"]["workspace"]:
            raise MlspecError(f"the plan was made for workspace '{bundle['plan']['workspace']}', not '{ws[-1]}'")
        overrides = [overrides[0]] + [o for o in overrides[1:] if not o.startswith("++storage.workspace=")]
        overrides = _resupply_secrets(list(bundle["overrides"]), overrides[1:])
        if bundle.get("spec_file"):
            args.file = bundle["spec_file"]
    project = Project.open(args.project_dir, args.file, overrides)
    run_id = new_run_id()
    lock_timeout = parse_duration(args.lock_timeout) if args.lock_timeout not in ("0", "0s") else 0.0
    project.lock.acquire("apply", run_id, timeout=lock_timeout)

    def _term(signum, frame):
        raise KeyboardInterrupt()

    old_term = signal.signal(signal.SIGTERM, _term)
    try:
        return _apply_locked(args, console, project, bundle, overrides, run_id)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        project.lock.release()


def _apply_locked(args, console, project: Project, bundle, overrides, run_id) -> int:
    store = project.store
    state = project.read_state()
    if store.journal_entries(state.lineage):
        state = store.write(state)  # recover what a crashed apply finished
        console.error(f"Recovered the steps an interrupted apply had finished (state serial {state.serial}).")
    _close_crashed_runs(project, RunStore(project.runs_loc), run_id)
    project.artifacts.clean_temp()
    targets = args.target
    replace = args.replace
    if bundle is not None:
        plan_data = bundle["plan"]
        targets, replace = list(plan_data.get("targets") or []), list(plan_data.get("replace") or [])
        new_state = bundle.get("new_state")
        stale = _stale_reason(plan_data, state, new_state, project)
        if stale:
            raise MlspecError(f"the saved plan is stale: {stale}",
                              hint="make a new plan: mlspec plan -o FILE (then apply that file)")
        if new_state and not state.exists:
            state = State.new(state.workspace, project.spec.project, new_state["lineage"],
                              new_state["fingerprint_key"])
    instances = project.instances()
    check_addresses(project, instances, targets, "--target")
    check_addresses(project, instances, replace, "--replace")
    plan, state, facts, instances = project.plan(state, targets, replace, instances)
    if bundle is not None:
        moved = _facts_moved(bundle["plan"].get("facts") or {}, plan.facts)
        if moved:
            raise MlspecError(f"the saved plan is stale: {moved}",
                              hint="make a new plan: mlspec plan -o FILE (then apply that file)")
    backends: dict = {}
    try:
        if not args.no_preflight:
            preflight(project, instances, plan, console, keep=backends)
        emit(plan.to_dict(), "text", console, verbose=args.verbose)
        if not plan.has_changes:
            return 0
        return _confirm_and_execute(args, console, project, bundle, plan, state, facts, instances, targets, replace,
                                    overrides, run_id, backends)
    finally:
        for b in backends.values():
            b.close()


def _confirm_and_execute(args, console, project, bundle, plan, state, facts, instances, targets, replace, overrides,
                         run_id, backends) -> int:
    if bundle is None and not args.auto_approve:
        if not (sys.stdin.isatty() and console.interactive):
            raise MlspecError("apply needs confirmation, and there is no terminal to ask on",
                              hint="pass --auto-approve (as in CI), or apply a reviewed plan file: "
                                   "mlspec plan -o plan.json && mlspec apply plan.json")
        console.print("\nApply these changes? Only 'yes' or 'y' is accepted. [y/N] ", end="")
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            console.print("Apply cancelled; nothing was changed.")
            return EXIT_ERROR
    return _execute(args, console, project, plan, state, facts, instances, targets, replace, overrides, run_id,
                    backends)


def _close_crashed_runs(project: Project, runs: RunStore, run_id: str = "") -> None:
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


def _stale_reason(plan: dict, state: State, new_state, project: Project) -> str:
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


def _facts_moved(old: dict, new: dict) -> str:
    for addr, f in sorted((old.get("datasets") or {}).items()):
        nf = (new.get("datasets") or {}).get(addr)
        if not nf or nf.get("hash") != f.get("hash"):
            return f"{addr} has new content since the plan was made"
    for step, files in sorted((old.get("code") or {}).items()):
        nfiles = (new.get("code") or {}).get(step) or {}
        for f, h in sorted(files.items()):
            if nfiles.get(f) != h:
                return f"code {f} changed since the plan was made"
    return ""


def _execute(args, console, project, plan, state, facts, instances, targets, replace, overrides, run_id,
             backends=None) -> int:
    store = project.store
    runs = RunStore(project.runs_loc)
    selected = select_targets(instances, targets) if targets else {i.address for i in instances}
    forced = {c.address for c in plan.changes if c.action is Action.REPLACE or
              (c.reasons and c.reasons[0].code == "forced")}
    started = time.time()
    record = {"run_id": run_id, "status": "running", "started": round(started, 3), "finished": None,
              **who(), "git": git_info(project.spec.project_dir), "project": project.spec.project,
              "workspace": project.spec.storage.workspace, "spec_digest": project.spec.digest,
              "config": project.spec.config, "overrides": mask_overrides(overrides, project.spec.sensitive),
              "backend": plan.backend,
              "state": {"lineage": state.lineage, "serial_before": state.serial},
              "plan": {k: v for k, v in plan.to_dict().items() if k != "facts"}, "steps": {}}
    runs.write(record)
    console.print(f"\nApplying (run {run_id})...")
    ex = Executor(project, state, facts, instances, selected, forced, run_id, _Reporter(console, len(selected)),
                  parallelism=args.parallelism, fail_fast=args.fail_fast, backends=backends)
    # datasets as read now, and resources removed from the spec
    for ch in plan.changes:
        if ch.kind == "dataset" and ch.action is Action.READ:
            f = facts.datasets[ch.address]
            ex.journal(ch.address, {"kind": "dataset", "hash": f["hash"], "size": f["size"], "uri": f["uri"],
                                    "run_id": run_id})
        elif ch.action is Action.DELETE:
            ex.journal(ch.address, None)
            console.print(f"  {console.style('destroyed', 'red')} {ch.address}  (its artifacts stay in the store)")
    interrupted = False
    try:
        outcomes = ex.run()
    except Interrupted:
        interrupted = True
        outcomes = ex.outcomes
    if ex.journaled or not state.exists:
        state = store.write(state)
    counts: dict = {}
    for oc in outcomes.values():
        counts[oc.status] = counts.get(oc.status, 0) + 1
    failed = counts.get("failed", 0)
    status = "interrupted" if interrupted else ("failed" if failed else "succeeded")
    record.update(status=status, finished=round(time.time(), 3),
                  steps={a: oc.to_dict() for a, oc in sorted(outcomes.items())},
                  counts=counts)
    record["state"]["serial_after"] = state.serial
    runs.write(record)
    elapsed = time.time() - started
    summary = (f"{counts.get('ran', 0)} ran, {counts.get('restored', 0)} restored from cache, "
               f"{failed} failed, {counts.get('skipped', 0)} skipped, {counts.get('up-to-date', 0)} up to date")
    resume = _resume_command(args, mask_overrides(overrides, project.spec.sensitive))
    if any(is_masked_override(o) for o in mask_overrides(overrides, project.spec.sensitive)):
        resume += "\n  (give each (sensitive) value again; it is never printed)"
    if interrupted:
        console.error(f"\nInterrupted: {summary}; finished steps are saved (state serial {state.serial}).\n"
                      f"Resume with: {resume}")
        return EXIT_INTERRUPTED
    if failed:
        not_run = counts.get("skipped", 0) + counts.get("not-run", 0)
        console.error(f"\nApply failed: {summary} in {elapsed:.1f}s (run {run_id}).\n"
                      f"Finished steps are saved; {not_run} step(s) did not run. "
                      f"After fixing the failure, resume with: {resume}")
        return EXIT_ERROR
    console.print(console.style(f"\nApply complete: {summary} in {elapsed:.1f}s.", "green", "bold") +
                  f" Run {run_id}, state serial {state.serial}.")
    return 0
