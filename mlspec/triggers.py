"""Retraining triggers: which of the spec's `triggers:` fire now, and why (docs/triggers.md).

A trigger watches one thing and names what to apply when it moves:

* ``schedule`` (cron): fires when a tick of the expression falls after the later of its last firing and the
  last successful run of its targets recorded in the state (so a run by hand counts, like a scheduler that
  knows the job already ran), and at or before the clock;
* ``dataset``: fires when the dataset's content hash differs from the one the state recorded when it was
  last read by an apply;
* ``monitor``: fires when the monitor is breached (a drift statistic above its threshold, or a performance
  metric, ``accuracy`` or ``roc_auc``, below it); the evaluation itself belongs to the monitor
  (mlspec.monitoring), passed in here as a callable so that this module stays pure.

Every trigger may have a ``cooldown``: inside it a trigger whose condition holds does not fire, and says
until when. The evaluation is a pure function of (spec, state, clock, observations); :func:`record_fired`
is the one write, done by `mlspec reconcile` under the state lock after the targets were applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

#: the number of firings a trigger's state record keeps (its history; the newest last)
KEEP_FIRINGS = 20

#: monitor methods whose value is a quality (higher is better): breached when *below* the threshold
QUALITY_METHODS = ("accuracy", "roc_auc")


@dataclass
class Decision:
    """Whether one trigger fires at the clock, with everything behind the decision."""

    name: str
    on: str  # schedule | dataset | monitor
    fired: bool
    why: str  # one line: what was observed against what
    targets: tuple = ()
    condition: bool = False  # the watched condition holds (it fires unless cooling down)
    cooling_until: float | None = None
    last_fired: float | None = None
    last_run: float | None = None
    values: dict = field(default_factory=dict)  # value, threshold, tick, hashes, ...
    error: str = ""  # the condition could not be evaluated (a monitor without traffic, a missing dataset)

    def to_dict(self) -> dict:
        return {"name": self.name, "on": self.on, "fired": self.fired, "condition": self.condition,
                "why": self.why, "targets": list(self.targets), "last_fired": self.last_fired,
                "last_run": self.last_run, "cooling_until": self.cooling_until, "values": self.values,
                "error": self.error or None}


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t is not None else "never"


def parse_now(text: str | None) -> float:
    """The clock: now, or ``--now`` given as epoch seconds or an ISO 8601 time (UTC unless it says)."""
    if not text:
        return time.time()
    from datetime import datetime, timezone

    from mlspec.errors import MlspecError

    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MlspecError(f"--now {text!r} is not a time",
                          hint="give epoch seconds or ISO 8601, e.g. --now 2026-12-01T02:30:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def trigger_record(state, name: str) -> dict:
    rec = state.resources.get(f"trigger.{name}")
    return rec if isinstance(rec, dict) and rec.get("kind") == "trigger" else {}


def last_run_of(state, spec, targets: tuple) -> float | None:
    """When the targets last finished a successful run (the latest of them), from the state's records.

    A target is an address as `apply:` takes it (``step.train``, ``step.train[C=1]``, ``model.X``, ...);
    no targets means every step."""
    from mlspec.plan import matches

    latest = None
    for addr, rec in state.resources.items():
        if not isinstance(rec, dict) or rec.get("kind") != "step":
            continue
        if targets and not any(matches(addr, t) for t in targets):
            continue
        t = rec.get("finished")
        if isinstance(t, (int, float)) and (latest is None or t > latest):
            latest = float(t)
    return latest


def evaluate(spec, state, now: float, *, dataset_hash: Callable[[str], str] | None = None,
             monitor: Callable[[str], Mapping] | None = None, names: tuple = ()) -> list[Decision]:
    """Every trigger of the spec (or those in ``names``), decided at ``now``.

    ``dataset_hash(address)`` returns the dataset's current content hash; ``monitor(name)`` evaluates a
    monitor and returns ``{"value", "threshold", "breached", "detail"}``. Either raising an MlspecError makes
    that trigger's decision an error (not fired, the message shown), never the whole check."""
    from mlspec.errors import MlspecError
    from mlspec.units import parse_duration

    out = []
    for name, trig in sorted(spec.triggers.items()):
        if names and name not in names:
            continue
        rec = trigger_record(state, name)
        last_fired = rec.get("last_fired") if isinstance(rec.get("last_fired"), (int, float)) else None
        targets = tuple(trig.apply)
        d = Decision(name, "schedule" if trig.schedule else "dataset" if trig.dataset else "monitor", False, "",
                     targets, last_fired=last_fired)
        try:
            if trig.schedule:
                _schedule(d, trig, spec, state, now)
            elif trig.dataset:
                _dataset(d, trig, state, dataset_hash)
            else:
                _monitor(d, trig, spec, monitor)
        except MlspecError as exc:
            d.error = exc.message if hasattr(exc, "message") else str(exc)
            d.why = f"not evaluated: {d.error}"
        cooldown = parse_duration(trig.cooldown) if trig.cooldown else 0.0
        if d.condition:
            if cooldown and last_fired is not None and now < last_fired + cooldown:
                d.cooling_until = last_fired + cooldown
                d.why += f"; in cooldown until {when(d.cooling_until)} (fired {when(last_fired)}, cooldown {trig.cooldown})"
            else:
                d.fired = True
        out.append(d)
    return out


def _schedule(d: Decision, trig, spec, state, now: float) -> None:
    from datetime import datetime, timezone

    from croniter import croniter

    d.last_run = last_run_of(state, spec, tuple(trig.apply))
    base = max([t for t in (d.last_fired, d.last_run) if t is not None], default=None)
    d.values = {"schedule": trig.schedule, "since": base}
    if base is None:
        d.condition = True
        d.why = f"cron {trig.schedule!r}: its targets never ran"
        return
    it = croniter(trig.schedule, datetime.fromtimestamp(base, tz=timezone.utc))
    tick = it.get_next(float)
    d.values["tick"] = tick
    if tick <= now:
        d.condition = True
        d.why = f"cron {trig.schedule!r} ticked at {when(tick)}, after the last run {when(base)}"
    else:
        d.why = f"cron {trig.schedule!r}: next tick {when(tick)} (last run {when(base)})"


def _dataset(d: Decision, trig, state, dataset_hash) -> None:
    from mlspec.errors import MlspecError

    rec = state.resources.get(trig.dataset) or {}
    recorded = rec.get("hash") if isinstance(rec, dict) else None
    if dataset_hash is None:
        raise MlspecError("no way to read the dataset here")
    current = dataset_hash(trig.dataset)
    d.values = {"recorded": recorded, "current": current}
    if recorded is None:
        d.condition = True
        d.why = f"{trig.dataset} not recorded yet (current {current[:12]})"
    elif recorded != current:
        d.condition = True
        d.why = f"{trig.dataset} changed: {recorded[:12]} -> {current[:12]}"
    else:
        d.why = f"{trig.dataset} unchanged ({current[:12]})"


def _monitor(d: Decision, trig, spec, monitor) -> None:
    from mlspec.errors import MlspecError

    mon = spec.monitors.get(trig.monitor)
    if monitor is None or mon is None:
        raise MlspecError(f"monitor '{trig.monitor}' cannot be evaluated here")
    res = dict(monitor(trig.monitor))
    value, threshold = res.get("value"), res.get("threshold", mon.threshold)
    threshold = 0.0 if threshold is None else threshold
    d.values = {"monitor": trig.monitor, "method": mon.method, "value": value, "threshold": threshold,
                **({"detail": res["detail"]} if res.get("detail") else {})}
    below = mon.method in QUALITY_METHODS
    breached = res.get("breached")
    if breached is None and isinstance(value, (int, float)):
        breached = value < threshold if below else value >= threshold
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    d.condition = bool(breached)
    if below:
        what = f"{mon.method} {shown} {'<' if breached else '>='} {threshold:g}"
    else:  # data drift: the share of drifted features against the share at which the data drifts
        what = f"drifted share {shown} {'>=' if breached else '<'} {threshold:g}"
    d.why = (f"monitor {trig.monitor}: {what}"
             + (" (breached)" if breached else "") + (f"; {res['detail']}" if res.get("detail") else ""))


def record_fired(state, decisions: list[Decision], now: float, run_id: str = "") -> list[str]:
    """Note each fired trigger in the state (``trigger.NAME``: its last firing and a short history). Returns
    the addresses written; the caller writes the state."""
    written = []
    for d in decisions:
        if not d.fired:
            continue
        addr = f"trigger.{d.name}"
        rec = dict(trigger_record(state, d.name)) or {"kind": "trigger"}
        fired = list(rec.get("fired") or [])
        fired.append({"at": now, "why": d.why, "run_id": run_id})
        rec.update(kind="trigger", last_fired=now, fired=fired[-KEEP_FIRINGS:])
        state.resources[addr] = rec
        written.append(addr)
    return written
