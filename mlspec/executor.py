"""The executor: one scheduling loop over the ready set of the plan's resources, of every kind.

A resource becomes ready when everything it consumes in this apply is settled. Its kind decides again (now
that upstream outputs are known) and carries the change out: at once (a dataset read, a restore) or as work
in a pool (a step on a backend), taking as many of the pool's slots as it needs. Each finished resource is
journaled beside the state at once, so a crash loses nothing finished. The executor never names a kind;
it reports typed events (mlspec.core.types.EventKind) to a hook.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Callable

from mlspec import __version__
from mlspec.core.kind import Change, Done, Node, Outcome, Submit, kind, kinds
from mlspec.core.types import Action, EventKind, Status

POLL = 0.5  # seconds between checks when waiting for retries only


class Interrupted(Exception):
    pass


class Run:
    """What a kind sees while it applies: the project, the state being built, this run's id, backends."""

    def __init__(self, project, state, facts, run_id: str, emit: Callable[[EventKind, Outcome], None], *,
                 parallelism: int | None = None, backends: dict | None = None):
        from mlspec.load import code_paths

        self.project, self.state, self.facts, self.run_id, self.emit = project, state, facts, run_id, emit
        self.spec = project.spec
        self.parallelism = parallelism
        self.backends = backends if backends is not None else {}
        self.outcomes: dict[str, Outcome] = {}
        self.code_paths = code_paths(self.spec.project_dir)
        self.mlspec_version = __version__
        self._started: set = set()
        self._capacity: dict = {}

    def backend_for(self, step):
        cfg = self.spec.backend_for(step)
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

    def new_pass(self) -> None:
        """A new scheduling pass: ask backends for their capacity again."""
        self._capacity.clear()

    def warn(self, address: str, message: str) -> None:
        self.emit(EventKind.WARNING, Outcome(address, Status.NOT_RUN, reason=message))


class Executor:
    def __init__(self, run: Run, nodes: list[Node], selected: set, changes: dict[str, Change], *,
                 fail_fast: bool = False):
        """``changes``: the plan's changes by address (forced flags and deletions come from there)."""
        self.run = run
        self.nodes = [n for n in nodes if n.address in selected]
        self.by_addr = {n.address: n for n in self.nodes}
        self.order = {n.address: i for i, n in enumerate(self.nodes)}
        self.planned = changes
        self.fail_fast = fail_fast
        self.outcomes = run.outcomes
        self.known: dict = {}
        self.store = run.project.store
        self.seq = self.store.next_seq()
        self.journaled = 0
        self._waiting = {n.address: {u for u in n.upstream if u in self.by_addr} for n in self.nodes}
        self._dependents: dict[str, list] = {}
        for a, ups in self._waiting.items():
            for u in ups:
                self._dependents.setdefault(u, []).append(a)
        self._ready = {a for a, ups in self._waiting.items() if not ups}
        self._decisions: dict[str, Change] = {}
        self._work: dict[str, Submit] = {}

    # --- helpers --------------------------------------------------------------------------------
    def emit(self, event: EventKind, oc: Outcome) -> None:
        self.run.emit(event, oc)

    def mark_known(self, address: str, outputs) -> None:
        self.known[address] = outputs
        for d in self._dependents.get(address, ()):
            waiting = self._waiting[d]
            waiting.discard(address)
            if not waiting:
                self._ready.add(d)

    def journal(self, address: str, record: dict | None) -> None:
        self.store.append(self.run.state, self.seq, address, record)
        self.seq += 1
        self.journaled += 1

    def settle(self, address: str, done: Done, event: EventKind) -> None:
        if done.record is not None or done.remove:
            self.journal(address, None if done.remove else done.record)
        self.outcomes[address] = done.outcome
        if address in self.by_addr:
            self.mark_known(address, dict(done.outputs or {}))
        self.emit(event, done.outcome)

    def skip_descendants(self, address: str, why: str, pending: dict) -> None:
        todo = [address]
        while todo:
            cur = todo.pop()
            for a in list(pending):
                if cur in self.by_addr[a].upstream:
                    pending.pop(a)
                    oc = Outcome(a, Status.SKIPPED, reason=f"upstream {address} {why}")
                    self.outcomes[a] = oc
                    self.emit(EventKind.SKIPPED, oc)
                    todo.append(a)

    def destroy(self) -> None:
        """Resources the plan removes: each kind forgets (or tears down) its own."""
        for addr, ch in sorted(self.planned.items()):
            if ch.action is Action.DELETE:
                rec = self.run.state.resources.get(addr) or {}
                self.settle(addr, kind(ch.kind).destroy(addr, rec, self.run), EventKind.DESTROYED)

    # --- the loop -------------------------------------------------------------------------------
    def execute(self) -> dict[str, Outcome]:
        """Begin every kind (slow preparations may start now), run, end every kind whatever happened."""
        try:
            for k in kinds():
                k.begin(self.run, [ch for a, ch in sorted(self.planned.items()) if ch.kind == k.name
                                   and a in self.by_addr])
            return self._execute()
        finally:
            for k in kinds():
                k.end(self.run)

    def _execute(self) -> dict[str, Outcome]:
        self.destroy()
        pending = {n.address: n for n in self.nodes}
        running: dict = {}  # future -> (node, change, submit)
        used: dict[str, int] = {}
        retry_at: dict[str, float] = {}
        stop = False
        try:
            while pending or running:
                progressed = False
                self.run.new_pass()
                if not stop:
                    full: set = set()
                    for addr in sorted(self._ready & pending.keys(), key=self.order.__getitem__):
                        if addr in retry_at and retry_at[addr] > time.monotonic():
                            continue
                        node = pending[addr]
                        k = kind(node.kind)
                        ch = self._decisions.get(addr)
                        if ch is None:  # upstream outputs are final now: decide once
                            planned = self.planned.get(addr)
                            ch = self._decisions[addr] = k.decide(
                                node, self.run.state.resources.get(addr), self.run.facts, self.known,
                                bool(planned and planned.forced))
                        if ch.action is Action.NOOP:
                            pending.pop(addr)
                            oc = Outcome(addr, Status.UP_TO_DATE, ch.verdict.value, fingerprint=ch.fingerprint)
                            self.settle(addr, Done(oc, None, outputs=ch.outputs), EventKind.UP_TO_DATE)
                            progressed = True
                            continue
                        work = self._work.get(addr)
                        if work is None:
                            work = k.start(node, ch, self.run)
                            if isinstance(work, Done):
                                pending.pop(addr)
                                self._finished(node, ch, work, pending, retry_at)
                                progressed = True
                                continue
                            self._work[addr] = work
                        if work.pool in full:
                            continue
                        if used.get(work.pool, 0) + work.slots > work.capacity:
                            if used.get(work.pool, 0) >= work.capacity:
                                full.add(work.pool)
                            continue
                        pending.pop(addr)
                        retry_at.pop(addr, None)
                        del self._work[addr]
                        fut = work.submit()
                        used[work.pool] = used.get(work.pool, 0) + work.slots
                        running[fut] = (node, ch, work)
                        self.outcomes[addr] = work.outcome
                        self.emit(EventKind.STARTED, work.outcome)
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
                    node, ch, work = running.pop(fut)
                    used[work.pool] -= work.slots
                    result = self._result(fut)
                    final = self._finished(node, ch, kind(node.kind).finish(node, ch, result, work.outcome, self.run),
                                           pending, retry_at)
                    if final and self.fail_fast and work.outcome.status is Status.FAILED:
                        stop = True
                        for k in kinds():
                            k.cancel_all(self.run)
        except KeyboardInterrupt:
            for k in kinds():
                k.cancel_all(self.run)
            for fut, (node, ch, work) in list(running.items()):
                try:
                    result = fut.result(timeout=10)
                except Exception:  # noqa: BLE001 - the resource is being cancelled anyway
                    result = None
                done = kind(node.kind).finish(node, ch, result, work.outcome, self.run) if result is not None else None
                if done is not None and done.outcome.status in (Status.RAN, Status.RESTORED):
                    self._finished(node, ch, done, {}, {})  # finished just before the interrupt: keep it
                else:
                    work.outcome.status, work.outcome.error = Status.CANCELLED, "interrupted"
                    work.outcome.finished = time.time()
                    self.emit(EventKind.CANCELLED, work.outcome)
            for addr in pending:
                self.outcomes.setdefault(addr, Outcome(addr, Status.NOT_RUN, reason="interrupted"))
            raise Interrupted() from None
        for addr in pending:
            self.outcomes.setdefault(addr, Outcome(addr, Status.NOT_RUN, reason="stopped by --fail-fast"))
        return self.outcomes

    @staticmethod
    def _result(fut):
        try:
            return fut.result()
        except Exception as exc:  # a backend failure is the resource's failure, never a crash
            from mlspec.backends.api import TaskResult, TaskStatus

            return TaskResult(TaskStatus.FAILED, error=f"backend error: {type(exc).__name__}: {exc}")

    def _finished(self, node: Node, ch: Change, done: Done, pending: dict, retry_at: dict) -> bool:
        """Settle a finished piece of work; False when it will be retried."""
        addr = node.address
        st = done.outcome.status
        if st is Status.RETRYING:
            retry_at[addr] = time.monotonic() + (done.retry_after or 0)
            pending[addr] = node
            self.outcomes[addr] = done.outcome
            self.emit(EventKind.RETRIED, done.outcome)
            return False
        if st is Status.FAILED:
            if done.record is not None:  # a failure that is itself recorded (a model version rejected by its gates)
                self.journal(addr, done.record)
            self.outcomes[addr] = done.outcome
            self.emit(EventKind.FAILED, done.outcome)
            self.skip_descendants(addr, "failed", pending)
            return True
        if st is Status.CANCELLED:
            self.outcomes[addr] = done.outcome
            self.emit(EventKind.CANCELLED, done.outcome)
            return True
        event = {Status.RESTORED: EventKind.RESTORED, Status.READ: EventKind.READ, Status.CHECKED_OUT: EventKind.CHECKED_OUT,
                 Status.DESTROYED: EventKind.DESTROYED}.get(st, EventKind.FINISHED)
        self.settle(addr, done, event)
        return True
