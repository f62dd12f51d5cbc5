"""The model kind: a registry of versions per model, with gates and aliases, kept in the model's state record.

``models.NAME`` watches a step output (``from``). When that output has content no version holds, applying
registers a version (numbers are never reused: the record keeps ``next_version``) with its lineage,
metrics, signature and gate results; the gates decide its status (``candidate`` or ``rejected``) and
``promote`` moves an alias to it (``promoted``; the previous holder becomes ``archived`` when it holds no
alias any more). Every alias move is appended to the record's ``history``.

The registry is the record ``resources["model.NAME"]`` of the workspace's state: registering a version
and moving its alias are one journaled record write, so a crash leaves both or neither, and aliases are
per workspace like all state. Hand moves (`mlspec models promote|rollback`) write the same record under
the state lock.

Planning (``decide``, pure): the candidate's content hash comes from what the ``from`` step will produce
(known when it is up to date or restored from the run-cache); its metrics from the ``metrics`` step's
record or run-cache entry with those same outputs. Each gate is then passed, failed, vacuous (a change
gate with no alias holder yet) or unknown (until apply). Applying (``start``) judges again with the
metrics the apply recorded, with the same function (:func:`judge`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Mapping

from mlspec.core.kind import Change, Done, Node, Outcome, ResourceKind, register
from mlspec.core.types import Action, Reason, ReasonCode, Status, Verdict
from mlspec.gates import parse_gate

MODEL_FORMATS_PICKLE = ("pickle", "joblib")  # formats whose loading runs code of the file's choosing
PACKAGES = ("scikit-learn", "numpy", "pandas", "skops", "pyarrow")
TARGET_PARAMS = ("target", "label", "target_column", "label_column")


@dataclass(frozen=True)
class ModelItem:
    """A model node's own object: the spec's model and where its candidates come from."""

    model: object  # mlspec.spec.Model
    sources: tuple  # step instance addresses of `from` (several for a matrix step: `select` picks one)
    output: str  # the output name of `from`
    metrics_of: tuple  # per source: the instance whose metrics judge it
    datasets: tuple = ()  # datasets upstream of the sources (lineage)
    declared_format: tuple = ()  # per source: the format the spec declares for the output ('' when none)


@dataclass
class Judgement:
    gates: list = field(default_factory=list)  # [{metric, gate, value, threshold, baseline, alias, outcome}]
    failed: bool = False
    unknown: bool = False
    move: tuple | None = None  # (alias, from version or None, to version)
    kept: str = ""  # why the alias stays (a gate fails, not better, a hand move holds it)


def empty_registry() -> dict:
    return {"kind": "model", "next_version": 1, "versions": [], "aliases": {}, "history": []}


def version_of(reg: Mapping, number) -> dict | None:
    for v in reg.get("versions") or ():
        if v.get("version") == number:
            return v
    return None


def by_hash(reg: Mapping, h: str) -> dict | None:
    for v in reg.get("versions") or ():
        if v.get("hash") == h:
            return v
    return None


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def judge(model, reg: Mapping, metrics: Mapping | None, number: int) -> Judgement:
    """The gates of ``model`` for a candidate with ``metrics`` (None: not known yet), against the registry's
    alias holders; and whether ``promote`` moves its alias to version ``number``. Pure."""
    j = Judgement()
    aliases = reg.get("aliases") or {}
    for metric, expr in sorted((model.gates or {}).items()):
        g = parse_gate(expr)
        row = {"metric": metric, "gate": str(expr).strip(), "value": None, "threshold": g.value, "baseline": None,
               "alias": g.alias or None, "outcome": "unknown"}
        holder = version_of(reg, aliases.get(g.alias)) if g.alias else None
        if g.alias and holder is None:
            row["outcome"] = "vacuous"
        elif metrics is None:
            j.unknown = True
        else:
            value = metrics.get(metric)
            row["value"] = value
            if g.alias:
                base = (holder.get("metrics") or {}).get(metric)
                row["baseline"] = base
                row["threshold"] = None if base is None else base + g.delta
            if not isinstance(value, (int, float)) or (g.alias and row["baseline"] is None):
                row["outcome"] = "failed"  # a metric the candidate (or the holder) did not report
            else:
                row["outcome"] = "passed" if g.passes(value, row["baseline"]) else "failed"
            j.failed = j.failed or row["outcome"] == "failed"
        j.gates.append(row)
    promote = model.promote or {}
    alias = promote.get("alias")
    if not alias:
        return j
    current = aliases.get(alias)
    if alias in (model.pin or {}):  # the pin moves it (its own reason), never the gates
        pin = model.pin[alias]
        j.kept = "" if pin == number else f"{alias} stays on {current or 'none'}: pinned to version {pin} by the spec"
        return j
    if j.failed:
        j.kept = f"{alias} stays on {current or 'none'}: a gate fails"
        return j
    last = _last_move(reg, alias)
    if last is not None and last.get("by_hand"):
        j.kept = (f"{alias} stays on {current or 'none'}: moved by hand ({last.get('action')} by "
                  f"{last.get('user', '?')}), held until a new version passes the gates")
        # a new version that passes its gates takes the alias again: the hand move held until now
    metric = promote.get("if_better")
    holder = version_of(reg, current)
    if metric and holder is not None:
        mine = None if metrics is None else metrics.get(metric)
        theirs = (holder.get("metrics") or {}).get(metric)
        if metrics is None:
            j.unknown = True
            return j
        if not isinstance(mine, (int, float)) or not isinstance(theirs, (int, float)) \
                or not _better(mine, theirs, promote.get("mode", "max")):
            j.kept = (f"{alias} stays on {current}: {metric} {_n(mine)} is not better than version {current}'s "
                      f"{_n(theirs)}")
            return j
    if j.unknown:
        return j
    j.kept = ""
    j.move = (alias, current, number)
    return j


def _n(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def pin_moves(model, reg: Mapping, new: int | None = None) -> tuple[list, list]:
    """The aliases the spec pins (``pin: {ALIAS: VERSION}``) that the registry has elsewhere: ([(alias, from,
    to)], [why an alias cannot move yet]). ``new``: the version number this apply registers (pinnable too).
    Pure."""
    moves, waiting = [], []
    aliases = reg.get("aliases") or {}
    for alias, number in sorted((model.pin or {}).items()):
        current = aliases.get(alias)
        if current == number:
            continue
        if version_of(reg, number) is None and number != new:
            waiting.append(f"{alias} stays on {current or 'none'}: pinned to version {number}, which is not "
                           "registered in this workspace yet")
            continue
        moves.append((alias, current, number))
    return moves, waiting


def pin_reasons(moves: list, waiting: list) -> list:
    return ([Reason(ReasonCode.ALIAS_PINNED, a, f, t) for a, f, t in moves]
            + [Reason(ReasonCode.ALIAS_KEPT, w) for w in waiting])


def _last_move(reg: Mapping, alias: str) -> dict | None:
    for h in reversed(reg.get("history") or ()):
        if h.get("alias") == alias:
            return h
    return None


def gate_reasons(j: Judgement) -> list:
    out = []
    for g in j.gates:
        code = {"passed": ReasonCode.GATE_PASSED, "failed": ReasonCode.GATE_FAILED,
                "vacuous": ReasonCode.GATE_VACUOUS, "unknown": ReasonCode.GATE_UNKNOWN}[g["outcome"]]
        out.append(Reason(code, f"{g['metric']} {g['gate']}", g["baseline"], g["value"]))
    return out


def gate_table(gates: list) -> str:
    """The table an apply prints for a rejected candidate: metric, value, threshold, baseline, outcome."""
    rows = [[g["metric"], _n(g["value"]), g["gate"], "-" if g["threshold"] is None else _n(g["threshold"]),
             "-" if g["baseline"] is None else f"{g['alias']}: {_n(g['baseline'])}", g["outcome"]] for g in gates]
    cells = [["metric", "value", "gate", "threshold", "baseline", "outcome"]] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


# --- the graph ------------------------------------------------------------------------------------
def _instances(spec, ref: str) -> tuple:
    from mlspec.kinds.lifecycle import _step_instances

    return _step_instances(spec, ref)


def _selector(addr: str) -> str:
    return addr[addr.index("["):] if "[" in addr else ""


class ModelKind(ResourceKind):
    name = "model"
    order = 30

    def nodes(self, spec) -> list[Node]:
        from mlspec.addresses import parse_address

        out = []
        for name, m in sorted(spec.models.items()):
            a = parse_address(m.source)
            sources = _instances(spec, m.source)
            metrics_all = _instances(spec, m.metrics) if m.metrics else ()
            metrics_of = []
            for src in sources:  # the metrics instance with the same matrix values, else the only one, else itself
                same = [x for x in metrics_all if _selector(x) == _selector(src)]
                metrics_of.append(same[0] if same else (metrics_all[0] if len(metrics_all) == 1 else src))
            step = spec.steps.get(a.name)
            fmt = (step.output_opts.get(a.output).format if step and a.output in step.output_opts else "") or ""
            ups = tuple(sorted(set(sources) | set(metrics_of)))
            item = ModelItem(m, tuple(sources), a.output, tuple(metrics_of), _upstream_datasets(spec, sources),
                             (fmt,) * len(sources))
            out.append(Node(f"model.{name}", self.name, ups, item))
        return out

    # --- planning -------------------------------------------------------------------------------
    def gather(self, spec, nodes, state, ctx, facts) -> None:
        """The recorded outputs and metrics of each metrics step, to find a candidate's metrics by its outputs."""
        seen = facts.models.setdefault("records", {})
        for node in nodes:
            for addr in node.item.metrics_of:
                rec = state.resources.get(addr)
                if rec and rec.get("kind") == "step" and rec.get("status") == "succeeded":
                    seen[addr] = {"outputs": {k: v.get("hash") for k, v in (rec.get("outputs") or {}).items()},
                                  "metrics": dict(rec.get("metrics") or {})}

    @staticmethod
    def _metrics(facts, addr: str, known: Mapping) -> dict | None:
        outs = known.get(addr)
        if outs is None:
            return None
        outs = dict(outs)
        for entry in facts.runcache.seen() if hasattr(facts.runcache, "seen") else ():
            if entry.get("address") == addr and {k: v["hash"] for k, v in entry["outputs"].items()} == outs:
                return dict(entry.get("metrics") or {})
        rec = (facts.models.get("records") or {}).get(addr)
        if rec is not None and rec["outputs"] == outs:
            return rec["metrics"]
        return None

    def decide(self, node: Node, record: Mapping | None, facts, known: Mapping, forced: bool) -> Change:
        item: ModelItem = node.item
        m = item.model
        reg = record if record and record.get("kind") == self.name else empty_registry()
        before = {"versions": len(reg["versions"]), "aliases": dict(reg["aliases"])} if record else None
        cands = []
        for src, msrc in zip(item.sources, item.metrics_of):
            outs = known.get(src)
            cands.append((src, None if outs is None else outs.get(item.output), self._metrics(facts, msrc, known)))
        action = Action.UPDATE if record else Action.CREATE
        if len(cands) > 1:  # a matrix: `select` picks one, which needs every candidate's metrics
            sel = m.select or {}
            if any(h is None or mt is None or not isinstance(mt.get(sel.get("metric")), (int, float))
                   for _s, h, mt in cands):
                cand = None
            else:
                pick = min if sel.get("mode") == "min" else max
                cand = pick(cands, key=lambda c: c[2][sel["metric"]])
        else:
            cand = cands[0] if cands else None
        if cand is None or cand[1] is None:
            unknown = [c[0] for c in cands if c[1] is None] or [c[0] for c in cands]
            j = judge(m, reg, None, reg["next_version"])
            reasons = [Reason(ReasonCode.UPSTREAM_RERUN, u) for u in sorted(set(unknown))] + gate_reasons(j)
            if j.kept and (m.promote or {}).get("alias") in (m.pin or {}):  # known now: gates never move a pin
                reasons.append(Reason(ReasonCode.ALIAS_KEPT, j.kept))
            reasons += pin_reasons(*pin_moves(m, reg, reg["next_version"]))
            return Change(node.address, self.name, action, Verdict.UNKNOWN, tuple(reasons), None, None, before,
                          {"source": f"{item.sources[0] if len(item.sources) == 1 else m.source}"}, forced)
        src, h, metrics = cand
        outputs = {"model": h}
        existing = by_hash(reg, h)
        if existing is not None and not forced:
            reasons = ()
            alias = (m.promote or {}).get("alias")
            last = _last_move(reg, alias) if alias and alias not in (m.pin or {}) else None
            moves, waiting = pin_moves(m, reg)
            if moves:  # the spec pins an alias the registry has elsewhere: move it back (desired state)
                return Change(node.address, self.name, Action.UPDATE, Verdict.NONE, tuple(pin_reasons(moves, waiting)),
                              h, outputs, before, {"version": existing["version"], "aliases": dict(reg["aliases"]),
                                                   "pins": [list(mv) for mv in moves]})
            if waiting:
                reasons = tuple(pin_reasons([], waiting))
            if last is not None and last.get("by_hand"):
                reasons += (Reason(ReasonCode.ALIAS_HELD_BY_HAND,
                                  f"{alias} on version {reg['aliases'].get(alias, 'none')}: {last.get('action')} "
                                  f"by hand ({last.get('reason') or 'no reason given'}); the spec "
                                  f"moves it again when a new version passes the gates"),)
            return Change(node.address, self.name, Action.NOOP, Verdict.UP_TO_DATE, reasons, h, outputs, before,
                          {"version": existing["version"], "aliases": dict(reg["aliases"])})
        number = reg["next_version"]
        j = judge(m, reg, metrics, number)
        reasons = [Reason(ReasonCode.MODEL_VERSION_NEW, f"{src}.{item.output}", None, number)] + gate_reasons(j)
        alias = (m.promote or {}).get("alias")
        if j.move:
            reasons.append(Reason(ReasonCode.ALIAS_MOVED, j.move[0], j.move[1], j.move[2]))
        elif alias and j.kept:
            reasons.append(Reason(ReasonCode.ALIAS_KEPT, j.kept))
        elif alias and alias not in (m.pin or {}):
            reasons.append(Reason(ReasonCode.ALIAS_KEPT, f"{alias}: {reg['aliases'].get(alias, 'none')} -> {number} "
                                                          "if the gates pass (known after apply)"))
        moves, waiting = pin_moves(m, reg, number)
        reasons += pin_reasons(moves, waiting)
        after = {"version": number, "hash": h, "source": f"{src}.{item.output}",
                 "status": "rejected" if j.failed else ("candidate" if j.unknown or not j.move else "promoted")}
        if moves:
            after["pins"] = [list(mv) for mv in moves]
        return Change(node.address, self.name, action, Verdict.REJECT if j.failed else Verdict.REGISTER,
                      tuple(reasons), h, outputs, before, after, forced)

    def removed(self, address: str, record: Mapping) -> Change | None:
        return None  # a model's registry outlives its spec entry (its versions are history); `state rm` forgets it

    # --- applying -------------------------------------------------------------------------------
    def start(self, node: Node, change: Change, run) -> Done:
        item: ModelItem = node.item
        m = item.model
        now = time.time()
        oc = Outcome(node.address, Status.RAN, Verdict.REGISTER.value, started=now, finished=now)
        resources = run.state.resources
        reg = copy.deepcopy(resources.get(node.address)) if node.address in resources else empty_registry()
        cands = []
        for src, msrc, fmt in zip(item.sources, item.metrics_of, item.declared_format):
            out = ((resources.get(src) or {}).get("outputs") or {}).get(item.output)
            if not isinstance(out, dict):
                oc.status, oc.error = Status.FAILED, f"{src} recorded no output '{item.output}' to register"
                return Done(oc)
            cands.append((src, out, dict((resources.get(msrc) or {}).get("metrics") or {}), fmt, msrc))
        if len(cands) > 1:
            sel = m.select or {}
            metric = sel.get("metric")
            missing = [c[0] for c in cands if not isinstance(c[2].get(metric), (int, float))]
            if missing:
                oc.status, oc.error = Status.FAILED, (f"cannot select a version of model '{m.name}': "
                                                      f"{', '.join(missing)} reported no metric '{metric}'")
                return Done(oc)
            pick = min if sel.get("mode") == "min" else max
            src, out, metrics, fmt, msrc = pick(cands, key=lambda c: c[2][metric])
        else:
            src, out, metrics, fmt, msrc = cands[0]
        h = out["hash"]
        existing = by_hash(reg, h)
        if existing is not None:
            texts = _apply_pins(m, reg, run, now)
            if texts:
                reg["fingerprint"] = h
                oc.verdict, oc.reason = "pin", "; ".join(texts)
                return Done(oc, reg, outputs={"model": h})
            oc.status, oc.verdict = Status.UP_TO_DATE, Verdict.UP_TO_DATE.value
            oc.reason = f"version {existing['version']} has this content already"
            return Done(oc, None, outputs={"model": h})
        stored = out.get("format") or ""
        if stored in MODEL_FORMATS_PICKLE:
            if fmt not in MODEL_FORMATS_PICKLE:
                oc.status = Status.FAILED
                oc.error = (f"model '{m.name}': {src}.{item.output} is stored as {stored}, which runs code when "
                            f"loaded; return a scikit-learn model (stored as skops), or declare "
                            f"`format: {stored}` on steps.{src.split('.')[1].split('[')[0]}.outputs.{item.output} "
                            "to accept that risk (docs/security.md)")
                return Done(oc)
            run.warn(node.address, f"version {reg['next_version']} is stored as {stored} (declared): loading it runs "
                                   "code; prefer skops (docs/security.md)")
        number = reg["next_version"]
        j = judge(m, reg, metrics, number)
        step_rec = resources.get(src) or {}
        facts = step_rec.get("facts") or {}
        version = {
            "version": number, "hash": h, "size": out.get("size"), "format": stored, "source": f"{src}.{item.output}",
            "status": "rejected" if j.failed else "candidate", "registered": round(now, 3), "run_id": run.run_id,
            "metrics": metrics, "metrics_from": msrc, "gates": j.gates,
            "lineage": {"step": src, "run_id": step_rec.get("run_id", ""), "fingerprint": step_rec.get("fingerprint"),
                        "params": facts.get("params") or {}, "code": facts.get("code") or {},
                        "inputs": facts.get("inputs") or {},
                        "data": {d: (resources.get(d) or {}).get("hash") for d in item.datasets},
                        "packages": _packages()},
            "signature": _signature(run, src),
        }
        reg["versions"].append(version)
        reg["next_version"] = number + 1
        reg["fingerprint"] = h
        texts = [f"registered version {number} ({version['status']})"]
        if j.move:
            _move(reg, j.move[0], number, run_id=run.run_id, action="promote", by_hand=False,
                  reason=_why(m, j), when=now)
            texts.append(f"{j.move[0]}: {j.move[1] or 'none'} -> {number}")
        elif j.kept:
            texts.append(j.kept)
        texts += _apply_pins(m, reg, run, now)
        oc.reason = "; ".join(texts)
        oc.metrics = metrics
        oc.outputs = {"model": {"hash": h, "size": out.get("size"), "format": stored}}
        if j.failed:
            failing = [g for g in j.gates if g["outcome"] == "failed"]
            message = (f"version {number} of model '{m.name}' is rejected: "
                       + ", ".join(f"{g['metric']} {_n(g['value'])} fails {g['gate']}" for g in failing))
            if m.on_fail == "keep":
                run.warn(node.address, message + " (on_fail: keep)")
            else:
                oc.status, oc.error, oc.reason = Status.FAILED, message, gate_table(j.gates)
        return Done(oc, reg, outputs={"model": h})

    def verdict_text(self, change: Mapping) -> str:
        action, verdict = change["actions"][0], change.get("verdict")
        after = change.get("after") or {}
        pins = ", ".join(f"{a}: {f or 'none'} -> {t}" for a, f, t in after.get("pins") or ())
        if pins and not verdict:
            return f"{pins} (pinned by the spec)"
        if pins:
            return f"{self.verdict_text({**change, 'after': {k: v for k, v in after.items() if k != 'pins'}})}; " \
                   f"{pins} (pinned by the spec)"
        if action == "no-op":
            return f"up to date (version {after.get('version')})" if after.get("version") else "up to date"
        if verdict == Verdict.UNKNOWN.value:
            return "register a version if the content is new (known after apply)"
        if verdict == Verdict.REJECT.value:
            return f"register version {after.get('version')} as rejected"
        return f"register version {after.get('version')}"


def _apply_pins(m, reg: dict, run, now: float) -> list:
    """Move the aliases the spec pins (in place, recorded in the history); the texts of the moves."""
    from mlspec.policies import is_protected

    moves, _waiting = pin_moves(m, reg)
    texts = []
    for alias, frm, to in moves:
        if (version_of(reg, to) or {}).get("status") == "rejected" and is_protected(run.spec, m.name, alias):
            # the version this apply registered was rejected: policy protected_aliases keeps it off the alias
            run.warn(f"model.{m.name}", f"{alias} stays on {frm or 'none'}: version {to}, which the spec pins, "
                                        f"was rejected by its gates and {alias} is protected (policy protected_aliases)")
            continue
        _move(reg, alias, to, run_id=run.run_id, action="pin", by_hand=False,
              reason=f"pinned by the spec (models.{m.name}.pin.{alias})", when=now)
        texts.append(f"{alias}: {frm or 'none'} -> {to} (pinned by the spec)")
    return texts


def _why(m, j: Judgement) -> str:
    metric = (m.promote or {}).get("if_better")
    parts = ["gates pass" if j.gates else "no gates"]
    if metric:
        parts.append(f"better {metric}")
    return ", ".join(parts)


def _move(reg: dict, alias: str, to: int, *, run_id: str, action: str, by_hand: bool, reason: str,
          when: float, user: str | None = None) -> dict:
    """Move ``alias`` to version ``to`` in the registry (in place): statuses, and a history entry."""
    from mlspec.runs import who

    frm = reg["aliases"].get(alias)
    reg["aliases"][alias] = to
    held = set(reg["aliases"].values())
    for v in reg["versions"]:
        if v["version"] == to:
            v["status"] = "promoted"
        elif v["version"] == frm and v["version"] not in held and v["status"] == "promoted":
            v["status"] = "archived"
    entry = {"alias": alias, "from": frm, "to": to, "when": round(when, 3), "run_id": run_id, "action": action,
             "by_hand": by_hand, "reason": reason, **who()}
    if user:
        entry["user"] = user
    reg["history"].append(entry)
    return entry


def _packages() -> dict:
    """Versions of the packages a model depends on, as installed where mlspec applies (no imports)."""
    import platform
    from importlib import metadata

    from mlspec import __version__

    out = {"python": platform.python_version(), "mlspec": __version__}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _upstream_datasets(spec, sources) -> tuple:
    from mlspec.kinds.lifecycle import _by_step  # noqa: F401  (one expansion per spec)
    from mlspec.graph import expand

    by = {i.address: i for i in expand(spec)} if sources else {}
    seen, todo, data = set(), list(sources), set()
    while todo:
        a = todo.pop()
        if a in seen:
            continue
        seen.add(a)
        if a.startswith("dataset."):
            data.add(a)
        elif a in by:
            todo.extend(by[a].upstream)
    return tuple(sorted(data))


def _signature(run, src: str) -> dict | None:
    """Input columns and dtypes of the training data, and the output (the target column when a param names it).

    The training data is the tabular input (parquet) of the step that made the model: ``src`` itself, or the
    step up the chain of model-format inputs (a `select` step that picks among trained models). None when
    there is no single such input (the card says so)."""
    try:
        return _find_signature(run, src)
    except Exception as exc:  # noqa: BLE001 - a signature is a description: never a reason to fail a registration
        return {"error": f"{type(exc).__name__}: {exc}"}


def _find_signature(run, src: str) -> dict | None:
    resources = run.state.resources
    spec = run.spec
    from mlspec.graph import expand

    by = {i.address: i for i in expand(spec)}
    todo, seen = [src], set()
    while todo:
        addr = todo.pop(0)
        if addr in seen or addr not in by:
            continue
        seen.add(addr)
        inst = by[addr]
        tabular, models = [], []
        for ref in inst.inputs:
            if ref.kind == "step":
                out = ((resources.get(ref.resource) or {}).get("outputs") or {}).get(ref.output) or {}
                if out.get("format") == "parquet":
                    tabular.append((ref, out))
                elif out.get("format") in ("skops",) + MODEL_FORMATS_PICKLE:
                    models.append(ref.resource)
            elif ref.kind == "gather":
                for member, _key in ref.members:
                    out = ((resources.get(member) or {}).get("outputs") or {}).get(ref.output) or {}
                    if out.get("format") in ("skops",) + MODEL_FORMATS_PICKLE:
                        models.append(member)
        if len(tabular) == 1:
            ref, out = tabular[0]
            return _parquet_signature(run, out["hash"], f"{ref.resource}.{ref.output}", inst)
        todo.extend(sorted(models))
    return None


def _parquet_signature(run, digest: str, where: str, inst) -> dict:
    import io

    import pyarrow.parquet as pq  # only at apply, only for a model's registration

    schema = pq.read_schema(io.BytesIO(run.project.artifacts.read_bytes(digest, produced_by=where)))
    meta = schema.pandas_metadata or {}
    index = set(c for c in meta.get("index_columns", []) if isinstance(c, str))
    dtypes = {c.get("field_name") or c.get("name"): c.get("numpy_type") for c in meta.get("columns", [])}
    cols = [(n, dtypes.get(n) or str(schema.field(n).type)) for n in schema.names if n not in index]
    target = next((v for k, v in sorted(inst.params.items()) if k in TARGET_PARAMS and isinstance(v, str)
                   and v in dict(cols)), None)
    inputs = [{"name": n, "dtype": d} for n, d in cols if n != target]
    output = {"name": target, "dtype": dict(cols)[target]} if target else None
    return {"from": where, "step": inst.address, "inputs": inputs, "output": output,
            "target_known": target is not None}


KIND = register(ModelKind())
