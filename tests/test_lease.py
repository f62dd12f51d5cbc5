"""The lease of a state lock on object storage, on a real S3-compatible server (moto) on loopback: renewed
while its holder runs, taken over (compare-and-swap on the ETag) once its holder is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from ci_repo import SLOW_STEP, make_repo, s3_storage
from conftest import run_cli
from mlspec.errors import LockedError
from mlspec.lock import StateLock
from mlspec.storage import Location


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)


def _loc(s3) -> Location:
    return Location(f"s3://team/lease-{uuid.uuid4().hex[:8]}", {"endpoint_url": s3})


def test_the_holder_renews_its_lease_and_a_waiter_takes_it_over_once_the_holder_stops(s3, aws_env):
    loc = _loc(s3)
    a, b = StateLock(loc, "ws", lease=1.5), StateLock(loc, "ws", lease=1.5)
    info = a.acquire("apply", "r-a")
    assert info.lease == 1.5 and info.expires == info.created + 1.5
    time.sleep(3.5)  # more than two leases: only renewing keeps it
    with pytest.raises(LockedError) as e:
        b.acquire("apply")
    assert "lease until" in str(e.value) and info.id in e.value.hint and "lease runs out" in e.value.hint
    assert a.info().expires > info.created + 3  # renewed
    a._stop_renewing()  # what a killed holder does: nothing
    t0 = time.monotonic()
    got = b.acquire("apply", "r-b", timeout=10)
    assert 0.5 < time.monotonic() - t0 < 8
    assert b.broken_stale.id == info.id and a.info().id == got.id
    a.release()  # the old holder (if it came back) does not remove the new lock
    assert b.info().id == got.id
    b.release()
    assert b.info() is None


def test_two_waiters_on_one_expired_lease_only_one_takes_it(s3, aws_env):
    loc = _loc(s3)
    dead = StateLock(loc, "ws", lease=1.0)
    dead.acquire("apply")
    dead._stop_renewing()
    waiters = [StateLock(loc, "ws", lease=30) for _ in range(2)]
    results: list = [None, None]

    def wait(i):
        try:
            results[i] = waiters[i].acquire("apply", timeout=4)
        except LockedError as exc:
            results[i] = exc

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1
    assert won[0].id in str(lost[0]) or won[0].id in lost[0].hint  # the loser names the winner
    for w in waiters:
        w.release()


def _project(tmp_path, s3, name):
    root = make_repo(tmp_path / name, s3_storage(s3, f"proj-{uuid.uuid4().hex[:8]}"))
    spec = (root / "mlspec.yaml").read_text().replace("models:\n", SLOW_STEP + "models:\n")
    (root / "mlspec.yaml").write_text(spec)
    return root


def _start_apply(root, env):
    e = dict(os.environ, NO_COLOR="1", **env)
    return subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(root), "apply", "--auto-approve"],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(path, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.2)


def test_two_concurrent_applies_one_runs_the_other_fails_naming_the_holder(tmp_path, s3, aws_env):
    root = _project(tmp_path, s3, "proj")
    marker = tmp_path / "started"
    first = _start_apply(root, {"MLSPEC_TEST_MARKER": str(marker), "MLSPEC_TEST_SLEEP": "4"})
    try:
        _wait_for(marker, first)
        second = run_cli("-C", str(root), "apply", "--auto-approve")
        assert second.returncode == 1
        assert "Error: the state is locked by" in second.stderr and "(apply, run r" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "lease until" in second.stderr
        assert "Traceback" not in second.stderr
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, out + err
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    third = run_cli("-C", str(root), "apply", "--auto-approve")
    assert third.returncode == 0 and "No changes" in third.stdout


def test_an_apply_killed_midway_leaves_a_lease_that_expires_and_the_next_apply_proceeds(tmp_path, s3, aws_env):
    root = _project(tmp_path, s3, "proj")
    marker = tmp_path / "started"
    lease = {"MLSPEC_LOCK_LEASE": "12s"}
    first = _start_apply(root, {"MLSPEC_TEST_MARKER": str(marker), "MLSPEC_TEST_SLEEP": "600", **lease})
    _wait_for(marker, first)
    os.killpg(first.pid, signal.SIGKILL)  # the CI job is killed: no cleanup at all
    first.wait()
    # at once: the lease has not run out, the error says when it will
    r = run_cli("-C", str(root), "apply", "--auto-approve", env=lease)
    assert r.returncode == 1 and "the state is locked by" in r.stderr and "lease runs out in" in r.stderr
    # the next job waits for the lease (no `state unlock`), takes the lock over and finishes the work
    r = run_cli("-C", str(root), "apply", "--auto-approve", "--lock-timeout", "60s", env=lease)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "took over the lock of" in r.stderr and f"pid {first.pid}" in r.stderr
    assert "Apply complete" in r.stdout and "step.slow" in r.stdout
    runs = run_cli("-C", str(root), "runs", "list", "--format", "json")
    assert runs.returncode == 0
