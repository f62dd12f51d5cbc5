"""The resource-kind protocol: what a kind of resource (dataset, step, model, ...) implements, and the registry.

The core (planning, the graph, the executor, apply) iterates the registered kinds and never names one. A
kind says:

* **nodes**: its resources in a spec, each with an address and the addresses it consumes (graph edges);
* **gather**: the facts it needs, read with I/O before planning (file hashes, the run-cache, a registry);
* **decide**: a *pure* function from (node, recorded state, facts, what upstream produced) to a
  :class:`Change`: the action, the verdict, typed reasons, and the outputs when they are known;
* **start** / **finish**: how a change is carried out at apply. ``start`` either finishes at once
  (:class:`Done`: a dataset is read, a step restored from the run-cache) or asks the executor for a slot in
  a pool and submits work (:class:`Submit`: a step on a backend); ``finish`` turns the work's result into
  a :class:`Done` (or asks for a retry);
* **removed** / **destroy**: the change and the action for a recorded resource that left the spec;
* its **record**: the plain dict journaled to the state (see mlspec.records for their schemas).

Adding a kind is one module: subclass :class:`ResourceKind`, set ``name``, implement ``nodes`` and
``decide`` (and ``start`` when it does something at apply), and :func:`register` it. docs/architecture.md
("Adding a resource kind") walks through one; tests/test_kinds.py defines one in the test itself and
plans, applies, graphs, journals and recovers it.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from mlspec.core.frozen import fast_init
from mlspec.core.types import Action, Reason, ReasonCode, Status, Verdict


@fast_init
@dataclass(frozen=True)
class Node:
    """One resource of a spec: its address, kind, the addresses it consumes, and the kind's own object."""

    address: str
    kind: str
    upstream: tuple = ()
    item: Any = None


@fast_init
@dataclass(frozen=True)
class Change:
    """The decision about one resource: pure data, planned and re-decided at apply when upstream is known."""

    address: str
    kind: str
    action: Action
    verdict: Verdict = Verdict.NONE
    reasons: tuple = ()
    fingerprint: str | None = None
    outputs: Mapping | None = None  # output name -> content hash, when known (None: known after apply)
    before: Mapping | None = None  # what the plan shows of the recorded resource
    after: Mapping | None = None  # ... and of the desired one
    forced: bool = False  # --replace named it
    detail: Any = None  # the kind's own data for start() (facts, sources, ...); not shown

    @property
    def changed(self) -> bool:
        return self.action is not Action.NOOP

    def to_dict(self) -> dict:
        # str enums: JSON writes their values (and .value costs ~5 us an access on Python 3.11)
        return {"address": self.address, "kind": self.kind, "actions": [self.action],
                "verdict": self.verdict or None, "reasons": [r.to_dict() for r in self.reasons],
                "fingerprint": self.fingerprint, "before": self.before, "after": self.after}


@dataclass
class Outcome:
    """What happened to one resource in an apply (run records, events)."""

    address: str
    status: Status
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
        d = dict(self.__dict__)
        d["status"] = self.status.value
        return d


@dataclass
class Done:
    """A change carried out: the outcome, the record to journal (None with ``remove``: forget the address)."""

    outcome: Outcome
    record: dict | None = None
    remove: bool = False
    outputs: Mapping | None = None  # output name -> hash, for downstream decisions
    retry_after: float | None = None  # seconds: try again (the outcome's status is RETRYING)


@dataclass
class Submit:
    """Work that needs a slot: ``pool`` names the capacity it uses (a backend), ``slots`` how much of it."""

    pool: str
    slots: int
    submit: Callable[[], Any]  # -> a Future whose result finish() receives
    outcome: Outcome
    capacity: int = 1  # the pool's size (a backend's parallel slots)


class ResourceKind:
    """Base class with the shared defaults; a kind overrides what it does differently."""

    name: str = ""
    #: planning order among kinds with no edges between them (lower first); edges always win
    order: int = 50
    #: False: planned only when a planned resource consumes it (datasets)
    standalone: bool = True
    #: whether the core manages it at apply (False: validated and graphed only, the plan says so)
    managed: bool = True

    # --- the graph ------------------------------------------------------------------------------
    def nodes(self, spec) -> list[Node]:
        return []

    def edges_for_graph(self, spec, nodes_by_address: Mapping[str, Node]) -> Iterable[tuple[str, str]]:
        """Extra edges `mlspec graph` shows (the default: each node's upstream)."""
        return ()

    # --- planning -------------------------------------------------------------------------------
    def gather(self, spec, nodes: list[Node], state, ctx, facts) -> None:
        """Read what decide() needs (I/O allowed) into ``facts``."""

    def decide(self, node: Node, record: Mapping | None, facts, known: Mapping, forced: bool) -> Change:
        raise TypeError(f"resource kind '{self.name}' does not implement decide()")

    def removed(self, address: str, record: Mapping) -> Change | None:
        """The change for a recorded resource no longer in the spec (None: keep it, say nothing)."""
        return Change(address, self.name, Action.DELETE, Verdict.NONE, (Reason(ReasonCode.REMOVED),),
                      None, None, {"fingerprint": record.get("fingerprint")}, None)

    # --- applying -------------------------------------------------------------------------------
    def start(self, node: Node, change: Change, run) -> Done | Submit:
        """Carry out a change (or submit it). The default records nothing and succeeds."""
        return Done(Outcome(node.address, Status.RAN, change.verdict.value), None, outputs=change.outputs or {})

    def finish(self, node: Node, change: Change, result: Any, outcome: Outcome, run) -> Done:
        raise TypeError(f"resource kind '{self.name}' submitted work but does not implement finish()")

    def destroy(self, address: str, record: Mapping, run) -> Done:
        """Remove a resource that left the spec: the default forgets its record (artifacts stay)."""
        return Done(Outcome(address, Status.DESTROYED), None, remove=True)

    def cancel_all(self, run) -> None:
        """Ctrl-C: stop everything this kind submitted."""

    def begin(self, run, changes: list) -> None:
        """The apply starts executing; ``changes``: this kind's changes it will carry out. A kind may start
        slow preparations here (the deployment kind starts its services' workers importing); best effort, and
        ``end`` undoes what no ``start`` took."""

    def end(self, run) -> None:
        """The apply's execution is over (finished, failed or interrupted)."""

    # --- views ----------------------------------------------------------------------------------
    def verdict_text(self, change: Mapping) -> str:
        """The words after the address in the text plan (``change`` is the plan's JSON form)."""
        action, verdict = change["actions"][0], change.get("verdict")
        if action == "delete":
            return "destroy"
        if action == "no-op":
            return "up to date"
        if action == "read":
            return "read"
        return {"run": "run", "restore": "restore from run-cache", "known after apply": "(known after apply)"}.get(
            verdict or "", verdict or action)


_REGISTRY: dict[str, ResourceKind] = {}


def register(kind: ResourceKind) -> ResourceKind:
    """Add a kind (an instance) to the registry; a later registration of the same name replaces it."""
    if not kind.name:
        raise ValueError("a resource kind needs a name")
    _REGISTRY[kind.name] = kind
    return kind


def kinds() -> list[ResourceKind]:
    """Registered kinds, in planning order."""
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda k: (k.order, k.name))


def kind(name: str) -> ResourceKind:
    _load_builtin()
    return _REGISTRY[name]


def known_kind(name: str) -> bool:
    _load_builtin()
    return name in _REGISTRY


_PLUGINS_LOADED: list = []


def _load_builtin() -> None:
    """The built-in kinds, then plugins of the ``mlspec.kinds`` entry-point group (each a ResourceKind class
    or instance), once per process."""
    import mlspec.kinds  # noqa: F401  (registers the built-in kinds)

    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED.append(True)
    from mlspec.errors import MlspecError
    from mlspec.plugins import entry_points_of

    for ep in entry_points_of("mlspec.kinds"):
        try:
            obj = ep.load()
            register(obj() if isinstance(obj, type) else obj)
        except Exception as exc:  # a broken plugin is the user's to fix, not a crash
            raise MlspecError(f"the resource-kind plugin '{ep.name}' ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}",
                              hint="reinstall or uninstall the package that provides it") from None


def all_nodes(spec) -> list[Node]:
    """Every node of every kind, in a deterministic topological order: a node comes after what it consumes;
    among ready nodes, kinds in planning order, then each kind's own order."""
    nodes: list[Node] = []
    for k in kinds():
        nodes.extend(k.nodes(spec))
    return topo_order(nodes)


def topo_order(nodes: list[Node]) -> list[Node]:
    seen: set = set()
    for n in nodes:  # kinds return their nodes in order, edges pointing back: usually nothing to sort
        if any(u not in seen for u in n.upstream):
            break
        seen.add(n.address)
    else:
        return list(nodes)
    by_addr = {n.address: n for n in nodes}
    rank = {n.address: i for i, n in enumerate(nodes)}  # kinds in order, then each kind's own order
    waiting = {n.address: {u for u in n.upstream if u in by_addr} for n in nodes}
    dependents: dict[str, list] = {}
    for a, ups in waiting.items():
        for u in ups:
            dependents.setdefault(u, []).append(a)
    ready = sorted((a for a, ups in waiting.items() if not ups), key=rank.__getitem__)
    out: list[Node] = []
    import heapq

    heap = [(rank[a], a) for a in ready]
    heapq.heapify(heap)
    while heap:
        _r, a = heapq.heappop(heap)
        out.append(by_addr[a])
        for d in dependents.get(a, ()):
            w = waiting[d]
            w.discard(a)
            if not w:
                heapq.heappush(heap, (rank[d], d))
    if len(out) != len(nodes):  # validation refuses cycles; name one if a kind made one anyway
        ts = graphlib.TopologicalSorter({a: ups for a, ups in waiting.items() if ups})
        try:
            ts.prepare()
        except graphlib.CycleError as exc:
            raise ValueError("cycle: " + " -> ".join(exc.args[1])) from None
    return out


def closure(nodes: list[Node], wanted: set) -> set:
    """``wanted`` plus everything it consumes, transitively."""
    by_addr = {n.address: n for n in nodes}
    out = set(wanted)
    todo = list(wanted)
    while todo:
        n = by_addr.get(todo.pop())
        if n is None:
            continue
        for u in n.upstream:
            if u not in out and u in by_addr:
                out.add(u)
                todo.append(u)
    return out
