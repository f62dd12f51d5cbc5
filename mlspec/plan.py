"""Planning: a pure function from (Spec, State, Facts) to a Plan. No I/O, no clock, no user code.

Every change carries an action (what happens to the resource), a verdict (for steps: run, restore from
the run-cache, up to date, or known only after apply) and structured reasons (why). The executor uses the
same :func:`decide` at apply time, when upstream outputs are finally known.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from mlspec.fingerprint import Facts, fingerprint_of, step_facts
from mlspec.graph import StepInstance, expand
from mlspec.spec import Spec
from mlspec.state import State

PLAN_FORMAT_VERSION = 1


class Action(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    READ = "read"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "read": "<=", "no-op": " "}[self.value]


class Verdict(str, enum.Enum):
    RUN = "run"
    RESTORE = "restore"  # this fingerprint ran before: outputs come from the run-cache
    UP_TO_DATE = "up-to-date"
    UNKNOWN = "known after apply"  # an upstream step re-runs first
    NONE = ""


@dataclass(frozen=True)
class Reason:
    code: str  # new | removed | param_changed | code_changed | input_changed | upstream_rerun | forced | ...
    path: str = ""
    before: object = None
    after: object = None

    def text(self) -> str:
        c = self.code
        if c == "new":
            return "new: no successful run recorded"
        if c == "removed":
            return "removed from the spec"
        if c == "forced":
            return "forced by --replace"
        if c == "param_changed":
            return f"{self.path}: {_fmt(self.before)} -> {_fmt(self.after)}"
        if c == "param_added":
            return f"{self.path}: added ({_fmt(self.after)})"
        if c == "param_removed":
            return f"{self.path}: removed (was {_fmt(self.before)})"
        if c == "secret_changed":
            return f"{self.path}: (sensitive value changed)"
        if c == "code_changed":
            return f"code {self.path} changed"
        if c == "code_added":
            return f"code {self.path} is now imported"
        if c == "code_removed":
            return f"code {self.path} is no longer imported"
        if c == "input_changed":
            return f"input {self.path}: new content"
        if c == "input_rewired":
            return f"input {self.path}: now {_fmt(self.after)} (was {_fmt(self.before)})"
        if c == "output_missing":
            return f"output {self.path} missing or corrupt in the artifact store"
        if c == "upstream_rerun":
            return f"upstream {self.path} will re-run"
        if c == "data_changed":
            return f"new content ({_short(self.before)} -> {_short(self.after)})"
        if c == "data_new":
            return "not recorded yet"
        if c == "definition_changed":
            return f"{self.path}: {_fmt(self.before)} -> {_fmt(self.after)}"
        return f"{c} {self.path}".strip()

    def to_dict(self) -> dict:
        d = {"code": self.code, "message": self.text()}
        if self.path:
            d["path"] = self.path
        if self.code in ("param_changed", "param_removed", "definition_changed", "data_changed", "input_rewired"):
            d["before"] = self.before
        if self.code in ("param_changed", "param_added", "definition_changed", "data_changed", "input_rewired"):
            d["after"] = self.after
        return d


def _fmt(v) -> str:
    import json

    return json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v


def _short(h) -> str:
    if not isinstance(h, str):
        return "none"
    algo, _, hexd = h.partition(":")
    return f"{algo}:{hexd[:8]}" if hexd else h[:12]


@dataclass(frozen=True)
class ResourceChange:
    address: str
    kind: str
    action: Action
    verdict: Verdict = Verdict.NONE
    reasons: tuple = ()
    fingerprint: str | None = None
    before: Mapping | None = None
    after: Mapping | None = None
    step: str = ""  # step name for step instances

    @property
    def changed(self) -> bool:
        return self.action is not Action.NOOP

    def to_dict(self) -> dict:
        return {"address": self.address, "kind": self.kind, "actions": [self.action.value],
                "verdict": self.verdict.value or None, "reasons": [r.to_dict() for r in self.reasons],
                "fingerprint": self.fingerprint, "before": self.before, "after": self.after}


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
        s = {"run": 0, "unknown": 0, "restore": 0, "read": 0, "destroy": 0, "unchanged": 0}
        for c in self.changes:
            if c.action is Action.NOOP:
                s["unchanged"] += 1
            elif c.action is Action.DELETE:
                s["destroy"] += 1
            elif c.action is Action.READ:
                s["read"] += 1
            elif c.verdict is Verdict.RESTORE:
                s["restore"] += 1
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


def _broken_outputs(record: Mapping | None, facts: Facts) -> list:
    if not record or not facts.bad_outputs:
        return []
    return sorted(name for name, o in (record.get("outputs") or {}).items()
                  if isinstance(o, dict) and o.get("hash") in facts.bad_outputs)


def _sensitive(v) -> bool:
    """Whether recorded facts hold a keyed fingerprint (a sensitive value) anywhere in ``v``."""
    if isinstance(v, str):
        return v.startswith("keyed:") or v == "(sensitive)"
    if isinstance(v, dict):
        return any(_sensitive(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_sensitive(x) for x in v)
    return False


def _shown(v):
    """A value as a plan may show it: keyed fingerprints of sensitive values become ``(sensitive)``."""
    if isinstance(v, str):
        return "(sensitive)" if v.startswith("keyed:") else v
    if isinstance(v, dict):
        return {k: _shown(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_shown(x) for x in v]
    return v


# --- deciding one step ----------------------------------------------------------------------------
def diff_reasons(record: Mapping | None, now: Mapping, upstream_unknown: Iterable[str] = ()) -> list[Reason]:
    """Why a step's recorded facts differ from the current ones (empty when they do not)."""
    if not record:
        return [Reason("new")]
    reasons: list[Reason] = []
    for up in sorted(set(upstream_unknown)):
        reasons.append(Reason("upstream_rerun", up))
    old = record.get("facts") or {}
    for key in ("run", "cmd", "outputs", "metrics", "env"):
        if old.get(key) != now.get(key):
            if _sensitive(old.get(key)) or _sensitive(now.get(key)):
                reasons.append(Reason("secret_changed", key))
            else:
                reasons.append(Reason("definition_changed", key, old.get(key), now.get(key)))
    op, np_ = old.get("params") or {}, now.get("params") or {}
    for k in sorted(set(op) | set(np_)):
        if k not in np_:
            reasons.append(Reason("param_removed", f"params.{k}", _shown(op[k])))
        elif k not in op:
            reasons.append(Reason("param_added", f"params.{k}", None, _shown(np_[k])))
        elif op[k] != np_[k]:
            if _sensitive(op[k]) or _sensitive(np_[k]):
                reasons.append(Reason("secret_changed", f"params.{k}"))
            else:
                reasons.append(Reason("param_changed", f"params.{k}", op[k], np_[k]))
    oc, nc = old.get("code") or {}, now.get("code") or {}
    for f in sorted(set(oc) | set(nc)):
        if f not in nc:
            reasons.append(Reason("code_removed", f))
        elif f not in oc:
            reasons.append(Reason("code_added", f))
        elif oc[f] != nc[f]:
            reasons.append(Reason("code_changed", f))
    old_src, new_src = old.get("sources") or {}, now.get("input_sources") or {}
    rewired = set()
    for k in sorted(set(old_src) | set(new_src)):
        if old_src.get(k) != new_src.get(k) and k in old_src and k in new_src:
            reasons.append(Reason("input_rewired", k, old_src[k], new_src[k]))
            rewired.add(k)
    if not upstream_unknown:
        oi, ni = old.get("inputs") or {}, now.get("inputs") or {}
        for k in sorted(set(oi) | set(ni)):
            if oi.get(k) != ni.get(k) and k not in rewired:
                reasons.append(Reason("input_changed", new_src.get(k, k)))
    if old.get("format") != now.get("format"):
        reasons.append(Reason("definition_changed", "format", old.get("format"), now.get("format")))
    return reasons


@dataclass
class Decision:
    action: Action
    verdict: Verdict
    reasons: list
    fingerprint: str | None
    facts: dict
    outputs: dict | None  # output name -> hash when known
    sources: dict = field(default_factory=dict)  # input name -> address it came from


def decide(inst: StepInstance, record: Mapping | None, facts: Facts, known: Mapping[str, dict | None],
           forced: bool = False) -> Decision:
    """Decide what happens to one step instance given its upstream outputs (``known``: None = unknown)."""
    input_hashes, sources, unknown = {}, {}, []
    for ref in inst.inputs:
        if ref.kind == "dataset":
            input_hashes[ref.name] = facts.datasets[ref.resource]["hash"]
            sources[ref.name] = ref.resource
        else:
            outs = known.get(ref.resource)
            if outs is None or ref.output not in outs:
                unknown.append(ref.resource)
            else:
                input_hashes[ref.name] = outs[ref.output]
                sources[ref.name] = f"{ref.resource}.{ref.output}"
    sf = step_facts(inst, facts.code.get(inst.step.name, {}), input_hashes, facts.secrets)
    diff_now = dict(sf, input_sources=sources)
    ok_record = record if record and record.get("status") == "succeeded" else None
    if unknown:
        action = Action.UPDATE if record else Action.CREATE
        return Decision(action, Verdict.UNKNOWN, diff_reasons(record, diff_now, unknown), None, sf, None, sources)
    fp = fingerprint_of(sf)
    if forced:
        action = Action.REPLACE if record else Action.CREATE
        return Decision(action, Verdict.RUN, [Reason("forced")], fp, sf, None, sources)
    broken = _broken_outputs(ok_record, facts)
    if ok_record and ok_record.get("fingerprint") == fp and not broken:
        return Decision(Action.NOOP, Verdict.UP_TO_DATE, [], fp, sf,
                        {k: v["hash"] for k, v in (ok_record.get("outputs") or {}).items()}, sources)
    reasons = diff_reasons(record, diff_now) if not broken else [Reason("output_missing", o) for o in broken]
    action = Action.UPDATE if record else Action.CREATE
    hit = facts.runcache.get(fp) if inst.step.cache else None
    if hit and any(o["hash"] in facts.bad_outputs for o in hit["outputs"].values()):
        hit = None
    if hit:
        return Decision(action, Verdict.RESTORE, reasons, fp, sf, {k: v["hash"] for k, v in hit["outputs"].items()},
                        sources)
    return Decision(action, Verdict.RUN, reasons, fp, sf, None, sources)


# --- the plan -------------------------------------------------------------------------------------
def matches(address: str, pattern: str) -> bool:
    """``step.train`` names every instance of train; ``step.train[C=0.1]`` names one."""
    return address == pattern or ("[" not in pattern and address.split("[", 1)[0] == pattern)


def select_targets(instances: list[StepInstance], targets: Iterable[str]) -> set[str]:
    """Instance addresses matching the targets plus everything they need upstream."""
    by_addr = {i.address: i for i in instances}
    wanted = {i.address for t in targets for i in instances if matches(i.address, t)}
    todo = list(wanted)
    while todo:
        inst = by_addr[todo.pop()]
        for up in inst.upstream:
            if up not in wanted:
                wanted.add(up)
                todo.append(up)
    return wanted


def make_plan(spec: Spec, state: State, facts: Facts, *, targets: Iterable[str] = (), replace: Iterable[str] = (),
              instances: list[StepInstance] | None = None) -> Plan:
    instances = instances if instances is not None else expand(spec)
    targets, replace = tuple(targets), tuple(replace)
    selected = select_targets(instances, targets) if targets else {i.address for i in instances}
    forced = {a for a in selected if any(matches(a, r) for r in replace)}
    changes: list[ResourceChange] = []
    used_datasets = set()
    for inst in instances:
        if inst.address in selected:
            used_datasets.update(r.resource for r in inst.inputs if r.kind == "dataset")
    for addr in sorted(used_datasets):
        fact = facts.datasets[addr]
        rec = state.resources.get(addr)
        if rec is None:
            changes.append(ResourceChange(addr, "dataset", Action.READ, Verdict.NONE, (Reason("data_new"),),
                                          fact["hash"], None, {"hash": fact["hash"], "size": fact["size"]}))
        elif rec.get("hash") != fact["hash"]:
            changes.append(ResourceChange(addr, "dataset", Action.READ, Verdict.NONE,
                                          (Reason("data_changed", "", rec.get("hash"), fact["hash"]),), fact["hash"],
                                          {"hash": rec.get("hash"), "size": rec.get("size")},
                                          {"hash": fact["hash"], "size": fact["size"]}))
        else:
            changes.append(ResourceChange(addr, "dataset", Action.NOOP, Verdict.NONE, (), fact["hash"]))
    known: dict[str, dict | None] = {}
    for inst in instances:
        if inst.address not in selected:
            continue
        record = state.resources.get(inst.address)
        d = decide(inst, record, facts, known, forced=inst.address in forced)
        known[inst.address] = d.outputs
        before = {"fingerprint": record.get("fingerprint"), "params": (record.get("facts") or {}).get("params")} \
            if record else None
        after = {"fingerprint": d.fingerprint, "params": d.facts["params"]}
        changes.append(ResourceChange(inst.address, "step", d.action, d.verdict, tuple(d.reasons), d.fingerprint,
                                      before, after, inst.step.name))
    if not targets:
        live = {i.address for i in instances} | {f"dataset.{n}" for n in spec.datasets}
        for addr in sorted(state.resources):
            rec = state.resources[addr]
            if addr not in live and rec.get("kind") == "step":
                changes.append(ResourceChange(addr, "step", Action.DELETE, Verdict.NONE, (Reason("removed"),),
                                              None, {"fingerprint": rec.get("fingerprint")}, None,
                                              addr.split(".", 1)[1].split("[", 1)[0]))
    notes = []
    later = [k for k, v in (("models", spec.models), ("deployments", spec.deployments),
                            ("monitors", spec.monitors), ("triggers", spec.triggers)) if v]
    if later:
        notes.append(f"{', '.join(later)} are validated but not yet managed by plan/apply in this release")
    backends = sorted({spec.backend_for(i.step).name if i.step.backend else spec.backend.type for i in instances
                       if i.address in selected}) or [spec.backend.type]
    return Plan(project=spec.project, workspace=spec.storage.workspace, lineage=state.lineage, serial=state.serial,
                state_exists=state.exists, spec_digest=spec.digest, backend=",".join(backends),
                changes=tuple(changes), facts=facts.to_dict(), targets=targets, replace=replace, notes=tuple(notes))
