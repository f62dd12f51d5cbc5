"""`mlspec apply`: parse, take the lock, show the plan, confirm, call the core apply, render the result.

The apply itself (recovery, stale-plan checks, re-plan, execution, records, state) is mlspec.core.apply;
its progress is rendered by a view (mlspec.views.apply): lines for a person, or `--format json`.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

from mlspec.commands.plan import check_addresses, emit, load_planfile, preflight, public_plan
from mlspec.console import Console
from mlspec.errors import EXIT_ERROR, EXIT_INTERRUPTED, MlspecError
from mlspec.gcpause import outlive
from mlspec.project import Project
from mlspec.runs import new_run_id
from mlspec.sensitive import is_masked_override, mask_overrides
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
    # a large spec is validated in a child process while its graph is built (mlspec.load.Verdict); the lock is
    # taken only for a valid spec
    project = Project.open(args.project_dir, args.file, overrides, defer_validation=True)
    nodes = project.nodes_then_valid()
    run_id = new_run_id()
    lock_timeout = parse_duration(args.lock_timeout) if args.lock_timeout not in ("0", "0s") else 0.0
    project.lock.acquire("apply", run_id, timeout=lock_timeout)

    def _term(signum, frame):
        raise KeyboardInterrupt()

    old_term = signal.signal(signal.SIGTERM, _term)
    try:
        return _apply_locked(args, console, project, bundle, overrides, run_id, nodes)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        project.lock.release()


def _apply_locked(args, console, project: Project, bundle, overrides, run_id, nodes=None) -> int:
    from mlspec.core.apply import apply, keep_project_files, prepare
    from mlspec.views.apply import ConsoleApplyView, JsonApplyView

    as_json = getattr(args, "format", "text") == "json"
    view = JsonApplyView(console) if as_json else ConsoleApplyView(console)
    targets, replace = args.target, args.replace
    if bundle is not None:
        targets = list(bundle["plan"].get("targets") or [])
        replace = list(bundle["plan"].get("replace") or [])
    nodes = nodes if nodes is not None else project.nodes()
    check_addresses(project, nodes, targets, "--target")
    check_addresses(project, nodes, replace, "--replace")
    prepared = prepare(project, view, run_id, targets=targets, replace=replace, saved=bundle, nodes=nodes)
    outlive(project, nodes, prepared)  # reclaimed with the process, not object by object (mlspec.gcpause)
    plan = prepared.plan
    backends: dict = {}
    try:
        if not args.no_preflight:
            preflight(project, nodes, plan, console, keep=backends)
        if as_json:
            view._line({"type": "plan", "plan": {k: v for k, v in public_plan(plan.to_dict()).items() if k != "facts"}})
        else:
            emit(plan.to_dict(), "text", console, verbose=args.verbose)
        if not plan.has_changes:
            keep_project_files(project)  # nothing to run, but .gitignore follows the declared paths
            if as_json:
                view.plan_only(plan)
            return 0
        if bundle is None and not args.auto_approve:
            if as_json:
                raise MlspecError("apply --format json does not ask for confirmation",
                                  hint="pass --auto-approve, or apply a reviewed plan file")
            if not _confirm(console):
                return EXIT_ERROR
        result = apply(project, prepared, view, run_id, overrides=overrides, parallelism=args.parallelism,
                       fail_fast=args.fail_fast, backends=backends)
    finally:
        for b in backends.values():
            b.close()
    return _report(args, console, project, result, overrides, as_json)


def _confirm(console) -> bool:
    if not (sys.stdin.isatty() and console.interactive):
        raise MlspecError("apply needs confirmation, and there is no terminal to ask on",
                          hint="pass --auto-approve (as in CI), or apply a reviewed plan file: "
                               "mlspec plan -o plan.json && mlspec apply plan.json")
    console.print("\nApply these changes? Only 'yes' or 'y' is accepted. [y/N] ", end="")
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        console.print("Apply cancelled; nothing was changed.")
        return False
    return True


def _report(args, console, project, result, overrides, as_json: bool) -> int:
    """The closing lines (on stderr in JSON mode, so stdout stays one JSON object per line)."""
    say = console.error if as_json else console.print
    masked = mask_overrides(overrides, project.spec.sensitive)
    resume = _resume_command(args, masked)
    if any(is_masked_override(o) for o in masked):
        resume += "\n  (give each (sensitive) value again; it is never printed)"
    summary = result.summary()
    if result.status == "interrupted":
        console.error(f"\nInterrupted: {summary}; finished steps are saved (state serial {result.serial}).\n"
                      f"Resume with: {resume}")
        return EXIT_INTERRUPTED
    if result.status == "failed":
        not_run = result.counts.get("skipped", 0) + result.counts.get("not-run", 0)
        console.error(f"\nApply failed: {summary} in {result.elapsed:.1f}s (run {result.run_id}).\n"
                      f"Finished steps are saved; {not_run} step(s) did not run. "
                      f"After fixing the failure, resume with: {resume}")
        return EXIT_ERROR
    say(console.style(f"\nApply complete: {summary} in {result.elapsed:.1f}s.", "green", "bold") +
        f" Run {result.run_id}, state serial {result.serial}.")
    return 0
