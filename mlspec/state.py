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
import secrets as _secrets
import uuid
from dataclasses import dataclass, field
from typing import Mapping

from mlspec.errors import StateError
from mlspec.hashing import canonical_json, hash_bytes
from mlspec.storage import Location

STATE_FORMAT_VERSION = 1
HISTORY_KEEP = 50


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
        doc = {"format_version": self.format_version, "lineage": self.lineage, "serial": self.serial,
               "workspace": self.workspace, "project": self.project, "fingerprint_key": self.fingerprint_key,
               "resources": {k: self.resources[k] for k in sorted(self.resources)}}
        doc["checksum"] = hash_bytes(canonical_json(doc))
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping, where: str) -> "State":
        body = {k: v for k, v in doc.items() if k != "checksum"}
        if doc.get("checksum") != hash_bytes(canonical_json(body)):
            raise ValueError("checksum mismatch")
        if doc.get("format_version") != STATE_FORMAT_VERSION:
            raise StateError(f"state at {where} has format_version {doc.get('format_version')}; this mlspec "
                             f"reads version {STATE_FORMAT_VERSION}", hint="upgrade mlspec")
        return cls(lineage=doc["lineage"], serial=int(doc["serial"]), workspace=doc.get("workspace", "default"),
                   project=doc.get("project", ""), fingerprint_key=doc.get("fingerprint_key", ""),
                   resources=dict(doc.get("resources") or {}))

    @classmethod
    def new(cls, workspace: str, project: str, lineage: str | None = None, key: str | None = None) -> "State":
        return cls(lineage=lineage or str(uuid.uuid4()), serial=0, workspace=workspace, project=project,
                   fingerprint_key=key or _secrets.token_hex(16), exists=False)


class StateStore:
    """Reads and writes one workspace's state through fsspec."""

    def __init__(self, location: Location, workspace: str = "default"):
        self.loc = location
        self.ws = workspace
        self.doc_name = f"{workspace}.state.json"
        self.history = f"{workspace}.history"
        self.journal = f"{workspace}.journal"

    @property
    def where(self) -> str:
        return self.loc.join(self.doc_name)

    # --- reading ------------------------------------------------------------------------------
    def _read_doc(self) -> State | None:
        raw = self.loc.read_bytes(self.doc_name)
        if raw is None:
            return None
        try:
            return State.from_doc(json.loads(raw), self.where)
        except StateError:
            raise
        except (ValueError, KeyError, TypeError):
            serials = self.history_serials()
            hint = (f"restore the last good copy: mlspec state restore {serials[-1]}" if serials
                    else "no earlier serial is kept; move the file away to start afresh")
            raise StateError(f"state at {self.where} is corrupt (it fails its checksum or is not JSON)",
                             hint=hint) from None

    def journal_entries(self, lineage: str) -> list[dict]:
        entries = []
        for name in self.loc.list(self.journal):
            if not name.endswith(".json"):
                continue
            raw = self.loc.read_bytes(f"{self.journal}/{name}")
            try:
                entry = json.loads(raw)
                body = {k: v for k, v in entry.items() if k != "checksum"}
                if entry.get("checksum") != hash_bytes(canonical_json(body)):
                    continue  # torn or foreign: never trust it
            except (ValueError, TypeError):
                continue
            if entry.get("lineage") == lineage:
                entries.append(entry)
        entries.sort(key=lambda e: e["seq"])
        return entries

    def read(self, project: str = "") -> State:
        """The effective state (document + journal), or a fresh empty one. Writes nothing."""
        st = self._read_doc()
        if st is None:
            st = State.new(self.ws, project)
            # a crash before the first compaction leaves only journal entries: recover them
            orphans = [n for n in self.loc.list(self.journal) if n.endswith(".json")]
            if orphans:
                first = json.loads(self.loc.read_bytes(f"{self.journal}/{orphans[0]}") or b"{}")
                if first.get("lineage"):
                    st.lineage = first["lineage"]
                    st.fingerprint_key = first.get("fingerprint_key", st.fingerprint_key)
        for entry in self.journal_entries(st.lineage):
            if entry.get("remove"):
                st.resources.pop(entry["address"], None)
            else:
                st.resources[entry["address"]] = entry["record"]
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
        try:
            return State.from_doc(json.loads(raw), f"{self.history}/{serial}.json")
        except (ValueError, KeyError, TypeError):
            raise StateError(f"kept state serial {serial} is corrupt too") from None

    # --- writing (callers hold the lock) ------------------------------------------------------
    def write(self, st: State) -> State:
        """Write ``st`` as the next serial; keep the current document in history; clear the journal."""
        cur_raw = self.loc.read_bytes(self.doc_name)
        if cur_raw is not None:
            try:
                cur = json.loads(cur_raw)
                self.loc.write_bytes(f"{self.history}/{int(cur['serial'])}.json", cur_raw)
            except (ValueError, KeyError, TypeError):
                pass  # a corrupt current document is not worth keeping
        st.serial += 1
        st.exists = True
        self.loc.write_bytes(self.doc_name, json.dumps(st.to_doc(), indent=1, sort_keys=True).encode())
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
            entry["record"] = record
        entry["checksum"] = hash_bytes(canonical_json(entry))
        self.loc.write_bytes(f"{self.journal}/{seq:09d}.json", canonical_json(entry))
        if record is None:
            st.resources.pop(address, None)
        else:
            st.resources[address] = record

    def next_seq(self) -> int:
        names = [n for n in self.loc.list(self.journal) if n.endswith(".json") and n[:-5].isdigit()]
        return max((int(n[:-5]) for n in names), default=0) + 1
