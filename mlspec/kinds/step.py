"""The step kind: a function or command run on a backend, fingerprinted by code, params and inputs.

Planning: a step instance is up to date when its fingerprint matches the recorded one and its outputs are
intact in the store; restored when the run-cache has its fingerprint; otherwise run (or known after apply,
when an upstream step runs first). Applying: a restore is verified and journaled at once; a run is a
:class:`~mlspec.backends.api.Task` submitted to the step's backend, in a slot of that backend's pool.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping

from mlspec.backends.api import TASK_FORMAT_VERSION, Task, TaskResult, TaskStatus
from mlspec.core.frozen import fast_init
from mlspec.core.kind import Change, Done, Node, Outcome, ResourceKind, Submit, register
from mlspec.core.types import Action, Reason, ReasonCode, Status, Verdict
from mlspec.errors import MlspecError
from mlspec.addresses import format_value
from mlspec.fingerprint import fingerprint_of, step_facts
from mlspec.hashing import hash_json
from mlspec.records import RunCacheEntry, StepRecord, TaskPayload
from mlspec.sensitive import REDACTOR
from mlspec.spec import Secret


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


def _code_reasons(oc: Mapping, nc: Mapping, reasons: list) -> None:
    for f in sorted(set(oc) | set(nc)):
        if f not in nc:
            reasons.append(Reason(ReasonCode.CODE_REMOVED, f))
        elif f not in oc:
            reasons.append(Reason(ReasonCode.CODE_ADDED, f))
        elif oc[f] != nc[f]:
            reasons.append(Reason(ReasonCode.CODE_CHANGED, f))


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b  # 1 and 1.0 (and True) differ in the fingerprint: here too


def _key_reasons(path: str, o, n, reasons: list, sep: str = ".") -> None:
    """Reasons for a depended-on key whose value changed, down to the changed leaves of a mapping (``sep``
    joins the first level: ``params.yaml:a``, then ``a.b``)."""
    if isinstance(o, dict) and isinstance(n, dict):
        for k in sorted(set(o) | set(n)):
            sub = f"{path}{sep}{k}"
            if k not in n:
                reasons.append(Reason(ReasonCode.FILE_KEY_REMOVED, sub, _shown(o[k])))
            elif k not in o:
                reasons.append(Reason(ReasonCode.FILE_KEY_ADDED, sub, None, _shown(n[k])))
            elif not _same(o[k], n[k]):
                _key_reasons(sub, o[k], n[k], reasons)
    elif _sensitive(o) or _sensitive(n):
        reasons.append(Reason(ReasonCode.SECRET_CHANGED, path))
    else:
        reasons.append(Reason(ReasonCode.FILE_KEY_CHANGED, path, o, n))


def _dep_reasons(old: Mapping, now: Mapping, reasons: list) -> None:
    """``deps:``: whole files by content hash, keyed files by the value of each key (``params.yaml:a.b``)."""
    of, nf = old.get("deps") or {}, now.get("deps") or {}
    for f in sorted(set(of) | set(nf)):
        if f not in nf:
            reasons.append(Reason(ReasonCode.FILE_REMOVED, f))
        elif f not in of:
            reasons.append(Reason(ReasonCode.FILE_ADDED, f))
        elif of[f] != nf[f]:
            reasons.append(Reason(ReasonCode.FILE_CHANGED, f))
    ok, nk = old.get("dep_keys") or {}, now.get("dep_keys") or {}
    for f in sorted(set(ok) | set(nk)):
        _key_reasons(f, ok.get(f) or {}, nk.get(f) or {}, reasons, sep=":")


def diff_reasons(record: Mapping | None, now: Mapping, upstream_unknown=()) -> list[Reason]:
    """Why a step's recorded facts differ from the current ones (empty when they do not)."""
    if not record:
        return [Reason(ReasonCode.NEW)]
    reasons: list[Reason] = []
    for up in sorted(set(upstream_unknown)):
        reasons.append(Reason(ReasonCode.UPSTREAM_RERUN, up))
    old = record.get("facts") or {}
    for key in ("run", "cmd", "outputs", "metrics", "env", "io", "image"):
        if old.get(key) != now.get(key):
            if _sensitive(old.get(key)) or _sensitive(now.get(key)):
                reasons.append(Reason(ReasonCode.SECRET_CHANGED, key))
            else:
                reasons.append(Reason(ReasonCode.DEFINITION_CHANGED, key, old.get(key), now.get(key)))
    op, np_ = old.get("params") or {}, now.get("params") or {}
    for k in sorted(set(op) | set(np_)):
        if k not in np_:
            reasons.append(Reason(ReasonCode.PARAM_REMOVED, f"params.{k}", _shown(op[k])))
        elif k not in op:
            reasons.append(Reason(ReasonCode.PARAM_ADDED, f"params.{k}", None, _shown(np_[k])))
        elif op[k] != np_[k]:
            if _sensitive(op[k]) or _sensitive(np_[k]):
                reasons.append(Reason(ReasonCode.SECRET_CHANGED, f"params.{k}"))
            else:
                reasons.append(Reason(ReasonCode.PARAM_CHANGED, f"params.{k}", op[k], np_[k]))
    oc, nc = old.get("code") or {}, now.get("code") or {}
    if oc and (old.get("code_format") or 1) < (now.get("code_format") or 1):  # by file before (1), by function now
        reasons.append(Reason(ReasonCode.CODE_FORMAT))  # one reason, not every entry added and removed
    else:
        _code_reasons(oc, nc, reasons)
        _dep_reasons(old, now, reasons)
    old_src, new_src = old.get("sources") or {}, now.get("input_sources") or {}
    rewired = set()
    for k in sorted(set(old_src) | set(new_src)):
        if old_src.get(k) != new_src.get(k) and k in old_src and k in new_src:
            reasons.append(Reason(ReasonCode.INPUT_REWIRED, k, old_src[k], new_src[k]))
            rewired.add(k)
    if not upstream_unknown:
        oi, ni = old.get("inputs") or {}, now.get("inputs") or {}
        for k in sorted(set(oi) | set(ni)):
            if oi.get(k) != ni.get(k) and k not in rewired:
                reasons.append(Reason(ReasonCode.INPUT_CHANGED, new_src.get(k, k)))
    if old.get("format") != now.get("format"):
        reasons.append(Reason(ReasonCode.DEFINITION_CHANGED, "format", old.get("format"), now.get("format")))
    return reasons


PICKLE_FORMATS = ("pickle", "joblib")  # loading them runs code of the file's choosing


def _pickle_declared(spec, resource: str, output: str) -> bool:
    """Whether the spec declares `format: pickle` (or joblib) for a step output: only then may a consumer's
    runner unpickle it (docs/security.md, "Model files")."""
    name = resource.split(".", 1)[1].split("[", 1)[0]
    step = spec.steps.get(name)
    o = step.output_opts.get(output) if step else None
    return bool(o and o.format in PICKLE_FORMATS)


def _contract_failed(node: Node, outputs: Mapping, run, outcome: Outcome) -> bool:
    """Check the outputs that declare a contract (mlspec.contracts); a violation fails the outcome."""
    opts = node.item.step.output_opts
    if not opts or not any(o.contract for o in opts.values()):
        return False
    from mlspec.contracts import check_output

    for name, o in sorted(opts.items()):
        out = outputs.get(name)
        if not o.contract or not isinstance(out, dict):
            continue
        report, _cached = check_output(run.project, node.address, name, out, o.contract)
        if not report.ok:
            head, _, rest = report.text().partition("\n")
            outcome.status, outcome.error, outcome.reason = Status.FAILED, head, rest + "\n" + report.hint()
            return True
    return False


@fast_init
@dataclasses.dataclass(frozen=True)
class StepDetail:
    facts: dict  # what the fingerprint is of (recorded in state)
    sources: dict  # input name -> address it came from


def _broken_outputs(record: Mapping | None, facts) -> list:
    if not record or not facts.bad_outputs:
        return []
    return sorted(name for name, o in (record.get("outputs") or {}).items()
                  if isinstance(o, dict) and o.get("hash") in facts.bad_outputs)


def _resolve_images(spec, project, steps: Mapping, facts) -> None:
    """The id (digest) of each image a step pins, asked of the step's backend (``resolve_image``): it joins the
    step's fingerprint, so a rebuilt image shows in the plan and re-runs the step."""
    from mlspec.preflight import make_backend

    backends: dict = {}
    try:
        for name, step in sorted(steps.items()):
            cfg = spec.backend_for(step)
            if cfg.name not in backends:
                backends[cfg.name] = make_backend(project, cfg)
            resolve = getattr(backends[cfg.name], "resolve_image", None)
            if resolve is None:
                raise MlspecError(f"steps.{name}.image: the step runs on backend '{cfg.name}' ({cfg.type}), which "
                                  "does not run container images",
                                  hint=f"run it on a docker backend (steps.{name}.backend: docker), or drop image:")
            try:
                facts.images[name] = resolve(step.image)
            except MlspecError as exc:
                raise MlspecError(f"steps.{name}.image: {exc.message}", hint=exc.hint) from None
    finally:
        for b in backends.values():
            b.close()


class StepKind(ResourceKind):
    name = "step"
    order = 20

    # --- the graph ------------------------------------------------------------------------------
    def nodes(self, spec) -> list[Node]:
        from mlspec.graph import expand

        return expand(spec)  # StepInstance has Node's fields (address, kind, upstream, item)

    # --- planning -------------------------------------------------------------------------------
    def gather(self, spec, nodes, state, ctx, facts) -> None:
        from mlspec.fingerprint import gather_steps

        gather_steps(spec, facts, ctx.cache, state.fingerprint_key)
        pinned = {n.item.step.name: n.item.step for n in nodes if n.item.step.image}
        if pinned:
            _resolve_images(spec, ctx, pinned, facts)
        # every recorded output of the planned steps: in the store with its size? (a stat each, no reads; a
        # directory output's manifest is read and each of its files stat-ed)
        for node in nodes:
            rec = state.resources.get(node.address)
            if not rec or rec.get("kind") != self.name:
                continue
            for out in (rec.get("outputs") or {}).values():
                if isinstance(out, dict) and isinstance(out.get("hash"), str) and out["hash"] not in facts.bad_outputs:
                    problem = ctx.artifacts.output_problem(out, deep=False)
                    if problem:
                        facts.bad_outputs[out["hash"]] = problem
            step = node.item.step
            if step.output_opts and rec.get("status") == "succeeded":  # the project's copies of its outputs
                from mlspec.materialise import drift

                for name, o in sorted(step.output_opts.items()):
                    out = (rec.get("outputs") or {}).get(name)
                    if o.path and isinstance(out, dict) and out.get("hash") not in facts.bad_outputs:
                        problem, shown = drift(spec.project_dir, o.path, out, ctx.artifacts, ctx.cache)
                        if problem:
                            facts.drift.setdefault(node.address, []).append((name, shown, problem))

    def decide(self, node: Node, record: Mapping | None, facts, known: Mapping, forced: bool) -> Change:
        inst = node.item
        input_hashes, sources, unknown = {}, {}, []
        for ref in inst.inputs:
            if ref.kind == "dataset":
                input_hashes[ref.name] = facts.datasets[ref.resource]["hash"]
                sources[ref.name] = ref.resource
            elif ref.kind == "gather":  # one hash for the whole mapping: any instance's change re-runs
                members, missing = {}, False
                for addr, _key in ref.members:
                    outs = known.get(addr)
                    if outs is None or ref.output not in outs:
                        unknown.append(addr)
                        missing = True
                    else:
                        members[addr] = outs[ref.output]
                if not missing:
                    input_hashes[ref.name] = hash_json(members)
                    sources[ref.name] = f"{ref.resource}.{ref.output}"
            else:
                outs = known.get(ref.resource)
                if outs is None or ref.output not in outs:
                    unknown.append(ref.resource)
                else:
                    input_hashes[ref.name] = outs[ref.output]
                    sources[ref.name] = f"{ref.resource}.{ref.output}"
        sf = step_facts(inst, facts.code.get(inst.step.name, {}), input_hashes, facts.secrets,
                        facts.deps.get(inst.step.name), facts.images.get(inst.step.name, ""))
        detail = StepDetail(sf, sources)
        before = {"fingerprint": record.get("fingerprint"), "params": (record.get("facts") or {}).get("params")} \
            if record else None

        def change(action, verdict, reasons, fp, outputs):
            return Change(node.address, self.name, action, verdict, tuple(reasons), fp, outputs, before,
                          {"fingerprint": fp, "params": sf["params"]}, forced, detail)

        diff_now = dict(sf, input_sources=sources)
        ok_record = record if record and record.get("status") == "succeeded" else None
        if unknown:
            action = Action.UPDATE if record else Action.CREATE
            return change(action, Verdict.UNKNOWN, diff_reasons(record, diff_now, unknown), None, None)
        fp = fingerprint_of(sf)
        if forced:
            return change(Action.REPLACE if record else Action.CREATE, Verdict.RUN, [Reason(ReasonCode.FORCED)], fp,
                          None)
        broken = _broken_outputs(ok_record, facts)
        if ok_record and ok_record.get("fingerprint") == fp and not broken:
            outputs = {k: v["hash"] for k, v in (ok_record.get("outputs") or {}).items()}
            drifted = facts.drift.get(node.address)
            if drifted:  # the result stands; the project's copy is put back from the store
                return change(Action.UPDATE, Verdict.CHECKOUT, [
                    Reason(ReasonCode.OUTPUT_MODIFIED if why == "modified" else ReasonCode.OUTPUT_NOT_IN_PROJECT, path)
                    for _name, path, why in drifted], fp, outputs)
            return change(Action.NOOP, Verdict.UP_TO_DATE, [], fp, outputs)
        if broken:
            reasons = [Reason(ReasonCode.OUTPUT_MISSING, o) for o in broken]
        else:
            reasons = diff_reasons(record, diff_now)
        action = Action.UPDATE if record else Action.CREATE
        hit = facts.runcache.get(fp) if inst.step.cache else None
        if hit and any(o["hash"] in facts.bad_outputs for o in hit["outputs"].values()):
            hit = None
        if hit:
            return change(action, Verdict.RESTORE, reasons, fp, {k: v["hash"] for k, v in hit["outputs"].items()})
        return change(action, Verdict.RUN, reasons, fp, None)

    def removed(self, address: str, record: Mapping) -> Change | None:
        if record.get("kind") != self.name:
            return None
        return super().removed(address, record)

    # --- applying -------------------------------------------------------------------------------
    def record(self, change: Change, outputs: dict, metrics: dict, log_hash: str | None, duration: float,
               verdict: str, run_id: str) -> dict:
        d: StepDetail = change.detail
        return StepRecord(change.fingerprint, dict(d.facts, sources=d.sources), outputs, metrics, run_id, log_hash,
                          round(duration, 4), verdict, round(time.time(), 3)).to_dict()

    def start(self, node: Node, change: Change, run) -> Done | Submit:
        if change.verdict is Verdict.CHECKOUT:
            rec = run.state.resources.get(node.address) or {}
            now = time.time()
            oc = Outcome(node.address, Status.CHECKED_OUT, change.verdict.value, started=now, finished=now,
                         fingerprint=change.fingerprint, outputs=rec.get("outputs") or {},
                         reason=", ".join(r.text() for r in change.reasons) + ": put back from the store")
            try:
                self.materialise(node, rec.get("outputs") or {}, run, strict=True)
            except MlspecError as exc:
                oc.status, oc.error = Status.FAILED, str(exc)
                return Done(oc)
            return Done(oc, None, outputs=change.outputs)
        if change.verdict is Verdict.RESTORE:
            done = self._restore(node, change, run)
            if done is not None:
                return done
        inst = node.item
        bname, backend = run.backend_for(inst.step)
        cap = run.capacity(bname, backend)
        slots = Task.slots_for(inst.step.resources.cpus, cap)
        prev = run.outcomes.get(node.address)
        attempt = (prev.attempts if prev else 0) + 1
        outcome = Outcome(node.address, Status.RAN, Verdict.RUN.value, attempts=attempt,
                          fingerprint=change.fingerprint, inputs=change.detail.facts["inputs"])

        def submit():
            task = Task(f"{run.run_id}:{node.address}:{attempt}", node.address, self.payload(inst, run),
                        inst.step.resources.to_dict(), inst.step.timeout)
            outcome.started = time.time()
            return backend.submit(task)

        return Submit(bname, slots, submit, outcome, capacity=cap)

    def _restore(self, node: Node, change: Change, run) -> Done | None:
        """Verify the content of every output a restore would record: a corrupt one is quarantined, its
        run-cache entry dropped, and the step runs instead (None)."""
        artifacts = run.project.artifacts
        hit = run.facts.runcache.get(change.fingerprint)
        if not hit:
            return None
        for name, o in sorted(hit["outputs"].items()):
            problem = artifacts.output_problem(o, deep=True)
            if problem:
                artifacts.quarantine(o["hash"])
                artifacts.runcache_drop(change.fingerprint)
                run.warn(node.address, f"run-cache output {name} ({o['hash']}) is {problem}: quarantined; "
                                       "running the step instead")
                return None
        now = time.time()
        oc = Outcome(node.address, Status.RESTORED, change.verdict.value, started=now, finished=now,
                     fingerprint=change.fingerprint, inputs=change.detail.facts["inputs"], outputs=hit["outputs"],
                     metrics=hit.get("metrics", {}), log=hit.get("log"))
        if _contract_failed(node, hit["outputs"], run, oc):
            return Done(oc)
        rec = self.record(change, hit["outputs"], hit.get("metrics", {}), hit.get("log"), 0.0, "restored",
                          run.run_id)
        self.materialise(node, hit["outputs"], run)
        return Done(oc, rec, outputs={k: v["hash"] for k, v in hit["outputs"].items()})

    def payload(self, inst, run) -> dict:
        spec = run.spec
        inputs = {}
        for ref in inst.inputs:
            if ref.kind == "dataset":
                from mlspec.addresses import parse_address

                ds = spec.datasets[parse_address(ref.resource).name]
                uri = ds.uri
                if "://" not in uri and not uri.startswith("/"):
                    uri = str(spec.project_dir / uri)
                inputs[ref.name] = {"path": uri, "format": ds.format, "options": dict(ds.options)}
                if ds.format in PICKLE_FORMATS:
                    inputs[ref.name]["trust_pickle"] = True
            elif ref.kind == "gather":
                members = []
                for addr, key in ref.members:
                    out = run.state.resources[addr]["outputs"][ref.output]
                    members.append({"key": [v for _k, v in key], "label": ",".join(f"{k}={format_value(v)}" for k, v in key),
                                    "hash": out["hash"], "format": out.get("format", "auto"),
                                    "from": f"{addr}.{ref.output}"})
                inputs[ref.name] = {"gather": members, "from": f"{ref.resource}.{ref.output}"}
                if _pickle_declared(spec, ref.resource, ref.output):
                    inputs[ref.name]["trust_pickle"] = True
            else:
                out = run.state.resources[ref.resource]["outputs"][ref.output]
                inputs[ref.name] = {"hash": out["hash"], "format": out.get("format", "auto"),
                                    "from": f"{ref.resource}.{ref.output}"}
                if _pickle_declared(spec, ref.resource, ref.output):
                    inputs[ref.name]["trust_pickle"] = True
            declared = inst.step.input_opts.get(ref.name)
            if declared and declared.get("format") in PICKLE_FORMATS:
                inputs[ref.name]["trust_pickle"] = True
            if declared:  # a declared format overrides the dataset's or the recorded one (each gathered one's)
                inputs[ref.name].update({k: declared[k] for k in ("format", "load_args") if declared.get(k)})
                for m in inputs[ref.name].get("gather", ()) if declared.get("format") else ():
                    m["format"] = declared["format"]
        params = {k: (str.__str__(v) if isinstance(v, Secret) else v) for k, v in inst.params.items()}
        return TaskPayload(TASK_FORMAT_VERSION, run.mlspec_version, inst.address, inst.step.run, inst.step.cmd,
                           params, inputs, list(inst.step.outputs), list(inst.step.metrics), str(spec.project_dir),
                           list(run.code_paths),
                           {"url": run.project.artifacts.url, "options": dict(spec.storage.options)},
                           dict(inst.step.env), list(inst.step.external_paths),
                           output_opts={k: {"path": o.path, "type": o.type} for k, o in inst.step.output_opts.items()},
                           output_formats={n: {"format": o.format, "save_args": dict(o.save_args)}
                                           for n, o in inst.step.output_opts.items() if o.format or o.save_args}
                           ).to_dict() | ({"image": run.facts.images.get(inst.step.name) or inst.step.image}
                                          if inst.step.image else {})

    def materialise(self, node: Node, outputs: Mapping, run, strict: bool = False) -> None:
        """Put each output that declares a project path there (nothing to do for the others). A failure is a
        warning (the result is recorded and the next plan shows the copy as missing), or an error (strict)."""
        step = node.item.step
        if not step.output_opts:
            return
        from mlspec.materialise import materialise

        project = run.project
        for name, o in sorted(step.output_opts.items()):
            out = outputs.get(name)
            if not o.path or not isinstance(out, dict):
                continue
            try:
                materialise(run.spec.project_dir, o.path, out, project.artifacts, project.cache, run.spec.storage.link,
                            produced_by=f"{node.address}.{name}")
            except (OSError, MlspecError) as exc:
                if strict:
                    raise MlspecError(f"{node.address}: could not put output {name} at {o.path}: {exc}",
                                      hint="free the path (permissions, disk space), then apply again") from None
                run.warn(node.address, f"could not put output {name} at {o.path}: {exc}")

    def finish(self, node: Node, change: Change, result, outcome: Outcome, run) -> Done:
        res: TaskResult = result
        inst = node.item
        outcome.finished = time.time()
        outcome.duration = outcome.finished - (outcome.started or outcome.finished)
        if REDACTOR and (res.log or res.error):  # a step that prints its secret does not leak it into logs
            res = dataclasses.replace(res, log=REDACTOR.text(res.log or ""), error=REDACTOR.text(res.error or ""))
        log_hash = None
        if res.log:
            try:
                log_hash = run.project.artifacts.put_bytes(res.log.encode())[0]
            except OSError:
                log_hash = None
        outcome.log = log_hash
        if res.status is TaskStatus.SUCCEEDED:
            if _contract_failed(node, res.outputs, run, outcome):  # before the record: no consumer starts
                return Done(outcome)
            rec = self.record(change, res.outputs, res.metrics, log_hash, outcome.duration, "ran", run.run_id)
            if inst.step.cache:
                run.project.artifacts.runcache_put(change.fingerprint, RunCacheEntry(
                    change.fingerprint, node.address, res.outputs, res.metrics, log_hash, run.run_id,
                    rec["finished"]).to_dict())
            outcome.status, outcome.outputs, outcome.metrics = Status.RAN, res.outputs, res.metrics
            self.materialise(node, res.outputs, run)
            return Done(outcome, rec, outputs={k: v["hash"] for k, v in res.outputs.items()})
        outcome.error = res.error or res.status.value
        if res.status is TaskStatus.CANCELLED:
            outcome.status = Status.CANCELLED
            return Done(outcome)
        if outcome.attempts <= inst.step.retries:
            outcome.status = Status.RETRYING
            return Done(outcome, retry_after=inst.step.backoff * (2 ** (outcome.attempts - 1)))
        outcome.status = Status.FAILED
        outcome.reason = "\n".join((res.log or "").strip().splitlines()[-8:])
        return Done(outcome)

    def cancel_all(self, run) -> None:
        for b in run.backends.values():
            b.cancel_all()

    def verdict_text(self, change: Mapping) -> str:
        if change["actions"][0] == "delete":
            return "destroy (artifacts stay in the store)"
        if change.get("verdict") == Verdict.CHECKOUT.value:
            return "check out from the store"
        return super().verdict_text(change)


KIND = register(StepKind())
