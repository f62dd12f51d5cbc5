"""The resource-kind protocol is the whole contract: a kind defined here, in the test, and installed as a
plugin (an ``mlspec.kinds`` entry point) is planned, applied, graphed, journaled, recovered after
``kill -9`` and destroyed like the built-in ones, through the real CLI, with no change to mlspec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

NOTE_KIND = '''
"""A "note": a text file written after a step, re-written when its text or the step's outputs change."""
import hashlib
import json
import time

from mlspec.core.kind import Change, Done, Node, Outcome, ResourceKind
from mlspec.core.types import Action, Reason, ReasonCode, Status, Verdict


class NoteKind(ResourceKind):
    name = "note"
    order = 60

    def nodes(self, spec):
        notes = spec.extensions.get("x-notes") or {}
        return [Node(f"note.{n}", self.name, (cfg["after"],) if cfg.get("after") else (), cfg)
                for n, cfg in sorted(notes.items())]

    def decide(self, node, record, facts, known, forced):
        ups = {u: known.get(u) for u in node.upstream}
        action = Action.UPDATE if record else Action.CREATE
        after = {"text": node.item["text"]}
        if any(v is None for v in ups.values()):
            return Change(node.address, self.name, action, Verdict.UNKNOWN,
                          tuple(Reason(ReasonCode.UPSTREAM_RERUN, u) for u in sorted(ups)), None, None, None, after)
        fp = "sha256:" + hashlib.sha256(json.dumps([node.item["text"], ups], sort_keys=True).encode()).hexdigest()
        if record and record.get("fingerprint") == fp and not forced:
            return Change(node.address, self.name, Action.NOOP, Verdict.UP_TO_DATE, (), fp, {"file": fp})
        if forced:
            reasons = (Reason(ReasonCode.FORCED),)
        elif not record:
            reasons = (Reason(ReasonCode.NEW),)
        elif record.get("text") != node.item["text"]:
            reasons = (Reason(ReasonCode.CHANGED, "text", record.get("text"), node.item["text"]),)
        else:
            reasons = tuple(Reason(ReasonCode.INPUT_CHANGED, u) for u in sorted(ups))
        return Change(node.address, self.name, action, Verdict.RUN, reasons, fp, None,
                      {"text": record.get("text")} if record else None, after, forced, ups)

    def start(self, node, change, run):
        out = run.spec.project_dir / "notes"
        out.mkdir(exist_ok=True)
        (out / f"{node.address[5:]}.txt").write_text(node.item["text"] + "\\n" + json.dumps(change.detail))
        with open(run.spec.project_dir / "notes.log", "a") as fh:
            fh.write(node.address + "\\n")
        now = time.time()
        record = {"kind": self.name, "fingerprint": change.fingerprint, "text": node.item["text"]}
        return Done(Outcome(node.address, Status.RAN, started=now, finished=now), record,
                    outputs={"file": change.fingerprint})

    def destroy(self, address, record, run):
        (run.spec.project_dir / "notes" / f"{address[5:]}.txt").unlink(missing_ok=True)
        return Done(Outcome(address, Status.DESTROYED), None, remove=True)
'''

STEPS = '''
import time
from pathlib import Path


def make(n: int = 1):
    return {"out": {"n": n}}


def slow(data: dict):
    Path("slow.started").write_text("x")
    time.sleep(30)
    return {"out": data}
'''


def _spec(text: str, with_slow: bool = False, n: int = 1) -> str:
    spec = f"""
        project: kinds
        steps:
          a: {{run: kk.steps:make, outputs: [out], params: {{n: {n}}}}}
        x-notes:
          hello: {{after: step.a, text: "{text}"}}
    """
    if with_slow:
        spec = spec.replace("        x-notes:", "          b: {run: kk.steps:slow, inputs: {data: step.a.out}, "
                                              "outputs: [out]}\n        x-notes:")
    return textwrap.dedent(spec)


@pytest.fixture
def plugin(tmp_path) -> dict:
    """An installed plugin distribution, visible to the CLI subprocesses through PYTHONPATH."""
    site = tmp_path / "site"
    (site / "notekind-0.1.dist-info").mkdir(parents=True)
    (site / "notekind.py").write_text(NOTE_KIND)
    (site / "notekind-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: notekind\nVersion: 0.1\n")
    (site / "notekind-0.1.dist-info" / "entry_points.txt").write_text("[mlspec.kinds]\nnote = notekind:NoteKind\n")
    return {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def proj(project, plugin):
    project.write("src/kk/__init__.py", "")
    project.write("src/kk/steps.py", STEPS)
    project.write("mlspec.yaml", _spec("first"))
    project.env = plugin
    return project


def _lines(p: Path) -> list[str]:
    return p.read_text().split() if p.exists() else []


def test_a_kind_defined_outside_mlspec_plans_applies_graphs_and_destroys(proj):
    env = proj.env
    plan = proj.run("plan", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "+ note.hello" in plan.stdout and "(known after apply)" in plan.stdout
    graph = proj.run("graph", env=env)
    assert "note.hello  <- step.a" in graph.stdout

    r = proj.run("apply", "--auto-approve", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert {"type": "event", "event": "finished", "address": "note.hello"}.items() <= \
        next(e for e in events if e.get("address") == "note.hello").items()
    assert (proj.root / "notes/hello.txt").read_text().startswith("first")
    assert proj.state()["resources"]["note.hello"]["text"] == "first"

    again = proj.run("plan", "--detailed-exitcode", env=env)
    assert again.returncode == 0 and "No changes" in again.stdout

    proj.write("mlspec.yaml", _spec("second"))
    changed = proj.run("plan", "--format", "json", env=env)
    ch = next(c for c in json.loads(changed.stdout)["resource_changes"] if c["address"] == "note.hello")
    assert ch["actions"] == ["update"] and ch["reasons"][0]["message"] == "text: first -> second"
    assert proj.run("apply", "--auto-approve", env=env).returncode == 0
    assert _lines(proj.root / "notes.log") == ["note.hello", "note.hello"]

    # upstream output changed: the note follows
    proj.write("mlspec.yaml", _spec("second", n=2))
    assert proj.run("apply", "--auto-approve", env=env).returncode == 0
    assert _lines(proj.root / "notes.log") == ["note.hello"] * 3

    # removed from the spec: its kind destroys it
    proj.write("mlspec.yaml", _spec("second", n=2).split("        x-notes:")[0].split("x-notes:")[0])
    gone = proj.run("plan", env=env)
    assert "- note.hello" in gone.stdout
    assert proj.run("apply", "--auto-approve", env=env).returncode == 0
    assert "note.hello" not in proj.state()["resources"]
    assert not (proj.root / "notes/hello.txt").exists()


def test_a_plugin_kind_is_journaled_and_recovered_after_kill_9(proj):
    env = proj.env
    proj.write("mlspec.yaml", _spec("first", with_slow=True))
    e = dict(os.environ, NO_COLOR="1", **env)
    p = subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(proj.root), "apply", "--auto-approve"],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (proj.root / "slow.started").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (proj.root / "slow.started").exists(), "the slow step never started"
    assert _lines(proj.root / "notes.log") == ["note.hello"]
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)

    # the note finished before the kill: the journal has it, the next apply recovers it and does not redo it
    proj.write("mlspec.yaml", _spec("first"))  # without the slow step
    r = proj.run("apply", "--auto-approve", env=env)
    assert r.returncode == 0, r.stderr
    assert "Recovered" in r.stderr
    assert proj.state()["resources"]["note.hello"]["text"] == "first"
    assert _lines(proj.root / "notes.log") == ["note.hello"]


def test_a_broken_kind_plugin_is_a_one_line_error(proj, tmp_path):
    site = Path(proj.env["PYTHONPATH"].split(os.pathsep)[0])
    (site / "notekind.py").write_text("raise ImportError('no module named notedeps')\n")
    r = proj.run("plan", env=proj.env)
    assert r.returncode == 1
    assert "resource-kind plugin 'note'" in r.stderr and "Traceback" not in r.stderr
