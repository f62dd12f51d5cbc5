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
