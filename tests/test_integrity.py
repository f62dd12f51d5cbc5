"""Artifact integrity: corruption in the content-addressed store is caught on every read, never recorded as
success, quarantined, and repaired by re-running the producing step. All through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _obj(project, digest: str) -> Path:
    h = digest.split(":", 1)[1]
    return project.root / ".mlspec/artifacts/objects" / h[:2] / h[2:]


def _output_hash(project, addr: str, name: str) -> str:
    return project.state()["resources"][addr]["outputs"][name]["hash"]


def _flip(path: Path, at: int = -1) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _quarantined(project) -> list[Path]:
    q = project.root / ".mlspec/artifacts/quarantine"
    return sorted(q.iterdir()) if q.is_dir() else []


def test_byte_flipped_input_is_refused_quarantined_and_producer_reruns(project):
    assert project.apply().returncode == 0
    clean = _output_hash(project, "step.prepare", "clean")
    _flip(_obj(project, clean))

    r = project.apply("--replace", "step.train")  # train reads prepare's output again
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert clean in out and "step.prepare.clean" in out and "corrupt" in out, out
    assert not _obj(project, clean).exists() and len(_quarantined(project)) == 1
    # nothing derived from the corrupt bytes was recorded as success
    assert {a for a, s in project.last_run()["steps"].items() if s["status"] == "ran"} == set()

    plan = project.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout
    assert "step.prepare" in plan.stdout and "output clean missing or corrupt" in plan.stdout

    assert project.apply().returncode == 0
    assert "step.prepare" in project.ran()
    assert _output_hash(project, "step.prepare", "clean") == clean  # made again, same content
    assert _obj(project, clean).exists()


def test_emptied_or_missing_object_is_not_no_changes(project):
    assert project.apply().returncode == 0
    clean = _output_hash(project, "step.prepare", "clean")
    summary = _output_hash(project, "step.side", "summary")
    p = _obj(project, clean)
    os.chmod(p, 0o644)
    p.write_bytes(b"")
    _obj(project, summary).unlink()

    plan = project.run("plan", "--detailed-exitcode", "--format", "json")
    assert plan.returncode == 2
    changes = {c["address"]: c for c in json.loads(plan.stdout)["resource_changes"]}
    assert changes["step.prepare"]["reasons"][0]["code"] == "output_missing"
    assert changes["step.side"]["reasons"][0] == {
        "code": "output_missing", "path": "summary",
        "message": "output summary missing or corrupt in the artifact store"}
    assert project.apply().returncode == 0
    assert {"step.prepare", "step.side"} <= project.ran()
    assert project.run("plan", "--detailed-exitcode").returncode == 0


def test_edited_runcache_entry_never_restores_another_output(project):
    spec = project.root / "mlspec.yaml"
    assert project.apply().returncode == 0
    first = _output_hash(project, "step.prepare", "clean")
    spec.write_text(spec.read_text().replace("scale: 2.0", "scale: 3.0"))
    assert project.apply().returncode == 0
    second = _output_hash(project, "step.prepare", "clean")
    assert first != second
    # point the scale=2.0 entry at the scale=3.0 output: valid JSON, wrong content
    for entry_path in (project.root / ".mlspec/artifacts/runcache").glob("*.json"):
        entry = json.loads(entry_path.read_text())
        if entry.get("address") == "step.prepare" and entry["outputs"]["clean"]["hash"] == first:
            entry["outputs"]["clean"] = dict(entry["outputs"]["clean"], hash=second)
            entry_path.write_text(json.dumps(entry))
            break
    else:
        raise AssertionError("no run-cache entry for the first prepare")
    spec.write_text(spec.read_text().replace("scale: 3.0", "scale: 2.0"))
    plan = project.run("plan", "--format", "json")
    verdicts = {c["address"]: c["verdict"] for c in json.loads(plan.stdout)["resource_changes"]}
    assert verdicts["step.prepare"] == "run"  # not "restore": the entry fails its checksum
    assert project.apply().returncode == 0
    assert "step.prepare" in project.ran()
    assert _output_hash(project, "step.prepare", "clean") == first


def test_restore_verifies_content_and_runs_instead(project):
    spec = project.root / "mlspec.yaml"
    assert project.apply().returncode == 0
    first = _output_hash(project, "step.prepare", "clean")
    spec.write_text(spec.read_text().replace("scale: 2.0", "scale: 3.0"))
    assert project.apply().returncode == 0
    _flip(_obj(project, first), at=10)  # same size: only reading the content can tell
    spec.write_text(spec.read_text().replace("scale: 3.0", "scale: 2.0"))
    r = project.apply()
    assert r.returncode == 0, r.stderr
    assert "quarantined; running the step instead" in r.stdout
    assert "step.prepare" in project.ran()
    assert _output_hash(project, "step.prepare", "clean") == first
    assert project.run("artifacts", "verify").returncode == 0


def test_artifacts_get_checks_what_it_writes(project, tmp_path):
    assert project.apply().returncode == 0
    clean = _output_hash(project, "step.prepare", "clean")
    size = project.state()["resources"]["step.prepare"]["outputs"]["clean"]["size"]
    dest = tmp_path / "clean.parquet"
    r = project.run("artifacts", "get", "step.prepare.clean", str(dest))
    assert r.returncode == 0 and f"({size} bytes" in r.stdout and dest.stat().st_size == size
    dest.unlink()
    _flip(_obj(project, clean))
    r = project.run("artifacts", "get", "step.prepare.clean", str(dest))
    assert r.returncode == 1
    assert "corrupt" in r.stderr and "step.prepare.clean" in r.stderr and "Traceback" not in r.stderr
    assert not dest.exists() and not list(tmp_path.glob("clean.parquet.part*"))


def test_artifacts_verify_and_repair(project):
    assert project.apply().returncode == 0
    ok = project.run("artifacts", "verify")
    assert ok.returncode == 0 and "all intact" in ok.stdout
    clean = _output_hash(project, "step.prepare", "clean")
    summary = _output_hash(project, "step.side", "summary")
    _flip(_obj(project, clean))
    _obj(project, summary).unlink()

    bad = project.run("artifacts", "verify", "--format", "json")
    assert bad.returncode == 1
    found = {p["object"]: p for p in json.loads(bad.stdout)["problems"]}
    assert found[summary]["problem"] == "missing" and found[summary]["used_by"] == ["step.side.summary"]
    assert found[clean]["problem"].startswith("corrupt") and found[clean]["used_by"] == ["step.prepare.clean"]

    fixed = project.run("artifacts", "verify", "--repair")
    assert fixed.returncode == 0 and "quarantined" in fixed.stdout
    assert len(_quarantined(project)) == 1
    assert project.apply().returncode == 0
    assert {"step.prepare", "step.side"} <= project.ran()
    assert project.run("artifacts", "verify").returncode == 0


def test_abandoned_temp_objects_are_cleaned_on_next_apply(project):
    assert project.apply().returncode == 0
    objects = project.root / ".mlspec/artifacts/objects"
    old = objects / ".obj.abandoned"
    fresh = objects / ".obj.being-written"
    old.write_bytes(b"x" * 10)
    fresh.write_bytes(b"y" * 10)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert project.apply().returncode == 0
    assert not old.exists()
    assert fresh.exists()  # another apply (another workspace) may be writing it right now
