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

from mlspec.core.frozen import fast_init


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
    CHECKOUT = "checkout"  # up to date, but the project's copy of an output differs: put it back from the store
    REGISTER = "register"  # a model: new content becomes a version (its gates pass, or are known at apply)
    REJECT = "reject"  # a model: new content becomes a version known to fail a gate (registered as rejected)
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
    CODE_FORMAT = "code_format"
    FILE_CHANGED = "file_changed"
    FILE_ADDED = "file_added"
    FILE_REMOVED = "file_removed"
    FILE_KEY_CHANGED = "file_key_changed"
    FILE_KEY_ADDED = "file_key_added"
    FILE_KEY_REMOVED = "file_key_removed"
    INPUT_CHANGED = "input_changed"
    INPUT_REWIRED = "input_rewired"
    OUTPUT_MISSING = "output_missing"
    UPSTREAM_RERUN = "upstream_rerun"
    DATA_CHANGED = "data_changed"
    DATA_NEW = "data_new"
    DEFINITION_CHANGED = "definition_changed"
    CHANGED = "changed"  # a generic attribute change, for kinds that need no finer code
    OUTPUT_MODIFIED = "output_modified"  # a materialised output was edited in the project
    OUTPUT_NOT_IN_PROJECT = "output_not_in_project"  # a materialised output is missing from the project
    MODEL_VERSION_NEW = "model_version_new"  # a model's source output has content no version holds
    GATE_PASSED = "gate_passed"
    GATE_FAILED = "gate_failed"
    GATE_VACUOUS = "gate_vacuous"  # a change gate with no alias holder to compare with: passes
    GATE_UNKNOWN = "gate_unknown"  # the candidate's metrics are known only after apply
    ALIAS_MOVED = "alias_moved"
    ALIAS_KEPT = "alias_kept"  # the alias stays where it is (gates fail, or not better)
    ALIAS_HELD_BY_HAND = "alias_held_by_hand"  # a hand promote/rollback holds the alias
    ALIAS_PINNED = "alias_pinned"  # the spec pins the alias to a version the registry does not have it on
    SERVE_VERSION = "serve_version"  # a deployment serves another model version (a rolling update)
    SERVE_UNKNOWN = "serve_unknown"  # the version a deployment will serve is known after apply
    SERVICE_GONE = "service_gone"  # refresh found the service's processes gone: recreate
    SERVICE_UNHEALTHY = "service_unhealthy"  # refresh found it running but not answering ready: replace
    SERVICE_DEGRADED = "service_degraded"  # refresh found fewer replicas than asked: roll out again
    SERVICE_DRIFT = "service_drift"  # refresh found it serving another version than recorded: roll out again
    SERVE_HELD = "serve_held"  # `mlspec rollback` holds the deployment on a version until the model moves


# reasons whose JSON carries the value before / after the change
_WITH_BEFORE = {ReasonCode.SERVE_VERSION, ReasonCode.SERVICE_DRIFT, ReasonCode.ALIAS_MOVED, ReasonCode.ALIAS_PINNED, ReasonCode.GATE_PASSED, ReasonCode.GATE_FAILED, ReasonCode.PARAM_CHANGED, ReasonCode.PARAM_REMOVED, ReasonCode.DEFINITION_CHANGED,
                ReasonCode.DATA_CHANGED, ReasonCode.INPUT_REWIRED, ReasonCode.CHANGED,
                ReasonCode.FILE_KEY_CHANGED, ReasonCode.FILE_KEY_REMOVED}
_WITH_AFTER = {ReasonCode.SERVE_VERSION, ReasonCode.SERVICE_DRIFT, ReasonCode.MODEL_VERSION_NEW, ReasonCode.ALIAS_MOVED, ReasonCode.ALIAS_PINNED, ReasonCode.GATE_PASSED,
               ReasonCode.GATE_FAILED, ReasonCode.PARAM_CHANGED, ReasonCode.PARAM_ADDED, ReasonCode.DEFINITION_CHANGED,
               ReasonCode.DATA_CHANGED, ReasonCode.INPUT_REWIRED, ReasonCode.CHANGED,
               ReasonCode.FILE_KEY_CHANGED, ReasonCode.FILE_KEY_ADDED}


def _fmt(v) -> str:
    return json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v


def _num(v) -> str:
    """A metric as the plan shows it: 4 significant decimals, not float noise."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _short(h) -> str:
    if not isinstance(h, str):
        return "none"
    algo, _, hexd = h.partition(":")
    return f"{algo}:{hexd[:8]}" if hexd else h[:12]


_TEXTS = {  # every ReasonCode's message (tests/test_core_types.py checks that each has one)
    ReasonCode.NEW: "new: no successful run recorded",
    ReasonCode.REMOVED: "removed from the spec",
    ReasonCode.FORCED: "forced by --replace",
    ReasonCode.PARAM_CHANGED: "{p}: {before} -> {after}",
    ReasonCode.PARAM_ADDED: "{p}: added ({after})",
    ReasonCode.PARAM_REMOVED: "{p}: removed (was {before})",
    ReasonCode.SECRET_CHANGED: "{p}: (sensitive value changed)",
    ReasonCode.CODE_CHANGED: "code {p} changed",
    ReasonCode.CODE_ADDED: "code {p} is now used",
    ReasonCode.CODE_REMOVED: "code {p} is no longer used",
    ReasonCode.CODE_FORMAT: "code fingerprint format changed (recorded by an earlier mlspec version)",
    ReasonCode.FILE_CHANGED: "file {p} changed",
    ReasonCode.FILE_ADDED: "file {p} is now a dependency",
    ReasonCode.FILE_REMOVED: "file {p} is no longer a dependency",
    ReasonCode.FILE_KEY_CHANGED: "{p}: {before} -> {after}",
    ReasonCode.FILE_KEY_ADDED: "{p}: added ({after})",
    ReasonCode.FILE_KEY_REMOVED: "{p}: removed (was {before})",
    ReasonCode.INPUT_CHANGED: "input {p}: new content",
    ReasonCode.INPUT_REWIRED: "input {p}: now {after} (was {before})",
    ReasonCode.OUTPUT_MISSING: "output {p} missing or corrupt in the artifact store",
    ReasonCode.UPSTREAM_RERUN: "upstream {p} will re-run",
    ReasonCode.DATA_CHANGED: "new content ({before} -> {after})",
    ReasonCode.DATA_NEW: "not recorded yet",
    ReasonCode.DEFINITION_CHANGED: "{p}: {before} -> {after}",
    ReasonCode.CHANGED: "{p}: {before} -> {after}",
    ReasonCode.OUTPUT_MODIFIED: "output {p} modified outside mlspec",
    ReasonCode.OUTPUT_NOT_IN_PROJECT: "output {p} missing from the project",
    ReasonCode.MODEL_VERSION_NEW: "new content from {p}: registers version {after}",
    ReasonCode.GATE_PASSED: "gate {p}: {after} passes{baseline}",
    ReasonCode.GATE_FAILED: "gate {p}: {after} fails{baseline}",
    ReasonCode.GATE_VACUOUS: "gate {p}: passes (no version holds the alias yet)",
    ReasonCode.GATE_UNKNOWN: "gate {p}: known after apply (the metrics are not computed yet)",
    ReasonCode.ALIAS_MOVED: "alias {p}: {before} -> {after}",
    ReasonCode.ALIAS_KEPT: "alias {p}",
    ReasonCode.ALIAS_HELD_BY_HAND: "alias {p}",
    ReasonCode.ALIAS_PINNED: "alias {p}: {before} -> {after} (pinned by the spec)",
    ReasonCode.SERVE_VERSION: "{p}: version {before} -> {after} (rolling update)",
    ReasonCode.SERVE_UNKNOWN: "{p}",
    ReasonCode.SERVICE_GONE: "not running: {p}",
    ReasonCode.SERVICE_UNHEALTHY: "unhealthy: {p}",
    ReasonCode.SERVICE_DEGRADED: "degraded: {p}",
    ReasonCode.SERVICE_DRIFT: "serves version {before}, the state records {after}",
    ReasonCode.SERVE_HELD: "{p}",
}


@fast_init
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
        """The message as printed; "{p}", "{before}" and "{after}" in _TEXTS are the path and the values."""
        template = _TEXTS[self.code]
        if "{" not in template:
            return template
        if self.code is ReasonCode.DATA_CHANGED:
            return template.format(before=_short(self.before), after=_short(self.after))
        if self.code in (ReasonCode.GATE_PASSED, ReasonCode.GATE_FAILED):  # before: the alias holder's value
            alias = self.path.split(" ")[2] if self.before is not None and len(self.path.split(" ")) > 2 else ""
            baseline = f" ({alias}: {_num(self.before)})" if self.before is not None else ""
            return template.format(p=self.path, after=_num(self.after), baseline=baseline)
        if self.code in (ReasonCode.ALIAS_MOVED, ReasonCode.ALIAS_PINNED, ReasonCode.SERVE_VERSION,
                         ReasonCode.SERVICE_DRIFT):  # version numbers; "none" when the alias was free
            return template.format(p=self.path, before="none" if self.before is None else self.before,
                                   after="none" if self.after is None else self.after)
        return template.format(p=self.path, before=_fmt(self.before), after=_fmt(self.after))

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
    CHECKED_OUT = "checked-out"
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
    CHECKED_OUT = "checked_out"
    UP_TO_DATE = "up_to_date"
    READ = "read"
    DESTROYED = "destroyed"
    FAILED = "failed"
    RETRIED = "retried"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    WARNING = "warning"
