"""Records that outlive a process are checked against their published schemas when read: a record edited to
break its schema is a one-line error naming the file and the field (exit 1), never a KeyError later; and
every record mlspec writes is valid against its schema."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from conftest import REPO
from mlspec.hashing import canonical_json, hash_bytes


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((REPO / "schemas" / name).read_text()))


def _rechecksum(doc: dict) -> dict:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return dict(body, checksum=hash_bytes(canonical_json(body)))


def test_every_record_written_is_valid_against_its_schema(project):
    assert project.apply().returncode == 0
    root = project.root / ".mlspec"
    state = _validator("state.schema.json")
    assert not list(state.iter_errors(project.state()))
    for p in (root / "state/runs").glob("*.json"):
        assert not list(_validator("run.schema.json").iter_errors(json.loads(p.read_text()))), p
    entries = list((root / "artifacts/runcache").glob("*.json"))
    assert entries
    for p in entries:
        assert not list(_validator("runcache-entry.schema.json").iter_errors(json.loads(p.read_text()))), p


def test_a_state_document_that_breaks_its_schema_names_the_file_and_field(project):
    assert project.apply().returncode == 0
    path = project.root / ".mlspec/state/default.state.json"
    doc = json.loads(path.read_text())
    doc["resources"]["step.prepare"]["outputs"]["clean"]["hash"] = 3  # checksum made to match: only the schema
    path.write_text(json.dumps(_rechecksum(doc)))
    r = project.run("plan")
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert "default.state.json" in first and 'resources["step.prepare"].outputs.clean.hash' in first, r.stderr
    assert "Traceback" not in r.stderr
    assert "state restore" in r.stderr or "state push --force" in r.stderr  # the way out


def test_a_run_record_that_breaks_its_schema_names_the_file_and_field(project):
    assert project.apply().returncode == 0
    rec_path = sorted((project.root / ".mlspec/state/runs").glob("*.json"))[-1]
    rec = json.loads(rec_path.read_text())
    rec["counts"]["ran"] = "many"
    rec_path.write_text(json.dumps(rec))
    r = project.run("runs", "show", rec_path.stem)
    assert r.returncode == 1
    assert rec_path.name in r.stderr and "counts.ran" in r.stderr and "Traceback" not in r.stderr
    assert project.apply().returncode == 0  # a damaged run record never blocks an apply


def test_a_damaged_journal_entry_names_the_file_and_field(project, tmp_path):
    assert project.apply().returncode == 0
    # two journal entries as a killed apply leaves them; the first one broken against the schema
    state = project.state()
    jdir = project.root / ".mlspec/state/default.journal"
    jdir.mkdir(exist_ok=True)
    rec = dict(state["resources"]["step.side"], verdict="teleported")
    for seq, r in ((1, rec), (2, state["resources"]["step.prepare"])):
        entry = {"lineage": state["lineage"], "fingerprint_key": state["fingerprint_key"], "seq": seq,
                 "address": "step.side" if seq == 1 else "step.prepare", "record": r}
        entry["checksum"] = hash_bytes(canonical_json(entry))
        (jdir / f"{seq:09d}.json").write_bytes(canonical_json(entry))
    r = project.run("plan")
    assert r.returncode == 1
    assert "000000001.json" in r.stderr and "verdict" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_record_types_round_trip_and_refuse_a_bad_field(project):
    from mlspec.records import DatasetRecord, RunCacheEntry, StepRecord

    assert project.apply().returncode == 0
    st = project.state()
    rec = StepRecord.from_dict(st["resources"]["step.prepare"], "step.prepare")
    assert rec.to_dict() == st["resources"]["step.prepare"]
    ds = DatasetRecord.from_dict(st["resources"]["dataset.nums"], "dataset.nums")
    assert ds.to_dict() == st["resources"]["dataset.nums"]
    entry = json.loads(next((project.root / ".mlspec/artifacts/runcache").glob("*.json")).read_text())
    assert RunCacheEntry.from_dict(entry).fingerprint == entry["fingerprint"]
    bad = dict(st["resources"]["step.prepare"], outputs={"clean": {"hash": 3}})
    try:
        StepRecord.from_dict(bad, "step.prepare")
    except ValueError as exc:
        assert 'outputs.clean.hash' in str(exc)
    else:
        raise AssertionError("a record with a bad field was accepted")
