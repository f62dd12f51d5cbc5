"""State store, lock and state commands: checksums, history, restore, journal recovery, unlock, push/pull."""

from __future__ import annotations

import json

import pytest

from mlspec.errors import LockedError, StateError
from mlspec.lock import StateLock
from mlspec.state import StateStore
from mlspec.storage import Location



def _step(fp: str) -> dict:
    """A step record as the step kind writes it (records are checked against schemas/state.schema.json)."""
    return {"kind": "step", "status": "succeeded", "fingerprint": fp, "facts": {}, "outputs": {}}

def test_write_read_roundtrip_history_and_checksum(tmp_path):
    store = StateStore(Location(str(tmp_path)), "ws")
    st = store.read("p")
    assert not st.exists and st.serial == 0
    st.resources["step.a"] = _step("f1")
    st = store.write(st)
    assert st.serial == 1
    st.resources["step.b"] = _step("f2")
    st = store.write(st)
    assert store.history_serials() == [1]
    again = store.read("p")
    assert again.serial == 2 and set(again.resources) == {"step.a", "step.b"}
    # a hand edit breaks the checksum: refused, naming the backup
    doc = tmp_path / "ws.state.json"
    doc.write_text(doc.read_text().replace('"f2"', '"f3"'))
    with pytest.raises(StateError) as e:
        store.read("p")
    assert "corrupt" in e.value.message and "mlspec state restore 1" in e.value.hint
    assert set(store.read_serial(1).resources) == {"step.a"}


def test_journal_entries_survive_a_crash_before_compaction(tmp_path):
    store = StateStore(Location(str(tmp_path)), "default")
    st = store.read("p")
    store.append(st, 1, "step.a", _step("x"))
    store.append(st, 2, "step.b", _step("y"))
    # no document yet (crash before the first compaction): a reader still sees both
    fresh = StateStore(Location(str(tmp_path)), "default").read("p")
    assert set(fresh.resources) == {"step.a", "step.b"} and fresh.lineage == st.lineage
    # a torn/foreign entry is ignored
    (tmp_path / "default.journal" / "000000003.json").write_text('{"lineage": "x", "seq": 3')
    assert set(StateStore(Location(str(tmp_path)), "default").read("p").resources) == {"step.a", "step.b"}
    st2 = store.write(fresh)
    assert st2.serial == 1 and not list((tmp_path / "default.journal").glob("*.json"))


def test_lock_is_exclusive_and_reports_its_holder(tmp_path):
    a = StateLock(Location(str(tmp_path)), "default")
    b = StateLock(Location(str(tmp_path)), "default")
    info = a.acquire("apply", "r1")
    with pytest.raises(LockedError) as e:
        b.acquire("apply", "r2", timeout=0.3)
    assert "(apply, run r1" in e.value.message and f"mlspec state unlock {info.id}" in e.value.hint
    a.release()
    b.acquire("apply")
    b.release()


def test_state_commands(project, tmp_path):
    assert project.apply().returncode == 0
    r = project.run("state", "list")
    assert "step.prepare" in r.stdout and "state serial 1" in r.stdout
    r = project.run("state", "show", "step.prepare", "--format", "json")
    assert json.loads(r.stdout)["facts"]["params"] == {"scale": 2.0}
    r = project.run("state", "show", "step.prepar")
    assert r.returncode == 1 and "did you mean 'step.prepare'" in r.stderr
    pulled = project.run("state", "pull").stdout
    assert json.loads(pulled)["serial"] == 1
    r = project.run("state", "rm", "step.side")
    assert r.returncode == 0 and "serial 2" in r.stdout
    plan = project.run("plan")
    assert "+ step.side" in plan.stdout
    # push the pulled document back: same lineage, serial moves forward
    (tmp_path / "s.json").write_text(pulled)
    r = project.run("state", "push", str(tmp_path / "s.json"))
    assert r.returncode == 1 and "older than the current" in r.stderr
    r = project.run("state", "push", str(tmp_path / "s.json"), "--force")
    assert r.returncode == 0, r.stderr
    assert "step.side" in project.run("state", "list").stdout
    # corrupt the document; restore a kept serial
    doc = project.root / ".mlspec/state/default.state.json"
    doc.write_text(doc.read_text()[:-20])
    r = project.run("plan")
    assert r.returncode == 1 and "mlspec state restore" in r.stderr and "Traceback" not in r.stderr
    r = project.run("state", "restore", "2")
    assert r.returncode == 0, r.stderr
    assert project.run("plan").returncode == 0
    h = project.run("state", "history").stdout
    assert "serial 2" in h


def test_unlock_needs_confirmation_or_force(project):
    assert project.apply().returncode == 0
    lock = StateLock(Location(str(project.root / ".mlspec/state")), "default")
    info = lock.acquire("apply", "r-held")
    r = project.apply()
    assert r.returncode == 1 and "the state is locked by" in r.stderr and info.id in r.stderr
    r = project.run("state", "unlock", info.id)
    assert r.returncode == 1 and "--force" in r.stderr
    r = project.run("state", "unlock", "wrong-id", "--force")
    assert r.returncode == 1 and info.id in r.stderr
    r = project.run("state", "unlock", info.id, "--force")
    assert r.returncode == 0
    assert project.apply().returncode == 0


def test_run_ids_sort_in_time_order_within_a_second():
    from mlspec.runs import new_run_id

    ids = [new_run_id(1_700_000_000 + ms / 1000) for ms in range(0, 1000, 7)]
    assert ids == sorted(ids)
