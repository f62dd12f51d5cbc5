"""The executor: one scheduling loop over the graph's ready set; backends supply capacity and execution.

Each finished step is journaled at once (one small atomic write), so a crash, kill or Ctrl-C loses
nothing finished and the next apply runs only what remains. A step's verdict is decided when it becomes
ready, with its upstream outputs known: a re-run step whose outputs did not change leaves its descendants
up to date (early cut-off), and a fingerprint seen before is restored from the run-cache without running.
"""

from __future__ import annotations

import dataclasses

import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from typing import Callable

from mlspec.backends.api import Task, TaskResult, TaskStatus
from mlspec.graph import StepInstance
from mlspec.plan import Verdict, decide
from mlspec.sensitive import REDACTOR
from mlspec.spec import Secret

POLL = 0.5


@dataclass
class StepOutcome:
    address: str
    status: str  # ran | restored | up-to-date | failed | skipped | cancelled | not-run
    verdict: str = ""
    started: float | None = None
    finished: float | None = None
    duration: float = 0.0
    attempts: int = 0
    fingerprint: str | None = None
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    error: str = ""
    log: str | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Interrupted(Exception):
    pass


class Executor:
    def __init__(self, project, state, facts, instances: list[StepInstance], selected: set, forced: set,
                 run_id: str, emit: Callable[[str, StepOutcome], None], *, parallelism: int | None = None,
                 fail_fast: bool = False, backends: dict | None = None):
        self.project, self.state, self.facts = project, state, facts
        self.spec = project.spec
        self.instances = [i for i in instances if i.address in selected]
        self.by_addr = {i.address: i for i in self.instances}
        self.order = {i.address: n for n, i in enumerate(self.instances)}
        self.forced, self.run_id, self.emit = forced, run_id, emit
        self.parallelism, self.fail_fast = parallelism, fail_fast
        self.backends = backends if backends is not None else {}
        self._started: set = set()
        self._capacity: dict = {}
        self.outcomes: dict[str, StepOutcome] = {}
        self.known: dict[str, dict | None] = {}
        self.seq = project.store.next_seq()
        self.journaled = 0
        from mlspec.load import code_paths

        self.code_paths = code_paths(self.spec.project_dir)
        # ready set: a step becomes ready when every upstream step in this apply has known outputs
        self._waiting = {i.address: {u for u in i.upstream if u in self.by_addr} for i in self.instances}
        self._dependents: dict[str, list] = {}
        for a, ups in self._waiting.items():
            for u in ups:
                self._dependents.setdefault(u, []).append(a)
        self._ready = {a for a, ups in self._waiting.items() if not ups}
        self._decisions: dict = {}

    # --- helpers --------------------------------------------------------------------------------
    def mark_known(self, address: str, outputs: dict | None) -> None:
        self.known[address] = outputs
        for d in self._dependents.get(address, ()):
            waiting = self._waiting[d]
            waiting.discard(address)
            if not waiting:
                self._ready.add(d)

    def journal(self, address: str, record: dict | None) -> None:
        self.project.store.append(self.state, self.seq, address, record)
        self.seq += 1
        self.journaled += 1

    def backend_for(self, inst: StepInstance):
        cfg = self.spec.backend_for(inst.step)
        if cfg.name not in self.backends:
            from mlspec.preflight import make_backend

            self.backends[cfg.name] = make_backend(self.project, cfg)
        if cfg.name not in self._started:
            self.backends[cfg.name].start()
            self._started.add(cfg.name)
        return cfg.name, self.backends[cfg.name]

    def capacity(self, name: str, backend) -> int:
        """Slots of a backend, asked once per scheduling pass (a cluster's answer can be a network call)."""
        if name not in self._capacity:
            self._capacity[name] = self.parallelism or backend.capacity()
        return self._capacity[name]

    def payload(self, inst: StepInstance) -> dict:
        spec = self.spec
        inputs = {}
        for ref in inst.inputs:
            if ref.kind == "dataset":
                ds = spec.datasets[ref.resource.split(".", 1)[1]]
                uri = ds.uri
                if "://" not in uri and not uri.startswith("/"):
                    uri = str(spec.project_dir / uri)
                inputs[ref.name] = {"path": uri, "format": ds.format, "options": dict(ds.options)}
            else:
                rec = self.state.resources[ref.resource]
                out = rec["outputs"][ref.output]
                inputs[ref.name] = {"hash": out["hash"], "format": out.get("format", "auto"),
                                    "from": f"{ref.resource}.{ref.output}"}
        params = {k: (str.__str__(v) if isinstance(v, Secret) else v) for k, v in inst.params.items()}
        return {"address": inst.address, "run": inst.step.run, "cmd": inst.step.cmd, "params": params,
                "inputs": inputs, "outputs": list(inst.step.outputs), "metrics": list(inst.step.metrics),
                "project_dir": str(spec.project_dir), "code_paths": list(self.code_paths),
                "artifacts": {"url": self.project.artifacts.url, "options": dict(spec.storage.options)},
                "env": dict(inst.step.env), "external_paths": list(inst.step.external_paths)}

    def record(self, inst, d, outputs: dict, metrics: dict, log_hash: str | None, duration: float,
               verdict: str) -> dict:
        return {"kind": "step", "status": "succeeded", "fingerprint": d.fingerprint,
                "facts": dict(d.facts, sources=d.sources), "outputs": outputs, "metrics": metrics,
                "run_id": self.run_id, "log": log_hash, "duration": round(duration, 4), "verdict": verdict,
                "finished": round(time.time(), 3)}

    def skip_descendants(self, address: str, why: str, pending: dict) -> None:
        todo = [address]
        while todo:
            cur = todo.pop()
            for a in list(pending):
                if cur in self.by_addr[a].upstream:
                    pending.pop(a)
                    oc = StepOutcome(a, "skipped", reason=f"upstream {address} {why}")
                    self.outcomes[a] = oc
                    self.emit("skip", oc)
                    todo.append(a)

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, StepOutcome]:
        pending = {i.address: i for i in self.instances}
        running: dict = {}  # future -> (inst, decision, backend name, slots, outcome)
        used: dict[str, int] = {}
        retry_at: dict[str, float] = {}
        stop = False
        try:
            while pending or running:
                progressed = False
                self._capacity.clear()
                if not stop:
                    full: set = set()
                    for addr in sorted(self._ready & pending.keys(), key=self.order.__getitem__):
                        inst = pending[addr]
                        if addr in retry_at and retry_at[addr] > time.monotonic():
                            continue
                        d = self._decisions.get(addr)
                        if d is None:  # upstream outputs are final now: decide once
                            record = self.state.resources.get(addr)
                            d = self._decisions[addr] = decide(inst, record, self.facts, self.known,
                                                               forced=addr in self.forced)
                        if d.verdict is Verdict.UP_TO_DATE:
                            pending.pop(addr)
                            self.mark_known(addr, d.outputs)
                            oc = StepOutcome(addr, "up-to-date", d.verdict.value, fingerprint=d.fingerprint)
                            self.outcomes[addr] = oc
                            self.emit("uptodate", oc)
                            progressed = True
                            continue
                        if d.verdict is Verdict.RESTORE and not self.restorable(addr, d):
                            d = self._decisions[addr] = dataclasses.replace(d, verdict=Verdict.RUN, outputs=None)
                        if d.verdict is Verdict.RESTORE:
                            pending.pop(addr)
                            hit = self.facts.runcache.get(d.fingerprint)
                            rec = self.record(inst, d, hit["outputs"], hit.get("metrics", {}), hit.get("log"), 0.0,
                                              "restored")
                            self.journal(addr, rec)
                            self.mark_known(addr, {k: v["hash"] for k, v in hit["outputs"].items()})
                            oc = StepOutcome(addr, "restored", d.verdict.value, fingerprint=d.fingerprint,
                                             inputs=d.facts["inputs"], outputs=hit["outputs"],
                                             metrics=hit.get("metrics", {}), log=hit.get("log"))
                            self.outcomes[addr] = oc
                            self.emit("restored", oc)
                            progressed = True
                            continue
                        bname = self.spec.backend_for(inst.step).name
                        if bname in full:
                            continue
                        bname, backend = self.backend_for(inst)
                        cap = self.capacity(bname, backend)
                        slots = Task.slots_for(inst.step.resources.cpus, cap)
                        if used.get(bname, 0) + slots > cap:
                            if used.get(bname, 0) >= cap:
                                full.add(bname)
                            continue
                        task = Task(f"{self.run_id}:{addr}:{retry_at.get(addr, 0)}", addr, self.payload(inst),
                                    inst.step.resources.to_dict(), inst.step.timeout)
                        pending.pop(addr)
                        retry_at.pop(addr, None)
                        prev = self.outcomes.get(addr)
                        oc = StepOutcome(addr, "running", d.verdict.value, started=time.time(),
                                         attempts=(prev.attempts if prev else 0) + 1, fingerprint=d.fingerprint,
                                         inputs=d.facts["inputs"])
                        self.outcomes[addr] = oc
                        fut = backend.submit(task)
                        used[bname] = used.get(bname, 0) + slots
                        running[fut] = (inst, d, bname, slots, oc)
                        self.emit("start", oc)
                        progressed = True
                if not running:
                    if stop or not pending:
                        break
                    if not progressed:
                        waits = [t - time.monotonic() for t in retry_at.values()]
                        if waits:
                            time.sleep(max(min(waits), 0.01))
                            continue
                        break  # nothing can start: should not happen with a valid graph
                    continue
                done, _ = wait(list(running), timeout=POLL, return_when=FIRST_COMPLETED)
                for fut in done:
                    inst, d, bname, slots, oc = running.pop(fut)
                    used[bname] -= slots
                    try:
                        res: TaskResult = fut.result()
                    except Exception as exc:  # a backend failure is a step failure, never a crash
                        res = TaskResult(TaskStatus.FAILED, error=f"backend error: {type(exc).__name__}: {exc}")
                    if self.finish(inst, d, res, oc, pending, retry_at):
                        if self.fail_fast and oc.status in ("failed",):
                            stop = True
                            for b in self.backends.values():
                                b.cancel_all()
        except KeyboardInterrupt:
            for b in self.backends.values():
                b.cancel_all()
            for fut, (inst, d, bname, slots, oc) in list(running.items()):
                try:
                    res = fut.result(timeout=10)
                except Exception:  # noqa: BLE001 - the step is being cancelled anyway
                    res = TaskResult(TaskStatus.CANCELLED, error="cancelled")
                if res.status is TaskStatus.SUCCEEDED:  # finished just before the interrupt: keep it
                    self.finish(inst, d, res, oc, {}, {})
                else:
                    oc.status, oc.error, oc.finished = "cancelled", "interrupted", time.time()
                    self.emit("cancelled", oc)
            for addr in pending:
                self.outcomes.setdefault(addr, StepOutcome(addr, "not-run", reason="interrupted"))
            raise Interrupted() from None
        for addr in pending:
            self.outcomes.setdefault(addr, StepOutcome(addr, "not-run", reason="stopped by --fail-fast"))
        return self.outcomes

    def restorable(self, addr: str, d) -> bool:
        """Verify the content of every output a restore would record; a corrupt one is quarantined (by
        ArtifactStore.verify's caller here) and the step runs instead of being restored."""
        hit = self.facts.runcache.get(d.fingerprint)
        if not hit:
            return False
        for name, o in sorted(hit["outputs"].items()):
            problem = self.project.artifacts.verify(o["hash"], o.get("size"))
            if problem:
                self.project.artifacts.quarantine(o["hash"])
                self.project.artifacts.runcache_drop(d.fingerprint)
                self.emit("warning", StepOutcome(addr, "warning", reason=(
                    f"run-cache output {name} ({o['hash']}) is {problem}: quarantined; running the step instead")))
                return False
        return True

    def finish(self, inst, d, res: TaskResult, oc: StepOutcome, pending: dict, retry_at: dict) -> bool:
        """Handle a finished task; returns True when the step is final (not retried)."""
        addr = inst.address
        oc.finished = time.time()
        oc.duration = oc.finished - (oc.started or oc.finished)
        if REDACTOR and (res.log or res.error):  # a step that prints its secret does not leak it into logs
            res = dataclasses.replace(res, log=REDACTOR.text(res.log or ""), error=REDACTOR.text(res.error or ""))
        log_hash = None
        if res.log:
            try:
                log_hash = self.project.artifacts.put_bytes(res.log.encode())[0]
            except OSError:
                log_hash = None
        oc.log = log_hash
        if res.status is TaskStatus.SUCCEEDED:
            rec = self.record(inst, d, res.outputs, res.metrics, log_hash, oc.duration, "ran")
            self.journal(addr, rec)
            if inst.step.cache:
                self.project.artifacts.runcache_put(d.fingerprint, {
                    "fingerprint": d.fingerprint, "address": addr, "outputs": res.outputs, "metrics": res.metrics,
                    "log": log_hash, "run_id": self.run_id, "finished": rec["finished"]})
            self.mark_known(addr, {k: v["hash"] for k, v in res.outputs.items()})
            oc.status, oc.outputs, oc.metrics = "ran", res.outputs, res.metrics
            self.emit("done", oc)
            return True
        oc.error = res.error or res.status.value
        if res.status is TaskStatus.CANCELLED:
            oc.status = "cancelled"
            self.emit("cancelled", oc)
            return True
        if oc.attempts <= inst.step.retries:
            delay = inst.step.backoff * (2 ** (oc.attempts - 1))
            retry_at[addr] = time.monotonic() + delay
            pending[addr] = inst
            oc.status = "retrying"
            self.emit("retry", oc)
            return False
        oc.status = "failed"
        tail = [ln for ln in (res.log or "").strip().splitlines()[-8:]]
        oc.reason = "\n".join(tail)
        self.emit("fail", oc)
        self.skip_descendants(addr, "failed", pending)
        return True
