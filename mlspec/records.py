"""Records that outlive a process, checked against their published JSON Schemas whenever they are read.

    state.schema.json           a workspace's state document (and each resource record in it)
    journal-entry.schema.json   one journaled resource
    run.schema.json             a run record
    runcache-entry.schema.json  a run-cache entry
    task.schema.json            the runner's task payload
    events.schema.json          a line of `apply --format json`
    plan.schema.json            a plan (`plan --format json`, saved plans)

A record that does not match gives :func:`problem` = "FIELD: what is wrong" (e.g. ``resources["step.a"].
outputs.model.hash: 3 is not of type 'string'``), which the stores turn into a one-line error naming the
file: never a KeyError later. The check is the compiled yes/no predicate of mlspec.schema (a few
microseconds a record); jsonschema runs only to explain a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATE = "state.schema.json"
JOURNAL_ENTRY = "journal-entry.schema.json"
RUN = "run.schema.json"
RUNCACHE_ENTRY = "runcache-entry.schema.json"
TASK = "task.schema.json"


def _where(path) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "." in str(p) or "[" in str(p):
            out += f'["{p}"]'
        else:
            out += ("." if out else "") + str(p)
    return out or "the document"


def problem(schema: str, obj: Any) -> str:
    """'' when ``obj`` matches the named schema; else the first problem as "FIELD: message"."""
    from mlspec.schema import _fast_check, load_schema

    check = _fast_check(schema)
    if check is not None and check(obj):
        return ""
    from jsonschema import Draft202012Validator

    def leaves(errors):
        for e in errors:
            if e.context:
                yield from leaves(e.context)
            else:
                yield e

    found = list(leaves(Draft202012Validator(load_schema(schema)).iter_errors(obj)))
    if not found:
        return ""
    # the deepest problem says it best; of a record's alternatives (its kind's schema, a plugin's), not the one
    # that merely says "this is not another kind"
    err = max(found, key=lambda e: (e.validator not in ("not", "const"), len(e.absolute_path)))
    message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
    return f"{_where(err.absolute_path)}: {message}"


# --- the record types -------------------------------------------------------------------------------
# Kinds build their records through these (the field list is the contract, the schema checks it on read);
# in memory the state keeps the plain dicts they produce, which is what the JSON holds.
class _Record:
    SCHEMA = ""
    IN_STATE = False  # a resource record: checked as the state document would hold it

    def to_dict(self) -> dict:
        """The fields as a dict, values shared (dataclasses.asdict deep-copies: 0.5 ms a step record)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict, address: str = ""):
        """The record from plain data, checked against its schema (ValueError naming the field otherwise)."""
        checked = data
        if cls.IN_STATE:
            checked = {"format_version": 1, "lineage": "-", "serial": 0,
                       "resources": {address or f"{data.get('kind', 'x')}.x": data}}
        found = problem(cls.SCHEMA, checked)
        if found:
            raise ValueError(found)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class StepRecord(_Record):
    SCHEMA, IN_STATE = STATE, True
    fingerprint: str
    facts: dict
    outputs: dict  # name -> {"hash", "size", "format"}
    metrics: dict = field(default_factory=dict)
    run_id: str = ""
    log: str | None = None
    duration: float = 0.0
    verdict: str = "ran"  # ran | restored
    finished: float = 0.0
    kind: str = "step"
    status: str = "succeeded"


@dataclass
class DatasetRecord(_Record):
    SCHEMA, IN_STATE = STATE, True
    hash: str
    size: int = 0
    uri: str = ""
    run_id: str = ""
    kind: str = "dataset"


@dataclass
class RunCacheEntry(_Record):
    SCHEMA = RUNCACHE_ENTRY
    fingerprint: str
    address: str
    outputs: dict
    metrics: dict = field(default_factory=dict)
    log: str | None = None
    run_id: str = ""
    finished: float = 0.0


@dataclass
class TaskPayload(_Record):
    """What a backend hands the runner for one step (schemas/task.schema.json)."""

    SCHEMA = TASK
    format_version: int
    mlspec_version: str
    address: str
    run: str
    cmd: str
    params: dict
    inputs: dict
    outputs: list
    metrics: list
    project_dir: str
    code_paths: list
    artifacts: dict
    env: dict = field(default_factory=dict)
    external_paths: list = field(default_factory=list)
    output_opts: dict = field(default_factory=dict)
    output_formats: dict = field(default_factory=dict)  # output name -> {"format", "save_args"} as declared
