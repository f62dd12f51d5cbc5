"""The lease of a state lock on object storage, on a real S3-compatible server (moto) on loopback: renewed
while its holder runs, taken over (compare-and-swap on the ETag) once its holder is gone."""

from __future__ import annotations

import os
import re
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


def test_a_compare_and_swap_on_a_stale_etag_loses_without_an_error(s3, aws_env):
    """What two waiters racing for one expired lease do, in a fixed order: both read the same ETag, the first
    conditional PUT wins, the second is told it lost (412 from the server), never an error."""
    loc = _loc(s3)
    assert loc.create_exclusive("ws.lock", b"{}")
    _, tag = loc.read_tagged("ws.lock")
    first = loc.replace_if_match("ws.lock", b'{"id": "first"}', tag)
    assert first and first != tag
    assert loc.replace_if_match("ws.lock", b'{"id": "second"}', tag) is None
    assert loc.read_tagged("ws.lock") == (b'{"id": "first"}', first)


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


def _start_apply(root, env, *extra):
    e = dict(os.environ, NO_COLOR="1", **env)
    return subprocess.Popen([sys.executable, "-m", "mlspec", "-C", str(root), "apply", "--auto-approve", *extra],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(path, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.2)


def test_concurrent_applies_one_runs_another_fails_naming_the_holder_a_third_waits(tmp_path, s3, aws_env):
    root = _project(tmp_path, s3, "proj")
    marker = tmp_path / "started"
    release = tmp_path / "release"
    first = _start_apply(root, {"MLSPEC_TEST_MARKER": str(marker), "MLSPEC_TEST_RELEASE": str(release)})
    try:
        _wait_for(marker, first)
        waiter = _start_apply(root, {}, "--lock-timeout", "5m")  # this one waits for the lock instead
        second = run_cli("-C", str(root), "apply", "--auto-approve")
        assert second.returncode == 1
        assert "Error: the state is locked by" in second.stderr and "(apply, run r" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "lease until" in second.stderr
        assert "Traceback" not in second.stderr
        assert waiter.poll() is None  # still waiting for the lock
        release.write_text("go")
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, out + err
        out, err = waiter.communicate(timeout=300)  # it got the lock after the first, and found it all done
        assert waiter.returncode == 0 and "No changes" in out, out + err
    finally:
        for p in (first, locals().get("waiter")):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
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
    # at once (in this process: a CLI's start-up on a loaded machine can outlast the lease): the lease has not
    # run out, and the error names the killed holder and says when the lease runs out
    state_url = re.search(r"state: (\S+)", (root / "mlspec.yaml").read_text()).group(1)
    with pytest.raises(LockedError) as e:
        StateLock(Location(state_url, {"endpoint_url": s3}), "default", lease=12).acquire("apply")
    assert f"pid {first.pid}" in str(e.value) and "lease runs out in" in e.value.hint
    # the next job waits for the lease (no `state unlock`), takes the lock over and finishes the work
    r = run_cli("-C", str(root), "apply", "--auto-approve", "--lock-timeout", "60s", env=lease)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "took over the lock of" in r.stderr and f"pid {first.pid}" in r.stderr
    assert "Apply complete" in r.stdout and "step.slow" in r.stdout
    runs = run_cli("-C", str(root), "runs", "list", "--format", "json")
    assert runs.returncode == 0


def test_reading_an_object_while_it_is_replaced_never_fails(s3, aws_env):
    """A lock file is rewritten by its holder's renewals while others read it: a read is one GET of the
    object as it is then. (open-then-read checked the ETag it saw first and failed with FileExpired when
    a renewal landed in between; the lease test above hit it once in a full run.)"""
    loc = _loc(s3)
    loc.write_bytes("ws.lock", b"0" * 100)
    stop = threading.Event()

    def renew():
        i = 0
        while not stop.is_set():
            i += 1
            loc.write_bytes("ws.lock", str(i).encode() * 100)

    writer = threading.Thread(target=renew, daemon=True)
    writer.start()
    try:
        seen = {loc.read_bytes("ws.lock")[:1] for _ in range(300)}
    finally:
        stop.set()
        writer.join()
    assert len(seen) > 1  # the object did change while it was read
