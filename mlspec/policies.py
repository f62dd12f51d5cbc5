"""Policies as code: rules the spec enables in its `policies:` section, checked at plan, again at apply, and
for hand moves of model aliases.

Each built-in :class:`Policy` has a name, what it checks, its default setting, and a pure function from a
:class:`Context` (the spec, and the recorded state where the rule needs it) to :class:`Violation`\\ s. The
plan and the apply call :func:`enforce` after planning (an apply plans again under the lock, so a saved plan
is checked against the spec and state it is applied to); `mlspec models promote|rollback` call
:func:`hand_move_violations`. A violation prints as one line, ``policy NAME: what is wrong: what to do``.

``data_residency`` is also a validation diagnostic (code ``residency``, with file:line): it depends on the
spec alone, so `mlspec validate` (and every command that loads the spec) reports it where it is written;
:func:`residency_violations` is the one function both use.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mlspec.errors import MlspecError


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str  # what is wrong and what to do, without the policy's name
    path: tuple = ()  # key path in the spec, for a validation diagnostic

    def line(self) -> str:
        return f"policy {self.policy}: {self.message}"


@dataclass(frozen=True)
class Context:
    spec: Any  # mlspec.spec.Spec
    state: Any = None  # mlspec.state.State (None: rules over the spec alone)


@dataclass(frozen=True)
class Policy:
    name: str
    checks: str  # what it checks, in a sentence (docs, `--help`-style listings)
    default: Any  # the setting when the spec does not name the policy
    check: Callable[[Context, Any], list]  # (context, setting) -> [Violation]


def _m(d: Any) -> Mapping:
    return d if isinstance(d, dict) else {}


def setting(spec, name: str):
    """The spec's setting of policy ``name``, or its default."""
    return (spec.policies or {}).get(name, POLICIES[name].default)


# --- protected_aliases ---------------------------------------------------------------------------
def is_protected(spec, model: str, alias: str) -> bool:
    """Whether ``alias`` of ``model`` is protected: listed in `policies.protected_aliases`, or the model's own
    `promote: {alias: A, protected: true}` (the per-model form)."""
    if alias in (setting(spec, "protected_aliases") or ()):
        return True
    m = spec.models.get(model)
    promote = (m.promote or {}) if m is not None else {}
    return bool(promote.get("protected")) and promote.get("alias") == alias


def _registry(state, model: str) -> Mapping:
    rec = state.resources.get(f"model.{model}") if state is not None else None
    return rec if isinstance(rec, dict) and rec.get("kind") == "model" else {}


def _check_protected(ctx: Context, _setting) -> list:
    """A pin may not put a version its gates rejected on a protected alias (the gates are the way in)."""
    out = []
    for name, m in sorted(ctx.spec.models.items()):
        reg = _registry(ctx.state, name)
        for alias, number in sorted((m.pin or {}).items()):
            if not is_protected(ctx.spec, name, alias):
                continue
            v = next((v for v in reg.get("versions") or () if v.get("version") == number), None)
            if v is not None and (v.get("status") == "rejected" or any(
                    g.get("outcome") == "failed" for g in v.get("gates") or ())):
                out.append(Violation("protected_aliases", (
                    f"model.{name} pins {alias} to version {number}, which its gates rejected, and {alias} is "
                    f"protected: pin a version that passed (see `mlspec models history {name}`)"),
                    ("models", name, "pin", alias)))
    return out


# --- require_gates -------------------------------------------------------------------------------
def _may_hold(m) -> set:
    alias = (m.promote or {}).get("alias")
    return ({alias} if alias else set()) | set(m.pin or {})


def _check_require_gates(ctx: Context, aliases) -> list:
    out = []
    wanted = set(aliases or ())
    for name, m in sorted(ctx.spec.models.items()):
        if m.gates:
            continue
        for alias in sorted(_may_hold(m) & wanted):
            out.append(Violation("require_gates", (
                f"model.{name} has no gates but may hold {alias}: add gates to models.{name}, or take {alias} "
                f"out of its promote and pin"), ("models", name)))
    return out


# --- data_residency ------------------------------------------------------------------------------
def _input_refs(step: Mapping) -> list:
    from mlspec.addresses import parse_address

    refs = []
    for ref in _m(step.get("inputs")).values():
        if isinstance(ref, dict):
            ref = ref.get("from")
        if isinstance(ref, str):
            try:
                refs.append(parse_address(ref))
            except ValueError:
                pass  # reported by validation
    return refs


def _location_of(data: Mapping, step: Mapping) -> tuple[str, str]:
    """(backend label, location) a step runs at."""
    top, backends = _m(data.get("backend")), _m(data.get("backends"))
    name = step.get("backend")
    if isinstance(name, str) and name in backends:
        return name, str(_m(backends[name]).get("location", "local"))
    if isinstance(name, str) and name != top.get("type"):
        return name, "local"
    return str(top.get("type", "local")), str(top.get("location", "local"))


def residency_violations(data: Mapping) -> list:
    """Data with `residency:` (and anything derived from it) is read only by steps on allowed locations.
    Over the composed spec as plain data (validation calls it before a Spec exists)."""
    datasets, steps = _m(data.get("datasets")), _m(data.get("steps"))
    restricted = {n: d.get("residency") for n, d in datasets.items()
                  if isinstance(d, dict) and isinstance(d.get("residency"), list)}
    if not restricted:
        return []
    refs = {n: _input_refs(_m(s)) for n, s in steps.items()}
    deps = {n: {a.name for a in rs if a.kind == "step" and a.name in steps} for n, rs in refs.items()}
    try:
        order = list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError:
        return []  # reported as a cycle
    carried: dict[str, dict] = {}  # step -> {dataset: the addresses from the dataset to the step}
    out = []
    for n in order:
        mine: dict = {}
        for a in refs[n]:
            if a.kind == "dataset" and a.name in restricted:
                mine.setdefault(a.name, [f"dataset.{a.name}", f"step.{n}"])
            elif a.kind == "step" and a.name in carried:
                for ds, path in carried[a.name].items():
                    mine.setdefault(ds, path + [f"step.{n}"])
        carried[n] = mine
        label, loc = _location_of(data, _m(steps[n]))
        for ds, path in sorted(mine.items()):
            allowed = [str(x) for x in restricted[ds]]
            if allowed and loc not in allowed:  # an empty list is a schema error
                out.append(Violation("data_residency", (
                    f"step.{n} would run on backend '{label}' (location '{loc}'), but it reads data derived from "
                    f"dataset.{ds}, which must stay in {', '.join(allowed)}: {' -> '.join(path)}; run it on a "
                    f"backend located in {allowed[0]} (steps.{n}.backend)"), ("steps", n)))
    return out


def _check_residency(ctx: Context, enabled) -> list:
    return residency_violations(ctx.spec.config) if enabled is not False else []


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("protected_aliases", "the listed aliases move only through the gates of an apply or a pin in the spec: a "
           "hand promote needs --force-with-reason, and a pin may not put a rejected version on them", (),
           _check_protected),
    Policy("require_gates", "a model without gates may not promote to, or pin, the listed aliases", (),
           _check_require_gates),
    Policy("data_residency", "data with `residency:`, and what is derived from it, is read only by steps on "
           "backends in an allowed location", True, _check_residency),
)}


def check(spec, state=None) -> list:
    """Every violation of every policy, in policy order."""
    ctx = Context(spec, state)
    out = []
    for name, policy in POLICIES.items():
        out.extend(policy.check(ctx, setting(spec, name)))
    return out


def enforce(spec, state=None) -> None:
    """Raise one error listing every violation (exit 1), or return."""
    violations = check(spec, state)
    if not violations:
        return
    if len(violations) == 1:
        message = violations[0].line()
    else:
        message = f"{len(violations)} policy violations:\n" + "\n".join("  " + v.line() for v in violations)
    raise MlspecError(message, hint="policies are set in the spec's `policies:` section (docs/spec.md#policies)")


# --- hand moves ----------------------------------------------------------------------------------
def hand_move_violations(spec, reg: Mapping, model: str, alias: str, target: int, action: str,
                         forced: bool) -> list:
    """What refuses `mlspec models promote|rollback MODEL --alias ALIAS` to version ``target``. A rollback to a
    version that held the alias before undoes a move, so protected_aliases lets it through; a promote (or a
    rollback to a version that never held the alias) is a new move and needs --force-with-reason."""
    out = []
    m = spec.models.get(model)
    if m is not None and not m.gates and alias in (setting(spec, "require_gates") or ()):
        out.append(Violation("require_gates", (
            f"model.{model} has no gates, so it may not hold {alias}: add gates to models.{model}")))
    held = any(h.get("alias") == alias and h.get("to") == target for h in reg.get("history") or ())
    if is_protected(spec, model, alias) and not forced and not (action == "rollback" and held):
        again = (f"mlspec models promote {model} {target} --alias {alias}" if action == "promote"
                 else f"mlspec models rollback {model} --alias {alias} --to {target}")
        out.append(Violation("protected_aliases", (
            f"alias '{alias}' of model '{model}' is protected: it moves only through the gates of an apply"
            + ("" if action == "promote" else f" (version {target} never held it)")
            + f"; to override, say why: {again} --force-with-reason TEXT")))
    return out
