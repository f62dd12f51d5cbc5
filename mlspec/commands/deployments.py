"""`mlspec refresh | rollback | destroy | deployments list`: deployments (running services) outside an apply.

``refresh`` observes each recorded service on its backend (process gone, unhealthy, degraded, serving another
version) and records what it saw in the deployment's state record; the next `mlspec plan` shows the repair.
``rollback DEPLOYMENT [--to VERSION]`` rolls the service back through the same rolling update an apply uses
and records it (the deployment is held there until the model's alias moves). ``destroy [ADDR ...]`` shows
the deletions, asks, and stops the services: no process and no open port remain. Each takes the state lock.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from mlspec.console import Console
from mlspec.errors import EXIT_ERROR, MlspecError, did_you_mean
from mlspec.project import Project
from mlspec.views.formats import emit, markdown_table, text_table


def _deployments(state) -> dict:
    return {a: r for a, r in sorted(state.resources.items()) if isinstance(r, dict) and r.get("kind") == "deployment"}


def _addresses(project: Project, state, names) -> list:
    recorded = _deployments(state)
    out = []
    for n in names or ():
        addr = n if n.startswith("deployment.") else f"deployment.{n}"
        if addr not in recorded:
            known = [a.split(".", 1)[1] for a in recorded]
            raise MlspecError(f"no deployment '{addr.split('.', 1)[1]}' is recorded in workspace "
                              f"'{project.store.ws}'{did_you_mean(addr.split('.', 1)[1], known) or ''}"
                              + (f" (recorded: {', '.join(known)})" if known else ""),
                              hint="`mlspec deployments list` shows them; `mlspec apply` creates the spec's")
        out.append(addr)
    return out or list(recorded)


def _run(project: Project, state) -> SimpleNamespace:
    """What DeploymentKind's backend helpers need of an apply's Run."""
    return SimpleNamespace(project=project, spec=project.spec, state=state, backends={}, run_id="")


def _close(run) -> None:
    for b in run.backends.values():
        b.close()


def observe(run, rec: dict) -> dict:
    """What the backend sees of a recorded service, as the record's ``observed``."""
    from mlspec.kinds.deployment import DeploymentKind

    if not rec.get("service"):
        st = {"state": "gone", "version": None, "port": rec.get("port"), "replicas": [],
              "detail": "no service is recorded (the last apply did not start one)"}
    else:
        st = DeploymentKind._backend_of(run, rec).service_status(rec["service"]).to_dict()
    st["when"] = round(time.time(), 3)
    return st


def observe_all(project: Project, st, addrs, *, changed_only: bool = False) -> list:
    """Observe the deployments ``addrs`` and put each observation in its record in ``st`` (the caller holds the
    lock and writes the state). ``changed_only``: only where it differs from what the record says (the state
    of a healthy service is then left as it is). Returns [(address, observation)] of what was put."""
    run = _run(project, st)
    out = []
    try:
        for addr in addrs:
            rec = dict(st.resources[addr])
            seen = observe(run, rec)
            before = rec.get("observed") or {"state": "running", "version": rec.get("version")}
            if changed_only and (seen.get("state"), seen.get("version")) == (before.get("state"), before.get("version")):
                continue
            rec["observed"] = seen
            st.resources[addr] = rec
            out.append((addr, seen))
    finally:
        _close(run)
    return out


# --- refresh -------------------------------------------------------------------------------------
def run_refresh(args, console: Console) -> int:
    project = Project.open(args.project_dir, args.file, args.overrides)
    project.lock.acquire("refresh")
    try:
        st = project.read_state()
        addrs = _addresses(project, st, args.address)
        rows = [{"address": addr, "recorded_version": st.resources[addr].get("version"), **seen}
                for addr, seen in observe_all(project, st, addrs)]
        if addrs:
            st = project.store.write(st)
    finally:
        project.lock.release()
    data = {"workspace": project.store.ws, "serial": st.serial, "deployments": rows}
    headers = ["deployment", "state", "version", "what was seen"]

    def cells(r):
        return [r["address"], r["state"], "-" if r["version"] is None else r["version"], r["detail"]]

    def text(d):
        if not d["deployments"]:
            return f"No deployment is recorded in workspace {d['workspace']}: nothing to refresh."
        repair = [r for r in d["deployments"] if r["state"] != "running"
                  or r["version"] not in (None, r["recorded_version"])]
        tail = (f"\n\nRecorded in state serial {d['serial']}. "
                + ("`mlspec plan` shows the repair; `mlspec apply` makes it." if repair else "Everything runs as recorded."))
        return text_table(headers, [cells(r) for r in d["deployments"]]) + tail

    emit(console, args.format, data, text=text,
         markdown=lambda d: markdown_table(headers, [cells(r) for r in d["deployments"]]))
    return 0


# --- rollback ------------------------------------------------------------------------------------
def _previous(rec: dict):
    """The version served before the current one (the latest rollout that brought the current one in)."""
    current = rec.get("version")
    for h in reversed(rec.get("history") or ()):
        if h.get("to") == current and h.get("from") not in (None, current):
            return h["from"]
    return None


def run_rollback(args, console: Console) -> int:
    from mlspec.kinds.deployment import DeploymentKind
    from mlspec.kinds.model import version_of
    from mlspec.runs import new_run_id

    project = Project.open(args.project_dir, args.file, args.overrides)
    name = args.deployment.split(".", 1)[1] if args.deployment.startswith("deployment.") else args.deployment
    addr = f"deployment.{name}"
    dep = project.spec.deployments.get(name)
    run_id = new_run_id()
    project.lock.acquire("rollback", run_id)
    try:
        st = project.read_state()
        _addresses(project, st, [addr])
        if dep is None:
            raise MlspecError(f"deployment '{name}' is no longer in the spec: there is nothing to roll back to",
                              hint=f"`mlspec destroy {addr}` stops it")
        rec = dict(st.resources[addr])
        current = rec.get("version")
        target = args.to if args.to is not None else _previous(rec)
        if target is None:
            raise MlspecError(f"deployment '{name}' has served no other version than {current} to roll back to",
                              hint=f"name one: mlspec rollback {name} --to VERSION")
        reg = st.resources.get(f"model.{dep.model_name}") or {}
        v = version_of(reg, target)
        if v is None:
            raise MlspecError(f"model '{dep.model_name}' has no version {target} (versions: "
                              f"{', '.join(str(x['version']) for x in reg.get('versions') or ())})",
                              hint=f"see them with `mlspec models history {dep.model_name}`")
        if v.get("status") == "rejected":
            raise MlspecError(f"version {target} of model '{dep.model_name}' was rejected by its gates and is never "
                              "served", hint="roll back to a version that passed")
        if target == current:
            console.print(f"Deployment {name} serves version {target} already; nothing to do.")
            return 0
        kind = DeploymentKind()
        run = _run(project, st)
        run.run_id = run_id
        try:
            from mlspec.fingerprint import secret_fingerprint
            from mlspec.kinds.deployment import settings_of

            token_fp = (secret_fingerprint(str.__str__(dep.token), st.fingerprint_key) if dep.token is not None
                        else None)
            desired = {"settings": settings_of(dep), "token": token_fp}
            service = kind.service(project, dep, v, desired)
            backend = kind._backend_of(run, rec)
            t0 = time.monotonic()
            if rec.get("service") and (rec.get("observed") or {}).get("state") != "gone":
                new = backend.update_service(rec["service"], service)
            else:
                new = backend.deploy_service(service)
            took = time.monotonic() - t0
        finally:
            _close(run)
        # the version the spec asks for now: the hold lasts while it still does
        spec_version = int(dep.model_ref) if dep.model_ref.isdigit() else (reg.get("aliases") or {}).get(dep.model_ref)
        reason = args.reason or ""
        rec.update(version=target, hash=v.get("hash"), format=v.get("format"), service=new, observed=None,
                   url=f"http://127.0.0.1:{new.get('port')}", settings=desired["settings"], token=token_fp,
                   run_id=run_id, deployed=round(time.time(), 3),
                   hold={"version": target, "while": spec_version, "from": current, "reason": reason})
        rec["history"] = (list(rec.get("history") or ()) + [kind.history_entry("rollback", current, target, run_id,
                                                                                reason)])[-100:]
        st.resources[addr] = rec
        st = project.store.write(st)
    finally:
        project.lock.release()
    console.print(f"Rolled back deployment {name}: version {current} -> {target} at {rec['url']} "
                  f"(rolling update, ready in {took:.1f}s; state serial {st.serial}). It stays on version {target} "
                  f"until {dep.model} moves from version {spec_version}.")
    return 0


# --- destroy -------------------------------------------------------------------------------------
def run_destroy(args, console: Console) -> int:
    import sys

    from mlspec.core.kind import kind
    from mlspec.render import render_text
    from mlspec.runs import new_run_id

    project = Project.open(args.project_dir, args.file, args.overrides)
    run_id = new_run_id()
    project.lock.acquire("destroy", run_id)
    try:
        st = project.read_state()
        addrs = _addresses(project, st, args.address)
        k = kind("deployment")
        changes = [k.removed(a, st.resources[a]) for a in addrs]
        plan = {"project": project.spec.project, "workspace": project.store.ws, "backend": project.spec.backend.type,
                "state": {"serial": st.serial, "exists": st.exists, "lineage": st.lineage}, "targets": [],
                "summary": {"run": 0, "unknown": 0, "restore": 0, "read": 0, "destroy": len(changes),
                            "unchanged": 0}, "has_changes": bool(changes),
                "resource_changes": [dict(c.to_dict(), reasons=[{"code": "removed", "message": "asked by `mlspec destroy`"}])
                                     for c in changes], "notes": []}
        if not changes:
            console.print(f"No deployment is recorded in workspace {project.store.ws}: nothing to destroy.")
            return 0
        console.print(render_text(plan, style=console.style), end="")
        if not args.auto_approve:
            if not (sys.stdin.isatty() and console.interactive):
                raise MlspecError("destroy needs confirmation, and there is no terminal to ask on",
                                  hint="pass --auto-approve")
            console.print("\nDestroy these deployments? Only 'yes' or 'y' is accepted. [y/N] ", end="")
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                console.print("Destroy cancelled; nothing was changed.")
                return EXIT_ERROR
        run = _run(project, st)
        try:
            for a in addrs:
                done = k.destroy(a, st.resources[a], run)
                st.resources.pop(a, None)
                console.print(f"  destroyed {a}: {done.outcome.reason or 'forgotten'}")
        finally:
            _close(run)
        st = project.store.write(st)
    finally:
        project.lock.release()
    console.print(console.style(f"\nDestroy complete: {len(addrs)} deployment(s) stopped.", "green", "bold")
                  + f" State serial {st.serial}.")
    return 0


# --- deployments list ----------------------------------------------------------------------------
def run_deployments(args, console: Console) -> int:
    project = Project.open(args.project_dir, args.file, args.overrides)
    st = project.read_state()
    recorded = _deployments(st)
    run = _run(project, st)
    rows = []
    try:
        for name in sorted({a.split(".", 1)[1] for a in recorded} | set(project.spec.deployments)):
            rec = recorded.get(f"deployment.{name}")
            live = observe(run, rec) if rec else None
            dep = project.spec.deployments.get(name)
            rows.append({"deployment": name, "model": dep.model if dep else rec.get("model"),
                         "version": rec.get("version") if rec else None, "url": rec.get("url") if rec else None,
                         "replicas": len(((rec or {}).get("service") or {}).get("replicas") or ()),
                         "state": live["state"] if live else "not deployed", "detail": live["detail"] if live else "",
                         "held": bool((rec or {}).get("hold")), "in_spec": dep is not None})
    finally:
        _close(run)
    headers = ["deployment", "model", "version", "url", "state", ""]

    def cells(r):
        note = "held by rollback" if r["held"] else ("" if r["in_spec"] else "(no longer in the spec)")
        return [r["deployment"], r["model"], "-" if r["version"] is None else r["version"], r["url"] or "-",
                r["state"], note]

    def text(d):
        if not d["deployments"]:
            return f"No deployments in the spec or the state of workspace {d['workspace']}."
        return text_table(headers, [cells(r) for r in d["deployments"]])

    emit(console, args.format, {"workspace": project.store.ws, "deployments": rows}, text=text,
         markdown=lambda d: markdown_table(headers, [cells(r) for r in d["deployments"]]))
    return 0
