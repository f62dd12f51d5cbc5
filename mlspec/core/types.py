"""The core's vocabulary: actions, verdicts, reasons, outcomes and events. Below everything else in the core.

Finite sets are enums, so they cannot drift from the published schemas (``schemas/plan.schema.json`` and
``schemas/events.schema.json`` are tested against them). Reasons *explain* a change; nothing decides on
them (Terraform's rule for ``ActionReason``): that a change was forced by ``--replace`` is the field
``ResourceChange.forced``, not a reason the apply inspects.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class Action(str, enum.Enum):
    """What happens to a resource. The value is what plan JSON says; :attr:`symbol` what the text plan shows."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    READ = "read"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.DELETE: "-", Action.READ: "<=",
            Action.NOOP: " "}
SYMBOL_OF = {a.value: sym for a, sym in _SYMBOLS.items()}  # by the plan JSON's action string


class Verdict(str, enum.Enum):
    """For resources that produce outputs: how the outputs will be had."""

    RUN = "run"
    RESTORE = "restore"  # this fingerprint ran before: outputs come from the run-cache
    UP_TO_DATE = "up-to-date"
    UNKNOWN = "known after apply"  # an upstream resource changes first
    NONE = ""


class ReasonCode(str, enum.Enum):
    NEW = "new"
    REMOVED = "removed"
    FORCED = "forced"
    PARAM_CHANGED = "param_changed"
    PARAM_ADDED = "param_added"
    PARAM_REMOVED = "param_removed"
    SECRET_CHANGED = "secret_changed"
    CODE_CHANGED = "code_changed"
    CODE_ADDED = "code_added"
    CODE_REMOVED = "code_removed"
    INPUT_CHANGED = "input_changed"
    INPUT_REWIRED = "input_rewired"
    OUTPUT_MISSING = "output_missing"
    UPSTREAM_RERUN = "upstream_rerun"
    DATA_CHANGED = "data_changed"
    DATA_NEW = "data_new"
    DEFINITION_CHANGED = "definition_changed"
    CHANGED = "changed"  # a generic attribute change, for kinds that need no finer code


# reasons whose JSON carries the value before / after the change
_WITH_BEFORE = {ReasonCode.PARAM_CHANGED, ReasonCode.PARAM_REMOVED, ReasonCode.DEFINITION_CHANGED,
                ReasonCode.DATA_CHANGED, ReasonCode.INPUT_REWIRED, ReasonCode.CHANGED}
_WITH_AFTER = {ReasonCode.PARAM_CHANGED, ReasonCode.PARAM_ADDED, ReasonCode.DEFINITION_CHANGED,
               ReasonCode.DATA_CHANGED, ReasonCode.INPUT_REWIRED, ReasonCode.CHANGED}


def _fmt(v) -> str:
    return json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v


def _short(h) -> str:
    if not isinstance(h, str):
        return "none"
    algo, _, hexd = h.partition(":")
    return f"{algo}:{hexd[:8]}" if hexd else h[:12]


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    path: str = ""
    before: object = None
    after: object = None

    def __post_init__(self):
        if type(self.code) is not ReasonCode:  # an enum call costs ~10 us: only for plain strings
            object.__setattr__(self, "code", ReasonCode(self.code))

    def text(self) -> str:
        c, p = self.code, self.path
        if c is ReasonCode.NEW:
            return "new: no successful run recorded"
        if c is ReasonCode.UPSTREAM_RERUN:
            return f"upstream {p} will re-run"
        if c in (ReasonCode.PARAM_CHANGED, ReasonCode.DEFINITION_CHANGED, ReasonCode.CHANGED):
            return f"{p}: {_fmt(self.before)} -> {_fmt(self.after)}"
        if c is ReasonCode.REMOVED:
            return "removed from the spec"
        if c is ReasonCode.FORCED:
            return "forced by --replace"
        if c is ReasonCode.SECRET_CHANGED:
            return f"{p}: (sensitive value changed)"
        if c is ReasonCode.CODE_CHANGED:
            return f"code {p} changed"
        if c is ReasonCode.CODE_ADDED:
            return f"code {p} is now imported"
        if c is ReasonCode.CODE_REMOVED:
            return f"code {p} is no longer imported"
        if c is ReasonCode.INPUT_CHANGED:
            return f"input {p}: new content"
        if c is ReasonCode.OUTPUT_MISSING:
            return f"output {p} missing or corrupt in the artifact store"
        if c is ReasonCode.DATA_NEW:
            return "not recorded yet"
        if c is ReasonCode.PARAM_ADDED:
            return f"{p}: added ({_fmt(self.after)})"
        if c is ReasonCode.PARAM_REMOVED:
            return f"{p}: removed (was {_fmt(self.before)})"
        if c is ReasonCode.INPUT_REWIRED:
            return f"input {p}: now {_fmt(self.after)} (was {_fmt(self.before)})"
        if c is ReasonCode.DATA_CHANGED:
            return f"new content ({_short(self.before)} -> {_short(self.after)})"
        raise AssertionError(f"no text for reason {c}")  # every code has one: tests/test_core_types.py

    def to_dict(self) -> dict:
        d = {"code": self.code, "message": self.text()}  # a str enum: JSON writes its value
        if self.path:
            d["path"] = self.path
        if self.code in _WITH_BEFORE:
            d["before"] = self.before
        if self.code in _WITH_AFTER:
            d["after"] = self.after
        return d


class Status(str, enum.Enum):
    """How a resource ended in an apply (run records, `apply --format json`)."""

    RAN = "ran"
    RESTORED = "restored"
    UP_TO_DATE = "up-to-date"
    READ = "read"
    DESTROYED = "destroyed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    NOT_RUN = "not-run"
    RETRYING = "retrying"


class EventKind(str, enum.Enum):
    """What the core reports to apply hooks while it works."""

    STARTED = "started"
    FINISHED = "finished"  # ran to success
    RESTORED = "restored"
    UP_TO_DATE = "up_to_date"
    READ = "read"
    DESTROYED = "destroyed"
    FAILED = "failed"
    RETRIED = "retried"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    WARNING = "warning"
