"""Plan views: text (like `terraform plan`), JSON (the versioned plan format), Markdown (a PR comment).

Views are functions of the plan's plain data (its ``to_dict()``), so `mlspec show plan.json` renders a
saved plan exactly as `mlspec plan` rendered it.
"""

from __future__ import annotations

import json
from typing import Callable

from mlspec.core.types import SYMBOL_OF

MARKDOWN_LIMIT = 60_000
_COLOR = {"create": ("green",), "update": ("yellow",), "replace": ("red",), "delete": ("red",), "read": ("cyan",)}


def _verdict_text(ch: dict) -> str:
    """The words after the address: each kind says its own (a dataset is "read", a step "run")."""
    from mlspec.core.kind import kind, known_kind

    if known_kind(ch["kind"]):
        return kind(ch["kind"]).verdict_text(ch)
    return ch.get("verdict") or ch["actions"][0]


def summary_line(plan: dict) -> str:
    s = plan["summary"]
    if not plan["has_changes"]:
        return "No changes. The lifecycle matches the spec."
    run = f"{s['run']} to run" + (f" ({s['unknown']} known after apply)" if s["unknown"] else "")
    checkout = f", {s['checkout']} to check out" if s.get("checkout") else ""
    if s.get("register"):
        checkout += f", {s['register']} model version{'s' if s['register'] > 1 else ''} to register"
    if s.get("deploy"):
        checkout += f", {s['deploy']} deployment{'s' if s['deploy'] > 1 else ''} to roll out"
    if s.get("move"):
        checkout += f", {s['move']} model{'s' if s['move'] > 1 else ''} with a pinned alias to move"
    return (f"Plan: {run}, {s['restore']} to restore from cache{checkout}, {s['read']} to read, "
            f"{s['destroy']} to destroy, {s['unchanged']} unchanged.")


def render_text(plan: dict, *, verbose: bool = False, style: Callable[..., str] = lambda t, *s: t) -> str:
    lines = []
    st = plan["state"]
    state_desc = f"state serial {st['serial']}" if st["exists"] else "no state yet"
    lines.append(f"Project {plan['project']}, workspace {plan['workspace']}, backend {plan['backend']} "
                 f"({state_desc}).")
    if plan.get("targets"):
        lines.append(f"Targeting: {', '.join(plan['targets'])} (and what they need upstream).")
    changes = [c for c in plan["resource_changes"] if verbose or c["actions"][0] != "no-op"]
    if changes:
        lines.append("")
        lines.append("mlspec will perform the following actions:")
        lines.append("")
        w = max(len(c["address"]) for c in changes)
        for c in changes:
            action = c["actions"][0]
            sym = SYMBOL_OF[action]
            head = f"  {sym:>3} {c['address']:<{w}}  {_verdict_text(c)}"
            lines.append(style(head, *_COLOR.get(action, ())))
            for r in c["reasons"]:
                lines.append(f"        {r['message']}")
    lines.append("")
    lines.append(style(summary_line(plan), "bold"))
    for n in plan.get("notes", []):
        lines.append(f"Note: {n}.")
    return "\n".join(lines) + "\n"


def render_json(plan: dict) -> str:
    return json.dumps(plan, indent=2, sort_keys=True) + "\n"


def _mermaid(plan: dict, graph_edges: list, limit: int = 60) -> str:
    changed = {c["address"]: c for c in plan["resource_changes"] if c["actions"][0] != "no-op"}
    nodes = sorted(changed)[:limit]
    ids = {a: f"n{i}" for i, a in enumerate(nodes)}
    out = ["```mermaid", "graph LR"]
    for a in nodes:
        label = f"{SYMBOL_OF[changed[a]['actions'][0]].strip() or '='} {a}".replace('"', "'")
        out.append(f'  {ids[a]}["{label}"]')
    for src, dst in graph_edges:
        if src in ids and dst in ids:
            out.append(f"  {ids[src]} --> {ids[dst]}")
    if len(changed) > limit:
        out.append(f'  more["... {len(changed) - limit} more"]')
    out.append("```")
    return "\n".join(out)


def render_markdown(plan: dict, graph_edges: list | None = None) -> str:
    s = plan["summary"]
    head = [f"### mlspec plan: `{plan['project']}` ({plan['workspace']})", "",
            f"**{summary_line(plan)}**", "",
            "| to run | known after apply | restore from cache | read | destroy | unchanged |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {s['run']} | {s['unknown']} | {s['restore']} | {s['read']} | {s['destroy']} | {s['unchanged']} |", ""]
    if not plan["has_changes"]:
        return "\n".join(head) + "\n"
    rows = ["| | resource | verdict | why |", "|---|---|---|---|"]
    changes = [c for c in plan["resource_changes"] if c["actions"][0] != "no-op"]
    tail = ["", "<details><summary>Affected graph</summary>", "", _mermaid(plan, graph_edges or []), "",
            "</details>", "", "<details><summary>Plan as text</summary>", "", "```",
            render_text(plan).rstrip(), "```", "", "</details>"]
    body_budget = MARKDOWN_LIMIT - len("\n".join(head)) - 400
    text_tail = "\n".join(tail)
    if len(text_tail) > body_budget // 2:
        text_tail = "\n".join(tail[:6])  # drop the long text view first
    used, shown = 0, 0
    for c in changes:
        why = "; ".join(r["message"] for r in c["reasons"]).replace("|", "\\|")
        row = f"| `{SYMBOL_OF[c['actions'][0]]}` | `{c['address']}` | {_verdict_text(c)} | {why} |"
        if used + len(row) + len(text_tail) > body_budget:
            break
        rows.append(row)
        used += len(row) + 1
        shown += 1
    if shown < len(changes):
        rows.append("")
        rows.append(f"_…and {len(changes) - shown} more changes, cut to keep this comment under "
                    f"{MARKDOWN_LIMIT:,} characters; run `mlspec plan` for the full list._")
    out = "\n".join(head + rows) + "\n" + text_tail + "\n"
    return out[:MARKDOWN_LIMIT]
