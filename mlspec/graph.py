"""The step graph: matrix expansion into instances, deterministic topological order, cycles.

A step that consumes the outputs of a matrix step fans out with it: ``evaluate`` reading
``step.train.model`` gets one instance per ``train`` instance (``step.evaluate[C=0.1]``). An input that
names an instance (``step.train[C=0.1].model``) consumes that one instance only. A gather
(``step.train[*].model``, or any plain input of a step with ``fan_out: false``) consumes every instance at
once and does not fan out: the consumer gets a mapping from matrix values to the input. A consumer that
fans out over some of the gathered step's keys itself gathers only the instances that agree with it.
"""

from __future__ import annotations

import functools
import graphlib
import itertools
import re
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from mlspec.addresses import NAME, instance_address, parse_address
from mlspec.core.frozen import fast_init
from mlspec.gcpause import paused
from mlspec.spec import Spec, Step


@fast_init
@dataclass(frozen=True)
class InputRef:
    name: str  # the step's input name
    kind: str  # "dataset", "step" or "gather"
    resource: str  # dataset.X, step.Y[k=v], or step.Y[*] for a gather
    output: str = ""  # output name for step inputs
    members: tuple = ()  # a gather's instances: (instance address, ((key, value), ...)) in matrix order

    @property
    def resources(self) -> tuple:
        """The resources this input reads: its own, or every gathered instance."""
        return tuple(m[0] for m in self.members) if self.kind == "gather" else (self.resource,)


@fast_init
@dataclass(frozen=True)
class StepInstance:
    address: str
    step: Step
    coords: Mapping = field(default_factory=dict)
    params: Mapping = field(default_factory=dict)
    inputs: tuple = ()  # InputRef, sorted by name
    upstream: tuple = ()  # every address it reads from (datasets and step instances), sorted

    # a step instance is the step kind's graph node itself (mlspec.core.kind.Node's fields): no copy per step
    kind: ClassVar[str] = "step"

    @property
    def item(self) -> "StepInstance":
        return self


class CycleError(ValueError):
    def __init__(self, cycle: list[str]):
        super().__init__(" -> ".join(cycle))
        self.cycle = cycle


_parse = functools.lru_cache(maxsize=65536)(parse_address)  # an input like step.prep.out repeats across steps

# the two forms nearly every input has: parsed without building an Address (kind, name, output)
_PLAIN_REF = re.compile(rf"(?:(step)\.({NAME})\.({NAME})|(dataset)\.({NAME}))")


def _ref(text: str):
    """(kind, name, output) of ``step.NAME.OUTPUT`` or ``dataset.NAME``; else the parsed Address."""
    m = _PLAIN_REF.fullmatch(text)
    if m is None:
        return _parse(text)
    kind, name, output, dkind, dname = m.groups()
    return (kind, name, output) if kind else (dkind, dname, "")


_new = object.__new__
_set = object.__setattr__


def _input_ref(name: str, kind: str, resource: str, output: str = "", members: tuple = ()) -> InputRef:
    """InputRef(...) without the frozen dataclass's field-by-field __init__ (100,000 of them at 50,000 steps)."""
    r = _new(InputRef)
    _set(r, "__dict__", {"name": name, "kind": kind, "resource": resource, "output": output, "members": members})
    return r


def _step_instance(address: str, step: Step, coords: dict, params: dict, inputs: tuple,
                   upstream: tuple) -> StepInstance:
    i = _new(StepInstance)
    _set(i, "__dict__", {"address": address, "step": step, "coords": coords, "params": params, "inputs": inputs,
                         "upstream": upstream})
    return i


def step_dependencies(steps: Mapping[str, Step]) -> dict[str, set]:
    deps: dict[str, set] = {}
    for name, step in steps.items():
        deps[name] = set()
        for ref in step.inputs.values():
            if ref.startswith("dataset."):
                continue
            if ref.startswith("step.") and "[" not in ref:  # step.NAME.OUTPUT: no need to parse (50,000 of them)
                up = ref.split(".", 2)[1]
                if up in steps:
                    deps[name].add(up)
                continue
            try:
                a = _parse(ref)
            except ValueError:
                continue
            if a.kind == "step" and a.name in steps:
                deps[name].add(a.name)
    return deps


def step_order(steps: Mapping[str, Step]) -> list[str]:
    """Step names in a deterministic topological order (sorted within each ready group).

    Kahn's algorithm by rounds, as graphlib's get_ready()/done() gives them, without its per-call cost
    (a 50,000-step chain is 50,000 rounds); graphlib names the cycle when there is one."""
    deps = step_dependencies(steps)
    users: dict[str, list] = {n: [] for n in deps}
    waiting = {}
    for n, ups in deps.items():
        waiting[n] = len(ups)
        for u in ups:
            users[u].append(n)
    ready = sorted(n for n, k in waiting.items() if k == 0)
    out: list[str] = []
    while ready:
        out.extend(ready)
        nxt = []
        for n in ready:
            for m in users[n]:
                waiting[m] -= 1
                if waiting[m] == 0:
                    nxt.append(m)
        ready = sorted(nxt)
    if len(out) == len(deps):
        return out
    ts = graphlib.TopologicalSorter(deps)
    try:
        ts.prepare()
    except graphlib.CycleError as exc:
        cyc = list(exc.args[1])  # [a, b, c, a]: each feeds the next
        raise CycleError([f"step.{n}" for n in cyc]) from None
    raise AssertionError("unreachable: a graph Kahn cannot finish has a cycle")  # pragma: no cover


def _join(a: list[dict], b: list[dict]) -> list[dict]:
    out = []
    for x in a:
        for y in b:
            if all(x[k] == y[k] for k in x.keys() & y.keys()):
                out.append({**x, **y})
    return out


@paused
def expand(spec: Spec) -> list[StepInstance]:
    """All step instances in topological order. The spec must be valid (no cycles, refs resolve)."""
    coords_of: dict[str, list[dict]] = {}
    instances: list[StepInstance] = []
    for name in step_order(spec.steps):
        step = spec.steps[name]
        combos: list[dict] = [{}]
        parsed = []
        for in_name in sorted(step.inputs):
            a = _ref(step.inputs[in_name])
            if a.__class__ is tuple:  # step.NAME.OUTPUT or dataset.NAME
                if a[0] == "step" and coords_of[a[1]] != [{}]:
                    a = _parse(step.inputs[in_name])  # fans out: the general case below
                else:
                    parsed.append((in_name, a, False))
                    continue
            fanned = a.kind == "step" and not a.selector and coords_of[a.name] != [{}]
            gather = a.kind == "step" and (a.gather or (fanned and not step.fan_out))
            parsed.append((in_name, a, gather))
            if fanned and not gather:
                combos = _join(combos, coords_of[a.name])
        if step.matrix:
            keys = sorted(step.matrix)
            own = [dict(zip(keys, vals)) for vals in itertools.product(*(step.matrix[k] for k in keys))]
            combos = [{**c, **o} for c in combos for o in own]
        coords_of[name] = combos
        for c in combos:
            refs = []
            upstream = set()
            for in_name, a, gather in parsed:
                if a.__class__ is tuple:  # a plain input of a step that does not fan out, or a dataset
                    kind, up, output = a
                    resource = f"{kind}.{up}"
                    refs.append(_input_ref(in_name, kind, resource, output))
                    upstream.add(resource)
                    continue
                if a.kind == "dataset":
                    refs.append(_input_ref(in_name, "dataset", a.resource))
                elif gather:
                    members = tuple(
                        (instance_address(a.name, u), tuple((k, u[k]) for k in sorted(u) if k not in c))
                        for u in coords_of[a.name] if all(u[k] == c[k] for k in u.keys() & c.keys()))
                    refs.append(_input_ref(in_name, "gather", f"step.{a.name}[*]", a.output, members))
                elif a.selector:
                    refs.append(_input_ref(in_name, "step", a.resource, a.output))
                else:
                    up_keys = set(coords_of[a.name][0]) if coords_of[a.name] else set()
                    sub = {k: c[k] for k in up_keys}
                    refs.append(_input_ref(in_name, "step",
                                           instance_address(a.name, sub) if sub else f"step.{a.name}", a.output))
                upstream.update(refs[-1].resources)
            params = dict(step.params)
            if c and step.matrix:
                params.update({k: v for k, v in c.items() if k in step.matrix})
            address = instance_address(name, {k: c[k] for k in sorted(c)}) if c else f"step.{name}"
            instances.append(_step_instance(address, step, dict(c), params, tuple(refs), tuple(sorted(upstream))))
    return instances
