"""A project opened for a command: its Spec and the stores it uses (state, lock, artifacts, hash cache).

Nothing here is global: commands build a Project and pass it (and a Console) to the functions they call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlspec.artifacts import ArtifactStore, RunCacheView
from mlspec.fingerprint import Facts, gather
from mlspec.graph import StepInstance, expand
from mlspec.hashing import HashCache
from mlspec.load import load_spec
from mlspec.lock import StateLock
from mlspec.plan import Plan, make_plan, select_targets
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

    @classmethod
    def open(cls, project_dir: str | Path = ".", spec_file: str | None = None, overrides: Sequence[str] = (),
             *, check_imports: bool = False) -> "Project":
        spec = load_spec(project_dir, spec_file, overrides, check_imports=check_imports)
        st = spec.storage
        loc = Location(st.state, st.options, spec.project_dir)
        return cls(spec=spec, overrides=tuple(overrides), spec_file=spec_file, state_loc=loc,
                   store=StateStore(loc, st.workspace), lock=StateLock(loc, st.workspace),
                   artifacts=ArtifactStore(st.artifacts, st.options, spec.project_dir),
                   cache=HashCache(spec.project_dir / ".mlspec" / "cache" / "hashes.json"))

    @property
    def runs_loc(self) -> Location:
        return self.state_loc.child("runs")

    def read_state(self) -> State:
        return self.store.read(self.spec.project)

    def instances(self) -> list[StepInstance]:
        return expand(self.spec)

    def gather_facts(self, state: State, instances: list[StepInstance], targets: Sequence[str] = ()) -> Facts:
        selected = select_targets(instances, targets) if targets else {i.address for i in instances}
        used = {r.resource.split(".", 1)[1] for i in instances if i.address in selected for r in i.inputs
                if r.kind == "dataset"}
        facts = gather(self.spec, used, cache=self.cache, key=state.fingerprint_key,
                       runcache=RunCacheView(self.artifacts))
        facts.bad_outputs = self.check_outputs(state, selected)
        self.cache.save()
        return facts

    def check_outputs(self, state: State, addresses) -> dict:
        """Recorded outputs that are missing from the store or have the wrong size (a stat each, no reads):
        the plan re-runs their steps. Content is verified whenever an object is read."""
        bad = {}
        for addr in addresses:
            rec = state.resources.get(addr)
            if not rec or rec.get("kind") != "step":
                continue
            for out in (rec.get("outputs") or {}).values():
                if isinstance(out, dict) and isinstance(out.get("hash"), str) and out["hash"] not in bad:
                    problem = self.artifacts.quick_check(out["hash"], out.get("size"))
                    if problem:
                        bad[out["hash"]] = problem
        return bad

    def plan(self, state: State | None = None, targets: Sequence[str] = (), replace: Sequence[str] = (),
             instances: list[StepInstance] | None = None) -> tuple[Plan, State, Facts, list[StepInstance]]:
        state = state if state is not None else self.read_state()
        instances = instances if instances is not None else self.instances()
        facts = self.gather_facts(state, instances, targets)
        return make_plan(self.spec, state, facts, targets=targets, replace=replace, instances=instances), \
            state, facts, instances

    def graph_edges(self, instances: list[StepInstance]) -> list[tuple[str, str]]:
        edges = set()
        for i in instances:
            for r in i.inputs:
                edges.add((r.resource, i.address))
        return sorted(edges)
