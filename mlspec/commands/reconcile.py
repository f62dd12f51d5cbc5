"""`mlspec reconcile`: refresh what is deployed, evaluate the triggers, and apply what fired.

One pass, under the state lock, safe to run from a CI cron every few minutes:

1. refresh: observe each deployment and record what was seen (a dead service is then repaired below);
2. evaluate every trigger at the clock (mlspec.triggers); a fired schedule or monitor trigger forces its
   targets to run again, a fired dataset trigger lets change detection do it;
3. plan the fired targets, everything downstream of them (retrain, gate, register, promote, roll out) and
   every deployment (repairs), and apply that plan;
4. record each fired trigger's firing in the state (its cooldown counts from there).

A pass that finds nothing to do prints one line, writes nothing and exits 0. Exit codes: 0 done (or nothing
to do), 1 an error or a failed apply, 4 the state lock is held by another run (nothing done; `--lock-timeout`
waits for it instead), 130 interrupted. `--dry-run` prints the decisions and the plan, and applies nothing.
"""

from __future__ import annotations

import argparse

from mlspec.console import Console
from mlspec.errors import LockedError
from mlspec.project import Project

EXIT_LOCKED = 4


def descendants(nodes, seeds: set) -> set:
    """``seeds`` and every node downstream of them (what their change has consequences for)."""
    down: dict = {}
    for n in nodes:
        for u in n.upstream:
            down.setdefault(u, []).append(n.address)
    out, todo = set(), list(seeds)
    while todo:
        a = todo.pop()
        if a in out:
            continue
        out.add(a)
        todo.extend(down.get(a, ()))
    return out


def selection(nodes, decisions) -> tuple[list, list]:
    """(targets, replace) of the reconcile plan: the fired targets with their consequences, and every
    deployment; the targets of fired schedule and monitor triggers are forced to run."""
    from mlspec.plan import matches

    fired = [d for d in decisions if d.fired]
    seeds, forced = set(), set()
    for d in fired:
        pats = d.targets or tuple(n.address for n in nodes if n.kind == "step")
        hit = {n.address for n in nodes if any(matches(n.address, p) for p in pats)}
        seeds |= hit
        if d.on in ("schedule", "monitor"):
            forced |= {a for a in hit if a.startswith("step.")}
    from mlspec.core.kind import kind

    wanted = descendants(nodes, seeds) | {n.address for n in nodes if n.kind == "deployment"}
    managed = {n.address for n in nodes if kind(n.kind).managed}
    return sorted(wanted & managed), sorted(forced)


def run(args, console: Console) -> int:
    from mlspec.triggers import parse_now
    from mlspec.units import parse_duration

    project = Project.open(args.project_dir, args.file, args.overrides)
    now = parse_now(args.now)
    timeout = parse_duration(args.lock_timeout) if args.lock_timeout not in ("0", "0s") else 0.0
    from mlspec.runs import new_run_id

    run_id = new_run_id()
    try:
        project.lock.acquire("reconcile", run_id, timeout=timeout)
    except LockedError as exc:
        console.error(f"Reconcile skipped: {exc.message}")
        console.error("  Nothing was done. The next scheduled run tries again; or wait for it: --lock-timeout 5m")
        return EXIT_LOCKED
    try:
        return _reconcile(args, console, project, now, run_id)
    finally:
        project.lock.release()


def _reconcile(args, console: Console, project: Project, now: float, run_id: str) -> int:
    from mlspec.commands.triggers import decisions as evaluate
    from mlspec.triggers import record_fired, when

    refreshed = _refresh(project, console)
    state = project.read_state()
    ds = evaluate(project, now, state=state)
    for d in ds:
        mark = "fires" if d.fired else ("error" if d.error else "cooldown" if d.cooling_until else "quiet")
        console.print(f"trigger.{d.name}: {mark}: {d.why}")
    nodes = project.nodes()
    targets, replace = selection(nodes, ds)
    fired = [d for d in ds if d.fired]
    if not targets:
        console.print(f"Reconcile at {when(now)}: no trigger fired and nothing is deployed; nothing to do.")
        return 0
    plan, _state, _facts, _nodes = project.plan(state, targets=targets, replace=replace, nodes=nodes)
    if not plan.has_changes and not fired:
        console.print(f"Reconcile at {when(now)}: no trigger fired"
                      + (f", {refreshed} deployment(s) healthy" if refreshed else "") + "; nothing to do.")
        return 0
    if args.dry_run:
        from mlspec.commands.plan import emit

        emit(plan.to_dict(), "text", console, verbose=False)
        console.print(f"\nDry run: {len(fired)} trigger(s) fired; the plan above was not applied.")
        return 0
    from mlspec.commands.apply import _apply_locked

    apply_args = argparse.Namespace(target=targets, replace=replace, no_preflight=args.no_preflight,
                                    verbose=False, auto_approve=True, parallelism=args.parallelism,
                                    fail_fast=False, format="text", file=args.file, project_dir=args.project_dir,
                                    lock_timeout="0s", overrides=list(args.overrides))
    rc = _apply_locked(apply_args, console, project, None, list(args.overrides), run_id)
    if rc != 0 or not fired:
        return rc
    st = project.read_state()
    record_fired(st, fired, now, run_id)
    st = project.store.write(st)
    console.print(f"Recorded {len(fired)} trigger firing(s) (state serial {st.serial}).")
    return 0


def _refresh(project: Project, console: Console) -> int:
    """Observe every recorded deployment, as `mlspec refresh` does, under the lock reconcile holds. The state is
    written only when an observation differs from what is recorded (a service gone, unhealthy, degraded or
    serving another version), so a healthy pass writes nothing. Returns the number observed."""
    from mlspec.commands.deployments import observe_all

    st = project.read_state()
    addrs = sorted(a for a, r in st.resources.items() if isinstance(r, dict) and r.get("kind") == "deployment")
    if not addrs:
        return 0
    changed = observe_all(project, st, addrs, changed_only=True)
    for addr, seen in changed:
        console.print(f"{addr}: {seen.get('state')}: {seen.get('detail') or ''}".rstrip(": "))
    if changed:
        project.store.write(st)
    return len(addrs)
