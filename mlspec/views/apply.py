"""Apply's views: the console reporter and `apply --format json`, both hooks of the core apply.

The JSON view writes one JSON object per line (like `terraform apply -json`): an ``apply_start`` line, one
line per event (``started``, ``finished``, ``restored``, ``failed``, ...), then an ``apply_summary`` line.
Each line is valid against schemas/events.schema.json; a CI system reads the stream line by line.
"""

from __future__ import annotations

import json
import time

from mlspec.console import Console
from mlspec.core.apply import ApplyHooks, ApplyResult
from mlspec.core.kind import Outcome
from mlspec.core.types import EventKind

EVENTS_FORMAT_VERSION = 1


class ConsoleApplyView(ApplyHooks):
    """Plain lines per event (and a live status line on a terminal)."""

    def __init__(self, console: Console):
        self.console = console
        self.total, self.done = 0, 0
        self.running: set = set()

    def begin(self, plan, run_id: str, total: int) -> None:
        self.total = total
        self.console.print(f"\nApplying (run {run_id})...")

    def note(self, message: str) -> None:
        self.console.error(message)

    def event(self, kind: EventKind, oc: Outcome) -> None:
        c = self.console
        st = c.style
        if kind is EventKind.STARTED:
            self.running.add(oc.address)
            extra = f" (attempt {oc.attempts})" if oc.attempts > 1 else ""
            line = f"  {st('start', 'cyan')}     {oc.address}{extra}"
        elif kind is EventKind.FINISHED:
            self.running.discard(oc.address)
            self.done += 1
            line = f"  {st('done', 'green')}      {oc.address}  " + (oc.reason or f"ran in {oc.duration:.2f}s")
        elif kind is EventKind.RESTORED:
            self.done += 1
            line = f"  {st('restored', 'green')}  {oc.address}  from the run-cache"
        elif kind is EventKind.CHECKED_OUT:
            self.done += 1
            line = f"  {st('checkout', 'green')}  {oc.address}  {oc.reason}"
        elif kind in (EventKind.UP_TO_DATE, EventKind.READ):
            self.done += 1
            return  # unchanged resources and data reads are counted in the summary, not listed
        elif kind is EventKind.DESTROYED:
            line = f"  {st('destroyed', 'red')} {oc.address}  (its artifacts stay in the store)"
        elif kind is EventKind.RETRIED:
            self.running.discard(oc.address)
            line = f"  {st('retry', 'yellow')}     {oc.address}  attempt {oc.attempts} failed: {oc.error}"
        elif kind is EventKind.FAILED:
            self.running.discard(oc.address)
            self.done += 1
            line = f"  {st('failed', 'red', 'bold')}    {oc.address}  after {oc.duration:.2f}s: {oc.error}"
            if oc.reason and oc.reason.strip() not in oc.error:
                line += "\n" + "\n".join(f"              | {ln}" for ln in oc.reason.splitlines())
        elif kind is EventKind.SKIPPED:
            self.done += 1
            line = f"  {st('skipped', 'yellow')}   {oc.address}  ({oc.reason})"
        elif kind is EventKind.CANCELLED:
            self.running.discard(oc.address)
            line = f"  {st('cancelled', 'yellow')} {oc.address}"
        elif kind is EventKind.WARNING:
            line = f"  {st('warning', 'yellow')}   {oc.address}  {oc.reason}"
        else:
            line = f"  {kind.value} {oc.address}"
        if c.interactive:
            c.out.write("\r\033[K")
        c.print(line)
        if c.interactive and self.running:
            c.out.write(f"  [{self.done}/{self.total}] running: {', '.join(sorted(self.running))[:100]}")
            c.out.flush()


class JsonApplyView(ApplyHooks):
    """One JSON object per line on stdout: apply_start, the events, apply_summary."""

    def __init__(self, console: Console):
        self.console = console

    def _line(self, obj: dict) -> None:
        from mlspec.state import json_safe

        obj = {"format_version": EVENTS_FORMAT_VERSION, "time": round(time.time(), 3), **obj}
        self.console.print(json.dumps(json_safe(obj), sort_keys=True, default=str))

    def begin(self, plan, run_id: str, total: int) -> None:
        self._line({"type": "apply_start", "run_id": run_id, "project": plan.project, "workspace": plan.workspace,
                    "resources": total, "summary": plan.summary()})

    def note(self, message: str) -> None:
        self._line({"type": "note", "message": message})

    def event(self, kind: EventKind, oc: Outcome) -> None:
        d = {"type": "event", "event": kind.value, "address": oc.address, "status": oc.status.value,
             "attempt": oc.attempts, "duration": round(oc.duration, 4)}
        if oc.error:
            d["error"] = oc.error
        if oc.reason:
            d["reason"] = oc.reason
        if oc.outputs:
            d["outputs"] = {k: v.get("hash") if isinstance(v, dict) else v for k, v in oc.outputs.items()}
        if oc.metrics:
            d["metrics"] = oc.metrics
        self._line(d)

    def end(self, result: ApplyResult) -> None:
        self._line({"type": "apply_summary", **result.to_dict(), "message": result.summary()})

    def plan_only(self, plan) -> None:
        """No changes: the stream still ends with a summary, so a reader always gets one."""
        self._line({"type": "apply_summary", "run_id": None, "status": "no-changes", "counts": {},
                    "serial": plan.serial, "elapsed": 0.0, "message": "No changes."})
