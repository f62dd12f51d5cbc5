"""Monitors and triggers: declared, validated and graphed; not yet managed at apply (models are
mlspec.kinds.model, deployments mlspec.kinds.deployment).

Each is a kind on the same protocol as datasets and steps (mlspec.core.kind) with ``managed = False``: its
nodes and edges are part of the graph (`mlspec graph`), and the plan notes that they are not acted on yet.
The issues that make them real replace these with full modules (kinds/model.py, ...), one per kind.
"""

from __future__ import annotations

from mlspec.core.kind import Node, ResourceKind, register


def _step_instances(spec, ref: str) -> tuple:
    """The step instances an address such as ``step.train.model`` or ``step.train[C=1].model`` names."""
    from mlspec.addresses import parse_address

    try:
        a = parse_address(ref)
    except ValueError:
        return ()
    if a.kind == "dataset":
        return (a.resource,)
    if a.kind != "step" or a.name not in spec.steps:
        return ()
    if a.selector:
        return (a.resource,)
    return tuple(_by_step(spec).get(a.name, ()))


_LAST: list = [None, None]  # (spec, step name -> instance addresses): one expansion per spec


def _by_step(spec) -> dict:
    if _LAST[0] is not spec:
        from mlspec.graph import expand

        by: dict = {}
        for inst in expand(spec):
            by.setdefault(inst.step.name, []).append(inst.address)
        _LAST[:] = [spec, by]
    return _LAST[1]


class _GraphOnly(ResourceKind):
    managed = False
    standalone = False  # never planned

    def decide(self, node, record, facts, known, forced):  # pragma: no cover - never planned
        raise TypeError(f"{self.name} resources are not managed by plan/apply in this release")


class MonitorKind(_GraphOnly):
    name = "monitor"
    order = 45

    def nodes(self, spec) -> list[Node]:
        out = []
        for name, m in sorted(spec.monitors.items()):
            ups = {f"deployment.{m.deployment}"} | set(_step_instances(spec, m.reference))
            out.append(Node(f"monitor.{name}", self.name, tuple(sorted(ups)), m))
        return out


class TriggerKind(_GraphOnly):
    name = "trigger"
    order = 48

    def nodes(self, spec) -> list[Node]:
        out = []
        for name, t in sorted(spec.triggers.items()):
            ups = set()
            if t.monitor:
                ups.add(f"monitor.{t.monitor}")
            if t.dataset:
                ups.add(t.dataset)
            out.append(Node(f"trigger.{name}", self.name, tuple(sorted(ups)), t))
        return out

    def edges_for_graph(self, spec, nodes_by_address):
        """A trigger points at what it applies (downstream of it, not upstream)."""
        for name, t in sorted(spec.triggers.items()):
            for target in t.apply:
                for inst in _step_instances(spec, target) or (target,):
                    yield (f"trigger.{name}", inst)


for _k in (MonitorKind(), TriggerKind()):
    register(_k)
