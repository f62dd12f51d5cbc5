"""A project opened for a command: its Spec and the stores it uses (state, lock, artifacts, hash cache).

Nothing here is global: commands build a Project and pass it (and a Console) to the functions they call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlspec.artifacts import ArtifactStore, RunCacheView
from mlspec.core.kind import Node, all_nodes, kinds
from mlspec.fingerprint import Facts
from mlspec.graph import StepInstance, expand
from mlspec.hashing import HashCache
from mlspec.load import Verdict, load_spec_deferred, settle
from mlspec.lock import StateLock, lease_seconds
from mlspec.plan import Plan, make_plan, select
from mlspec.spec import Spec
from mlspec.state import State, StateStore
from mlspec.storage import Location


@dataclass
class Project:
    spec: Spec
    overrides: tuple
    spec_file: str | None
    state_loc: Location
    store: StateStore
    lock: StateLock
    artifacts: ArtifactStore
    cache: HashCache

    verdict: Verdict | None = None  # with open(defer_validation=True): call valid() before acting on the spec

    @classmethod
    def open(cls, project_dir: str | Path = ".", spec_file: str | None = None, overrides: Sequence[str] = (),
             *, check_imports: bool = False, defer_validation: bool = False) -> "Project":
        """The project; with ``defer_validation`` a large spec is still being validated (mlspec.load.Verdict):
        only pure work (its graph) may happen before :meth:`valid`."""
        spec, verdict = load_spec_deferred(project_dir, spec_file, overrides, check_imports=check_imports,
                                           defer=defer_validation)
        st = spec.storage
        loc = Location(st.state, st.options, spec.project_dir)
        return cls(spec=spec, overrides=tuple(overrides), spec_file=spec_file, state_loc=loc,
                   store=StateStore(loc, st.workspace),
                   lock=StateLock(loc, st.workspace, None if loc.local else lease_seconds(st.lock_lease)),
                   artifacts=ArtifactStore(st.artifacts, st.options, spec.project_dir),
                   cache=HashCache(spec.project_dir / ".mlspec" / "cache" / "hashes.json"), verdict=verdict)

    def valid(self) -> None:
        """Wait for a deferred validation: SpecError when the spec is invalid."""
        if self.verdict is not None:
            self.verdict.wait()

    def nodes_then_valid(self) -> list[Node]:
        """:meth:`nodes` built while the spec is validated, then the verdict (an invalid spec's problems
        are reported rather than whatever building its graph ran into)."""
        try:
            nodes = self.nodes()
        except BaseException:
            if self.verdict is not None:
                settle(self.verdict)
            raise
        self.valid()
        return nodes

    @property
    def runs_loc(self) -> Location:
        return self.state_loc.child("runs")

    def read_state(self) -> State:
        return self.store.read(self.spec.project)

    def nodes(self) -> list[Node]:
        """Every resource of every kind, in topological order."""
        return all_nodes(self.spec)

    def instances(self) -> list[StepInstance]:
        return expand(self.spec)

    def gather_facts(self, state: State, nodes: list[Node], targets: Sequence[str] = ()) -> Facts:
        """Each kind reads what its planned resources need (I/O happens here, never in make_plan)."""
        selected = select(nodes, targets)
        facts = Facts(runcache=RunCacheView(self.artifacts), selected=(tuple(targets), selected))
        by_kind: dict = {}
        for n in nodes:
            if n.address in selected:
                by_kind.setdefault(n.kind, []).append(n)
        for k in kinds():
            mine = by_kind.get(k.name)
            if mine:
                k.gather(self.spec, mine, state, self, facts)
        self.cache.save()
        return facts

    def plan(self, state: State | None = None, targets: Sequence[str] = (), replace: Sequence[str] = (),
             nodes: list[Node] | None = None) -> tuple[Plan, State, Facts, list[Node]]:
        state = state if state is not None else self.read_state()
        nodes = nodes if nodes is not None else self.nodes()
        facts = self.gather_facts(state, nodes, targets)
        return make_plan(self.spec, state, facts, targets=targets, replace=replace, nodes=nodes), state, facts, nodes

    def graph_edges(self, nodes: list[Node]) -> list[tuple[str, str]]:
        return sorted({(u, n.address) for n in nodes for u in n.upstream})
