"""The closed loop of examples/churn, end to end through the CLI with the real prediction service: serve version 1,
send drifted traffic (examples/churn/drift.py, which also delivers the new data as the warehouse's next export),
`mlspec monitor` reports the drift, `mlspec reconcile` retrains on the new data, gates, promotes and rolls the
deployment out to version 2; a second pass does nothing (the trigger is in its cooldown)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from mlspec.testing import free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "churn"


def _served_versions(port: int) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/churn-clf", timeout=10) as r:
        return json.loads(r.read())["versions"]


@pytest.fixture
def churn(tmp_path):
    root = tmp_path / "churn"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".mlspec", "__pycache__", "0001-*.csv"))
    port = free_port()
    over = [f"deployments.churn-api.port={port}"]

    def cli(*args, **kw):
        return run_cli("-C", str(root), *args, *over, **kw)

    yield root, port, cli
    cli("destroy", "--auto-approve")


def test_drift_retrains_gates_promotes_and_rolls_out(churn):
    root, port, cli = churn
    r = cli("apply", "--auto-approve")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _served_versions(port) == ["1"]
    # a deployment's record names its request log, which is not a stored object: verify finds nothing wrong
    r = cli("artifacts", "verify")
    assert r.returncode == 0 and "all intact" in r.stdout, r.stdout + r.stderr

    # quiet traffic-free state: the drift trigger cannot be evaluated yet and says why; nothing fires
    r = cli("triggers", "check", "--format", "json")
    assert r.returncode == 0, r.stderr
    trig = {t["name"]: t for t in json.loads(r.stdout)["triggers"]}
    assert not trig["on-drift"]["fired"] and "logged no requests" in trig["on-drift"]["why"]

    # a new customer segment arrives: the export lands in data/exports and its traffic hits the service
    p = subprocess.run([sys.executable, str(root / "drift.py"), "--url", f"http://127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert p.returncode == 0, p.stderr
    assert (root / "data/exports/0001-drifted.csv").exists()

    deadline = time.time() + 60  # the service flushes its request log every couple of seconds
    while True:
        r = cli("monitor", "churn-drift", "--format", "json")
        if r.returncode == 2 or time.time() > deadline:
            break
        time.sleep(1)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)[0]
    assert report["dataset_drift"] and report["current"]["rows"] == 2000
    assert {"age", "monthly_charges", "support_calls"} <= set(report["drifted_features"])
    assert Path(report["report_html"]).exists()

    r = cli("reconcile")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    out = r.stdout
    assert "trigger.on-drift: fires" in out and "drifted share" in out
    assert "registered version 2" in out and "production: 1 -> 2" in out, out[-3000:]
    assert "update: serving churn-clf version 2" in out
    assert _served_versions(port) == ["2"]
    st = json.loads((root / ".mlspec/state/default.state.json").read_text())
    assert st["resources"]["trigger.on-drift"]["last_fired"] > 0
    assert st["resources"]["dataset.exports"]["hash"]  # the retrain read the new export

    # the second pass in a row: the drift is still there, the trigger is cooling down; nothing is done
    serial = st["serial"]
    r = cli("reconcile")
    assert r.returncode == 0, r.stderr
    assert "in cooldown until" in r.stdout and "nothing to do" in r.stdout
    assert json.loads((root / ".mlspec/state/default.state.json").read_text())["serial"] == serial
    assert _served_versions(port) == ["2"]
