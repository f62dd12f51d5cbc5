"""`mlspec models list|show|history|promote|rollback`: the model registry of the workspace's state.

The registry is each model's state record (mlspec.kinds.model). Reading commands show it; ``promote`` and
``rollback`` move an alias by hand under the state lock, recorded in the model's history with who, when
and why, like `mlspec state rm` edits the state.
"""

from __future__ import annotations

import time

from mlspec.console import Console
from mlspec.errors import MlspecError, did_you_mean
from mlspec.project import Project
from mlspec.views.formats import emit, markdown_table, text_table


def run(args, console: Console) -> int:
    project = Project.open(args.project_dir, args.file, args.overrides)
    return globals()[f"_{args.models_command}"](args, console, project)


def _registries(state) -> dict:
    return {a.split(".", 1)[1]: r for a, r in sorted(state.resources.items())
            if isinstance(r, dict) and r.get("kind") == "model"}


def _registry(project: Project, state, name: str) -> dict:
    regs = _registries(state)
    if name not in regs:
        known = sorted(set(regs) | set(project.spec.models))
        if name in project.spec.models:
            raise MlspecError(f"model '{name}' has no version yet in workspace '{project.store.ws}'",
                              hint="apply the spec to register one: mlspec apply")
        raise MlspecError(f"no model '{name}'{did_you_mean(name, known) or ''}",
                          hint="list them with `mlspec models list`")
    return regs[name]


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if isinstance(t, (int, float)) else "-"


def _n(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))


def _aliases_of(reg: dict, number: int) -> list:
    return sorted(a for a, v in (reg.get("aliases") or {}).items() if v == number)


# --- list ----------------------------------------------------------------------------------------
def _list(args, console, project: Project) -> int:
    st = project.read_state()
    regs = _registries(st)
    rows = []
    for name in sorted(set(regs) | set(project.spec.models)):
        reg = regs.get(name) or {}
        versions = reg.get("versions") or []
        latest = versions[-1] if versions else None
        rows.append({"model": name, "versions": len(versions),
                     "aliases": dict(sorted((reg.get("aliases") or {}).items())),
                     "latest": None if latest is None else {"version": latest["version"], "status": latest["status"]},
                     "in_spec": name in project.spec.models})
    data = {"workspace": project.store.ws, "models": rows}

    def cells(r):
        return [r["model"], r["versions"], ", ".join(f"{a}={v}" for a, v in r["aliases"].items()) or "-",
                f"{r['latest']['version']} ({r['latest']['status']})" if r["latest"] else "none yet",
                "" if r["in_spec"] else "(no longer in the spec)"]

    headers = ["model", "versions", "aliases", "latest", ""]

    def text(d):
        if not d["models"]:
            return f"No models in the spec or the state of workspace {d['workspace']}."
        return text_table(headers, [cells(r) for r in d["models"]])

    emit(console, args.format, data, text=text,
         markdown=lambda d: markdown_table(headers, [cells(r) for r in d["models"]]) if d["models"] else text(d))
    return 0


# --- show ----------------------------------------------------------------------------------------
def _resolve(reg: dict, name: str, ref: str) -> dict:
    from mlspec.kinds.model import version_of

    versions = reg.get("versions") or []
    if not ref:
        return versions[-1]
    if ref.isdigit():
        v = version_of(reg, int(ref))
        if v is None:
            raise MlspecError(f"model '{name}' has no version {ref} (versions: "
                              f"{', '.join(str(x['version']) for x in versions)})",
                              hint=f"list them with `mlspec models history {name}` or `mlspec models show {name}`")
        return v
    aliases = reg.get("aliases") or {}
    if ref not in aliases:
        raise MlspecError(f"model '{name}' has no alias '{ref}'{did_you_mean(ref, aliases) or ''}"
                          + (f" (aliases: {', '.join(sorted(aliases))})" if aliases else " (no alias is held yet)"),
                          hint=f"use {name}@VERSION, or promote one: mlspec models promote {name} VERSION --alias {ref}")
    return version_of(reg, aliases[ref])


def _card(name: str, reg: dict, v: dict) -> dict:
    from mlspec.kinds.model import version_of

    against = {}
    for alias, number in sorted((reg.get("aliases") or {}).items()):
        if number == v["version"]:
            continue
        holder = version_of(reg, number) or {}
        against[alias] = {"version": number, "metrics": holder.get("metrics") or {}}
    return {"model": name, **v, "aliases": _aliases_of(reg, v["version"]), "against": against}


def _show(args, console, project: Project) -> int:
    name, _, ref = args.name.partition("@")
    reg = _registry(project, project.read_state(), name)
    card = _card(name, reg, _resolve(reg, name, ref))
    emit(console, args.format, card, text=_card_text, markdown=_card_markdown)
    return 0


def _metric_rows(card: dict) -> tuple[list, list]:
    aliases = list(card["against"])
    headers = ["metric", f"version {card['version']}"] + [f"{a} (v{card['against'][a]['version']})" for a in aliases]
    names = sorted(set(card.get("metrics") or {}) | {m for a in aliases for m in card["against"][a]["metrics"]})
    rows = [[m, _n((card.get("metrics") or {}).get(m))] + [_n(card["against"][a]["metrics"].get(m)) for a in aliases]
            for m in names]
    return headers, rows


def _gate_rows(card: dict) -> list:
    return [[g["metric"], _n(g["value"]), g["gate"], _n(g["threshold"]),
             f"{g['alias']}: {_n(g['baseline'])}" if g.get("alias") and g["baseline"] is not None else "-",
             g["outcome"]] for g in card.get("gates") or []]


_GATE_HEADERS = ["metric", "value", "gate", "threshold", "baseline", "outcome"]


def _signature_lines(sig) -> list:
    if not sig:
        return ["(none recorded: no single tabular training input was found upstream of the model's step)"]
    if sig.get("error"):
        return [f"(could not be read: {sig['error']})"]
    out = [f"from {sig['from']} (the training data of {sig['step']})"]
    out += [f"  input  {c['name']}: {c['dtype']}" for c in sig["inputs"]]
    out.append(f"  output {sig['output']['name']}: {sig['output']['dtype']}" if sig.get("output")
               else "  output: not known (no `target` param names the target column; every column is listed)")
    return out


def _card_text(card: dict) -> str:
    lin = card.get("lineage") or {}
    lines = [f"Model {card['model']}, version {card['version']}: {card['status']}"
             + (f", holds {', '.join(card['aliases'])}" if card["aliases"] else ""),
             f"  content    {card['hash']} ({card.get('format')}, {card.get('size')} bytes) from {card['source']}",
             f"  registered {_when(card.get('registered'))} by run {card.get('run_id')}", "",
             "Lineage:",
             f"  step       {lin.get('step')} (run {lin.get('run_id')}, fingerprint {lin.get('fingerprint')})"]
    for k, v in sorted((lin.get("params") or {}).items()):
        lines.append(f"  param      {k} = {v}")
    for k, v in sorted((lin.get("data") or {}).items()):
        lines.append(f"  data       {k} {v}")
    for k, v in sorted((lin.get("inputs") or {}).items()):
        lines.append(f"  input      {k} {v}")
    lines.append(f"  code       {len(lin.get('code') or {})} function(s) and module(s) fingerprinted")
    lines.append("  packages   " + ", ".join(f"{k} {v}" for k, v in sorted((lin.get("packages") or {}).items())))
    headers, rows = _metric_rows(card)
    lines += ["", f"Metrics (from {card.get('metrics_from')}):"] + \
        ["  " + ln for ln in text_table(headers, rows).splitlines()]
    if card.get("gates"):
        lines += ["", "Gates:"] + ["  " + ln for ln in text_table(_GATE_HEADERS, _gate_rows(card)).splitlines()]
    lines += ["", "Signature:"] + ["  " + ln for ln in _signature_lines(card.get("signature"))]
    return "\n".join(lines)


def _card_markdown(card: dict) -> str:
    headers, rows = _metric_rows(card)
    out = [f"### Model `{card['model']}` version {card['version']}: {card['status']}", "",
           f"Content `{card['hash']}` ({card.get('format')}) from `{card['source']}`, registered by run "
           f"`{card.get('run_id')}`." + (f" Holds {', '.join(card['aliases'])}." if card["aliases"] else ""), "",
           markdown_table(headers, rows)]
    if card.get("gates"):
        out += ["", markdown_table(_GATE_HEADERS, _gate_rows(card))]
    out += ["", "Signature:", "", "```", *_signature_lines(card.get("signature")), "```"]
    return "\n".join(out)


# --- history -------------------------------------------------------------------------------------
def _history(args, console, project: Project) -> int:
    reg = _registry(project, project.read_state(), args.name)
    data = {"model": args.name, "aliases": reg.get("aliases") or {}, "history": reg.get("history") or [],
            "versions": [{"version": v["version"], "status": v["status"], "registered": v.get("registered"),
                          "run_id": v.get("run_id"), "metrics": v.get("metrics") or {}} for v in reg["versions"]]}
    headers = ["when", "alias", "move", "action", "who", "run", "reason"]

    def rows(d):
        return [[_when(h.get("when")), h["alias"], f"{h.get('from') or 'none'} -> {h['to']}", h.get("action", ""),
                 h.get("user", "?"), h.get("run_id") or "-", h.get("reason") or ""] for h in d["history"]]

    def text(d):
        vs = text_table(["version", "status", "registered", "run"],
                        [[v["version"], v["status"], _when(v["registered"]), v["run_id"]] for v in d["versions"]])
        moves = text_table(headers, rows(d)) if d["history"] else "(no alias has moved yet)"
        return f"Model {d['model']}: versions\n{vs}\n\nAlias moves, oldest first:\n{moves}"

    emit(console, args.format, data, text=text, markdown=lambda d: markdown_table(headers, rows(d)))
    return 0


# --- promote / rollback --------------------------------------------------------------------------
def _move_by_hand(args, console, project: Project, action: str) -> int:
    from mlspec.kinds.model import _move, version_of

    name, alias = args.name, args.alias
    model = project.spec.models.get(name)
    forced = getattr(args, "force_with_reason", None)
    pinned = (model.pin or {}).get(alias) if model else None
    if pinned is not None:  # the spec holds this alias: a hand move would be undone by the next apply
        raise MlspecError(f"alias '{alias}' of model '{name}' is pinned to version {pinned} by the spec "
                          f"(models.{name}.pin.{alias}): a hand move would be undone by the next apply",
                          hint="change or remove the pin in the spec, then apply: mlspec plan shows the move")
    project.lock.acquire(f"models {action}")
    try:
        st = project.read_state()
        reg = _registry(project, st, name)
        current = (reg.get("aliases") or {}).get(alias)
        if action == "rollback":
            if args.to is not None:
                target = args.to
            else:
                moves = [h for h in reg.get("history") or () if h.get("alias") == alias and h.get("to") == current]
                target = moves[-1].get("from") if moves else None
                if target is None:
                    raise MlspecError(f"alias '{alias}' of model '{name}' has no previous holder to roll back to",
                                      hint=f"name one: mlspec models rollback {name} --alias {alias} --to VERSION")
        else:
            target = args.version
        v = version_of(reg, target)
        if v is None:
            raise MlspecError(f"model '{name}' has no version {target} (versions: "
                              f"{', '.join(str(x['version']) for x in reg['versions'])})",
                              hint=f"see them with `mlspec models history {name}`")
        from mlspec.policies import hand_move_violations

        violations = hand_move_violations(project.spec, reg, name, alias, target, action, bool(forced))
        if violations:
            raise MlspecError("\n".join(x.line() for x in violations),
                              hint="policies are set in the spec's `policies:` section (docs/spec.md#policies)")
        if v["status"] == "rejected" and not forced:
            raise MlspecError(f"version {target} of model '{name}' was rejected by its gates: it cannot hold an alias",
                              hint=f"promote a version that passed, or override: --force-with-reason TEXT")
        if current == target:
            console.print(f"Alias {alias} of model {name} is on version {target} already; nothing to do.")
            return 0
        reason = forced or args.reason or ""
        _move(reg, alias, target, run_id="", action=action, by_hand=True, reason=reason, when=time.time())
        st.resources[f"model.{name}"] = reg
        st = project.store.write(st)
    finally:
        project.lock.release()
    console.print(f"Moved alias {alias} of model {name}: {current or 'none'} -> {target} ({action}, recorded in "
                  f"`mlspec models history {name}`; state serial {st.serial}). The spec moves it again when a new "
                  "version passes the gates.")
    return 0


def _promote(args, console, project: Project) -> int:
    return _move_by_hand(args, console, project, "promote")


def _rollback(args, console, project: Project) -> int:
    return _move_by_hand(args, console, project, "rollback")
