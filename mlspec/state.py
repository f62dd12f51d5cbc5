"""Recorded state: one checksummed JSON document per workspace, a journal of finished steps, history.

Layout under ``storage.state`` (any fsspec URL)::

    <ws>.state.json            the current document (format_version, lineage, serial, checksum, resources)
    <ws>.history/<serial>.json the previous serials, for `mlspec state restore SERIAL`
    <ws>.journal/<seq>.json    one small file per step finished since the last compaction
    <ws>.lock                  the lock (see mlspec.lock)
    runs/<run id>.json         run records (see mlspec.runs)

A finished step costs one small atomic write (a journal entry), not a rewrite of the whole document, so
apply stays linear in the number of steps; the document is compacted from the journal when an apply
starts and when it ends. Readers (plan) see document + journal without writing anything.
"""

from __future__ import annotations

import json
import re
import secrets as _secrets
import sys
import time
import uuid
from dataclasses import dataclass, field


from mlspec.errors import StateError
from mlspec.hashing import canonical_json, checksum_ok, hash_bytes
from mlspec.storage import Location

STATE_FORMAT_VERSION = 1
HISTORY_KEEP = 50

# --- non-finite numbers --------------------------------------------------------------------------------
# JSON has no NaN or Infinity. A metric (or any other recorded number) that is not finite is stored as the
# string "nan", "inf" or "-inf", and metrics are read back as the float. Metrics are always numbers, so a
# string there is unambiguous. (docs/state.md, "Numbers that are not finite")
NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def json_safe(obj):
    """``obj`` with every non-finite float replaced by "nan", "inf" or "-inf"; the same object if none."""
    if isinstance(obj, float):
        if obj != obj:
            return "nan"
        if obj in (float("inf"), float("-inf")):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        out = None
        for k, v in obj.items():
            nv = json_safe(v)
            if nv is not v:
                if out is None:
                    out = dict(obj)
                out[k] = nv
        return obj if out is None else out
    if isinstance(obj, (list, tuple)):
        items = [json_safe(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj)) else items
    return obj


def read_metrics(metrics):
    """Recorded metrics as numbers: "nan", "inf" and "-inf" become floats again."""
    if not isinstance(metrics, dict):
        return metrics
    if not any(isinstance(v, str) for v in metrics.values()):
        return metrics
    return {k: NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in metrics.items()}


def _read_record(rec: dict) -> dict:
    if isinstance(rec.get("metrics"), dict):
        m = read_metrics(rec["metrics"])
        if m is not rec["metrics"]:
            rec = dict(rec, metrics=m)
    return rec


def read_resources(resources: dict) -> dict:
    """Recorded resources as read from a file: their metrics as numbers again."""
    return {a: _read_record(r) for a, r in resources.items()}


# --- shape checks: what a reader needs of each file before it trusts it ---------------------------------
# Small functions, one per record type, that return the first problem found (or ""). Keep them that way:
# they are meant to be replaced by typed records and JSON Schemas.
def _kind(v) -> str:
    return {type(None): "null", list: "a list", dict: "an object", str: "a string", bool: "a boolean"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def check_fields(doc, fields: dict) -> str:
    """``fields`` maps a key to a type (or tuple of types); a missing or mistyped key is the problem."""
    if not isinstance(doc, dict):
        return f"it holds {_kind(doc)}, not a JSON object"
    for key, types in fields.items():
        if key not in doc:
            return f"it has no '{key}'"
        v = doc[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple)
                                                                                else (types,))):
            return f"its '{key}' is {_kind(v)}"
    return ""


def state_doc_problem(doc) -> str:
    problem = check_fields(doc, {"lineage": str, "serial": int, "resources": dict})
    if problem:
        return problem
    if doc["serial"] < 0:
        return "its 'serial' is negative"
    for key in ("workspace", "project", "fingerprint_key"):
        if key in doc and not isinstance(doc[key], str):
            return f"its '{key}' is {_kind(doc[key])}"
    for addr, rec in doc["resources"].items():
        if not isinstance(rec, dict):
            return f"its resource {addr} is {_kind(rec)}, not an object"
    from mlspec import records

    return records.problem(records.STATE, doc)


def journal_entry_problem(entry) -> str:
    problem = check_fields(entry, {"lineage": str, "seq": int, "address": str})
    if problem:
        return problem
    if entry.get("remove") is True:
        return ""
    if not isinstance(entry.get("record"), dict):
        return f"its 'record' is {_kind(entry.get('record'))}, not an object"
    from mlspec import records

    problem = records.problem(records.JOURNAL_ENTRY, entry)
    if not problem:  # the record itself, as the state document would hold it
        problem = records.problem(records.STATE, {"format_version": 1, "lineage": entry["lineage"], "serial": 0,
                                                  "resources": {entry["address"]: entry["record"]}})
    return problem


@dataclass
class State:
    lineage: str
    serial: int = 0
    workspace: str = "default"
    project: str = ""
    fingerprint_key: str = ""
    resources: dict = field(default_factory=dict)
    format_version: int = STATE_FORMAT_VERSION
    exists: bool = True  # False for the empty state of a workspace never applied

    def to_doc(self) -> dict:
        """The document: non-finite numbers as strings, the checksum over the canonical form of the rest."""
        doc = {"format_version": self.format_version, "lineage": self.lineage, "serial": self.serial,
               "workspace": self.workspace, "project": self.project, "fingerprint_key": self.fingerprint_key,
               "resources": self.resources}
        raw = canonical_json(doc)
        if b"NaN" in raw or b"Infinity" in raw:  # rare: only then walk the records (json_safe)
            doc["resources"] = json_safe(self.resources)
            raw = canonical_json(doc)
        doc["checksum"] = hash_bytes(raw)
        return doc

    def to_bytes(self) -> bytes:
        """The document as a file: the serial near the top (a truncated file still says its serial), the
        resources with sorted keys (stable diffs), the checksum last."""
        doc = self.to_doc()
        head = {k: v for k, v in doc.items() if k not in ("resources", "checksum")}
        text = json.dumps(head, indent=1)[:-2]  # without the closing "\n}"
        body = json.dumps(doc["resources"], indent=1, sort_keys=True).replace("\n", "\n ")
        return f'{text},\n "resources": {body},\n "checksum": {json.dumps(doc["checksum"])}\n}}'.encode()

    @classmethod
    def from_doc(cls, doc, where: str) -> "State":
        """Raises ValueError (the problem) for a document that cannot be trusted, StateError for another format."""
        if not isinstance(doc, dict):
            raise ValueError(f"it holds {_kind(doc)}, not a JSON object")
        if not checksum_ok(doc):
            raise ValueError("it fails its checksum (edited, or damaged)")
        if doc.get("format_version") != STATE_FORMAT_VERSION:
            raise StateError(f"state at {where} has format_version {doc.get('format_version')}; this mlspec "
                             f"reads version {STATE_FORMAT_VERSION}", hint="upgrade mlspec")
        problem = state_doc_problem(doc)
        if problem:
            raise ValueError(problem)
        return cls(lineage=doc["lineage"], serial=doc["serial"], workspace=doc.get("workspace", "default"),
                   project=doc.get("project", ""), fingerprint_key=doc.get("fingerprint_key", ""),
                   resources=read_resources(doc["resources"]))

    @classmethod
    def new(cls, workspace: str, project: str, lineage: str | None = None, key: str | None = None) -> "State":
        return cls(lineage=lineage or str(uuid.uuid4()), serial=0, workspace=workspace, project=project,
                   fingerprint_key=key or _secrets.token_hex(16), exists=False)


def _loose_serial(raw: bytes) -> int | None:
    """The serial a damaged document claims, if it still says one (never trusted for anything but a floor)."""
    found = [int(m) for m in re.findall(rb'"serial"\s*:\s*(\d{1,18})', raw or b"")]
    return max(found) if found else None


class StateStore:
    """Reads and writes one workspace's state through fsspec."""

    def __init__(self, location: Location, workspace: str = "default", warn=None):
        self.loc = location
        self.ws = workspace
        self.doc_name = f"{workspace}.state.json"
        self.history = f"{workspace}.history"
        self.journal = f"{workspace}.journal"
        self._warn = warn
        self._warned: set = set()

    @property
    def where(self) -> str:
        return self.loc.join(self.doc_name)

    def warn(self, message: str) -> None:
        """A one-line warning on stderr, once per store."""
        if message in self._warned:
            return
        self._warned.add(message)
        if self._warn is not None:
            self._warn(message)
        else:
            print(f"Warning: {message}", file=sys.stderr, flush=True)

    def restore_hint(self) -> str:
        serials = self.history_serials()
        if serials:
            return f"restore the last good copy: mlspec state restore {serials[-1]}"
        return (f"no earlier serial is kept: move {self.where} away to start afresh (every step runs again), "
                "or push a good copy with `mlspec state push --force FILE`")

    # --- reading ------------------------------------------------------------------------------
    def _read_doc(self) -> State | None:
        raw = self.loc.read_bytes(self.doc_name)
        if raw is None:
            return None
        try:
            return State.from_doc(json.loads(raw), self.where)
        except ValueError as exc:  # json's errors are ValueErrors too
            problem = "it is not JSON (truncated?)" if isinstance(exc, json.JSONDecodeError) or \
                isinstance(exc, UnicodeDecodeError) else str(exc)
            raise StateError(f"state at {self.where} is corrupt: {problem}", hint=self.restore_hint()) from None

    def _journal_files(self) -> list[str]:
        return sorted(n for n in self.loc.list(self.journal) if n.endswith(".json") and n[:-5].isdigit())

    def _journal_entry(self, name: str) -> tuple[dict | None, str]:
        """One journal entry and "", or None and what is wrong with it."""
        raw = self.loc.read_bytes(f"{self.journal}/{name}")
        if raw is None:
            return None, "it vanished while being read"
        try:
            entry = json.loads(raw)
        except ValueError:
            return None, "it is not JSON (torn by a crash?)"
        problem = journal_entry_problem(entry)
        if problem:
            return None, problem
        if not checksum_ok(entry):
            return None, "it fails its checksum (torn, or edited)"
        return entry, ""

    def _journal(self) -> list[dict]:
        """Every trustworthy journal entry, in order. The last entry may be torn by a crash: it is skipped with
        a warning (that step runs again). A damaged entry before it is an error: the steps after it depend on
        it, so the journal cannot be replayed past it."""
        names = self._journal_files()
        entries = []
        for i, name in enumerate(names):
            entry, problem = self._journal_entry(name)
            if entry is not None:
                entries.append(entry)
                continue
            path = self.loc.join(self.journal, name)
            if i == len(names) - 1:
                self.warn(f"skipped the last journal entry {path}: {problem}; the step it recorded "
                          "will run again")
                continue
            raise StateError(f"journal entry {path} is corrupt: {problem}",
                             hint=f"it records one finished step; delete it and that step runs again on the next "
                                  f"apply: rm {path}")
        return entries

    def journal_entries(self, lineage: str) -> list[dict]:
        entries = [e for e in self._journal() if e["lineage"] == lineage]
        entries.sort(key=lambda e: e["seq"])
        return entries

    def read(self, project: str = "") -> State:
        """The effective state (document + journal), or a fresh empty one. Writes nothing."""
        st = self._read_doc()
        journal = self._journal()
        if st is None:
            st = State.new(self.ws, project)
            # a crash before the first compaction leaves only journal entries: recover them
            if journal:
                st.lineage = journal[0]["lineage"]
                key = journal[0].get("fingerprint_key")
                st.fingerprint_key = key if isinstance(key, str) and key else st.fingerprint_key
        for entry in sorted((e for e in journal if e["lineage"] == st.lineage), key=lambda e: e["seq"]):
            if entry.get("remove") is True:
                st.resources.pop(entry["address"], None)
            else:
                st.resources[entry["address"]] = _read_record(entry["record"])
        return st

    def history_serials(self) -> list[int]:
        out = []
        for n in self.loc.list(self.history):
            if n.endswith(".json") and n[:-5].isdigit():
                out.append(int(n[:-5]))
        return sorted(out)

    def read_serial(self, serial: int) -> State:
        raw = self.loc.read_bytes(f"{self.history}/{serial}.json")
        if raw is None:
            cur = self._read_doc()
            if cur is not None and cur.serial == serial:
                return cur
            raise StateError(f"no kept state with serial {serial}",
                             hint=f"kept serials: {', '.join(map(str, self.history_serials())) or 'none'}")
        where = self.loc.join(self.history, f"{serial}.json")
        try:
            return State.from_doc(json.loads(raw), where)
        except ValueError as exc:
            others = [s for s in self.history_serials() if s != serial]
            raise StateError(f"kept state {where} is corrupt too: "
                             f"{'it is not JSON' if isinstance(exc, json.JSONDecodeError) else exc}",
                             hint=f"other kept serials: {', '.join(map(str, others)) or 'none'}") from None

    def highest_serial(self, current: bytes | None = None) -> int:
        """The highest serial any document of this workspace is known to have had: kept ones, the current one
        (even a damaged one, if it still says), and damaged ones set aside. A new document goes above it."""
        known = self.history_serials()
        if current is None:
            current = self.loc.read_bytes(self.doc_name) or b""
        cur = _loose_serial(current)
        if cur is not None:
            known.append(cur)
        for n in self.loc.list(self.history):
            if n.startswith("corrupt-") and n.split("-")[1].isdigit():
                known.append(int(n.split("-")[1]))
        return max(known, default=0)

    # --- writing (callers hold the lock) ------------------------------------------------------
    def write(self, st: State, floor: int = 0) -> State:
        """Write ``st`` as the next serial; keep the current document in history; clear the journal.

        The new serial is above every serial this workspace has had (and above ``floor``), so a serial is never
        reused: a saved plan made against a replaced document is refused as stale."""
        cur_raw = self.loc.read_bytes(self.doc_name)
        if cur_raw is not None:
            try:
                cur = json.loads(cur_raw)
                problem = state_doc_problem(cur)
            except ValueError:
                cur, problem = None, "not JSON"
            if not problem:
                self.loc.write_bytes(f"{self.history}/{cur['serial']}.json", cur_raw)
            else:  # a damaged document is set aside for inspection, under a name no restore lists
                claimed = _loose_serial(cur_raw)
                self.loc.write_bytes(f"{self.history}/corrupt-{claimed if claimed is not None else 'x'}-"
                                     f"{int(time.time())}.json", cur_raw)
        st.serial = max(st.serial, self.highest_serial(cur_raw), floor) + 1
        st.exists = True
        self.loc.write_bytes(self.doc_name, st.to_bytes())
        for name in self.loc.list(self.journal):
            self.loc.delete(f"{self.journal}/{name}")
        serials = self.history_serials()
        for old in serials[:-HISTORY_KEEP]:
            self.loc.delete(f"{self.history}/{old}.json")
        return st

    def append(self, st: State, seq: int, address: str, record: dict | None) -> None:
        """Journal one finished (or removed) resource: one small atomic write."""
        entry = {"lineage": st.lineage, "fingerprint_key": st.fingerprint_key, "seq": seq, "address": address}
        if record is None:
            entry["remove"] = True
        else:
            entry["record"] = json_safe(record)
        entry["checksum"] = hash_bytes(canonical_json(entry))
        self.loc.write_bytes(f"{self.journal}/{seq:09d}.json", canonical_json(entry))
        if record is None:
            st.resources.pop(address, None)
        else:
            st.resources[address] = record

    def next_seq(self) -> int:
        names = [n for n in self.loc.list(self.journal) if n.endswith(".json") and n[:-5].isdigit()]
        return max((int(n[:-5]) for n in names), default=0) + 1
