"""Planning: a pure function from (Spec, State, Facts) to a Plan. No I/O, no clock, no user code.

``make_plan`` iterates the registered resource kinds (mlspec.core.kind) and never names one: every node of
every kind, in topological order, is decided by its kind's pure ``decide`` given what its upstream
produces; recorded resources no longer in the spec are given to their kind's ``removed``. The executor
calls the same ``decide`` at apply time, when upstream outputs are finally known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from mlspec.core.kind import Change, Node, all_nodes, closure, kind, known_kind, kinds
from mlspec.core.types import Action, Reason, ReasonCode, Verdict
from mlspec.fingerprint import Facts
from mlspec.gcpause import paused
from mlspec.spec import Spec
from mlspec.state import State

PLAN_FORMAT_VERSION = 1

__all__ = ["Action", "Change", "Plan", "Reason", "ReasonCode", "Verdict", "make_plan", "matches", "select"]


@dataclass(frozen=True)
class Plan:
    project: str
    workspace: str
    lineage: str
    serial: int
    state_exists: bool
    spec_digest: str
    backend: str
    changes: tuple = ()
    facts: Mapping = field(default_factory=dict)
    targets: tuple = ()
    replace: tuple = ()
    notes: tuple = ()

    @property
    def has_changes(self) -> bool:
        return any(c.changed for c in self.changes)

    def summary(self) -> dict:
        s = {"run": 0, "unknown": 0, "restore": 0, "checkout": 0, "read": 0, "destroy": 0, "unchanged": 0}
        for c in self.changes:
            if c.action is Action.NOOP:
                s["unchanged"] += 1
            elif c.action is Action.DELETE:
                s["destroy"] += 1
            elif c.action is Action.READ:
                s["read"] += 1
            elif c.verdict is Verdict.RESTORE:
                s["restore"] += 1
            elif c.verdict is Verdict.CHECKOUT:
                s["checkout"] += 1
            elif c.kind == "model" and c.verdict is Verdict.NONE:  # only a pinned alias moves
                s["move"] = s.get("move", 0) + 1
            elif c.kind == "deployment":  # a service to start or roll out is not a run
                s["deploy"] = s.get("deploy", 0) + 1
            elif c.kind == "model":  # a version to register is not a run
                s["register"] = s.get("register", 0) + 1
            elif c.verdict is Verdict.UNKNOWN:
                s["run"] += 1
                s["unknown"] += 1
            else:
                s["run"] += 1
        return s

    def to_dict(self) -> dict:
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "project": self.project,
            "workspace": self.workspace,
            "state": {"lineage": self.lineage, "serial": self.serial, "exists": self.state_exists},
            "spec_digest": self.spec_digest,
            "backend": self.backend,
            "targets": list(self.targets),
            "replace": list(self.replace),
            "summary": self.summary(),
            "has_changes": self.has_changes,
            "resource_changes": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
            "facts": self.facts,
        }


def matches(address: str, pattern: str) -> bool:
    """``step.train`` names every instance of train; ``step.train[C=0.1]`` names one."""
    return address == pattern or ("[" not in pattern and address.split("[", 1)[0] == pattern)


def select(nodes: list[Node], targets: Iterable[str] = ()) -> set[str]:
    """The addresses an apply covers: the targets (or every standalone node) and everything they consume."""
    targets = tuple(targets)
    if targets:
        wanted = {n.address for t in targets for n in nodes if matches(n.address, t)}
    else:
        wanted = {n.address for n in nodes if kind(n.kind).standalone}
    return closure(nodes, wanted)


@paused
def make_plan(spec: Spec, state: State, facts: Facts, *, targets: Iterable[str] = (), replace: Iterable[str] = (),
              nodes: list[Node] | None = None) -> Plan:
    nodes = nodes if nodes is not None else all_nodes(spec)
    targets, replace = tuple(targets), tuple(replace)
    selected = facts.selected[1] if facts.selected and facts.selected[0] == targets else select(nodes, targets)
    changes: list[Change] = []
    known: dict[str, Mapping | None] = {}
    for node in nodes:
        if node.address not in selected:
            continue
        forced = any(matches(node.address, r) for r in replace)
        ch = kind(node.kind).decide(node, state.resources.get(node.address), facts, known, forced)
        known[node.address] = ch.outputs
        changes.append(ch)
    if not targets:
        live = {n.address for n in nodes}
        for addr in sorted(state.resources):
            rec = state.resources[addr]
            k = rec.get("kind") if isinstance(rec, dict) else None
            if addr in live or not k or not known_kind(k):
                continue
            ch = kind(k).removed(addr, rec)
            if ch is not None:
                changes.append(ch)
    notes = []
    managed = {k.name for k in kinds() if k.managed}
    # monitors and triggers are not planned: `mlspec monitor`, `mlspec triggers check` and `mlspec reconcile`
    # evaluate and act on them (docs/triggers.md)
    later = [name for name, v in (("models", spec.models), ("deployments", spec.deployments))
             if v and name[:-1] not in managed]
    if later:
        notes.append(f"{', '.join(later)} are validated but not yet managed by plan/apply in this release")
    by_addr = {n.address: n for n in nodes}
    step_nodes = [by_addr[a] for a in selected if by_addr[a].kind == "step"]
    backends = sorted({spec.backend_for(n.item.step).name if n.item.step.backend else spec.backend.type
                       for n in step_nodes}) or [spec.backend.type]
    return Plan(project=spec.project, workspace=spec.storage.workspace, lineage=state.lineage, serial=state.serial,
                state_exists=state.exists, spec_digest=spec.digest, backend=",".join(backends),
                changes=tuple(changes), facts=facts.to_dict(), targets=targets, replace=replace, notes=tuple(notes))
