"""Draining on SIGTERM: two real workers on one listening socket (created here, as the supervisor does),
a client sending requests in a loop through a rollout sees no failed request; an in-flight request is
answered with Connection: close; idle keep-alive connections are closed; the request log is flushed."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

from mlspec.serve.local import start_worker
from serve_support import Client, numeric_model, store_model, write_config

REQ = {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [41]},
                  {"name": "income", "shape": [1], "datatype": "FP64", "data": [52.5]},
                  {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [3]}]}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("drain")
    store_url, digest = store_model(numeric_model(), root)
    return root, store_url, digest


@pytest.fixture
def shared_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.set_inheritable(True)
    yield sock
    sock.close()


class Looper:
    """Client threads sending v2 infer requests back to back over keep-alive connections."""

    def __init__(self, port: int, threads: int = 4):
        self.port, self.stop, self.lock = port, threading.Event(), threading.Lock()
        self.ok, self.failures, self.versions = 0, [], []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        c = Client(self.port, timeout=30)
        body = json.dumps(REQ).encode()
        while not self.stop.is_set():
            try:
                status, _, doc = c.request("POST", "/v2/models/churn-clf/infer", body,
                                           {"Content-Type": "application/json"})
            except Exception as exc:  # a reset, a refused connection, an empty answer: a failed request
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                c = Client(self.port, timeout=30)
                continue
            with self.lock:
                if status == 200:
                    self.ok += 1
                    self.versions.append(doc["model_version"])
                else:
                    self.failures.append(f"HTTP {status}: {doc}")
        c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_rollout_on_a_shared_socket_loses_no_request(stored, shared_socket):
    root, store_url, digest = stored
    fd, port = shared_socket.fileno(), shared_socket.getsockname()[1]
    old = start_worker(str(write_config(root / "v1.json", store_url, digest, version=1, drain_seconds=10)), fd=fd)
    try:
        with Looper(port) as loop:
            time.sleep(1.0)
            new = start_worker(str(write_config(root / "v2.json", store_url, digest, version=2, drain_seconds=10)),
                               fd=fd)
            time.sleep(0.5)
            t0 = time.monotonic()
            old.proc.send_signal(signal.SIGTERM)
            rc = old.proc.wait(30)
            drained_in = time.monotonic() - t0
            seen_before_end = len(loop.versions)
            time.sleep(1.5)
        assert loop.failures == [], loop.failures[:5]
        assert rc == 0 and drained_in < 10
        assert loop.ok > 50 and "1" in loop.versions and "2" in loop.versions
        assert set(loop.versions[seen_before_end:]) == {"2"}  # after the drain only the new version answers
        assert len(loop.versions) > seen_before_end + 10
    finally:
        if old.proc.poll() is None:
            old.stop()
        if "new" in locals():
            assert new.stop() == 0


def test_in_flight_requests_finish_idle_connections_close_and_the_log_is_flushed(stored, tmp_path):
    from mlspec.serve.reqlog import read_requests

    _, store_url, digest = stored
    log_url = str(tmp_path / "log")
    cfg = write_config(tmp_path / "w.json", store_url, digest, log_url=log_url, flush_seconds=300, drain_seconds=5)
    w = start_worker(str(cfg))
    try:
        idle = Client(w.port)
        assert idle.predict([{"age": 30, "income": 40.0, "tenure": 2}] * 5)[0] == 200  # then stays idle
        body = json.dumps({"instances": [{"age": 61, "income": 40.0, "tenure": 2}]}).encode()
        busy = socket.create_connection(("127.0.0.1", w.port))
        busy.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])  # a request half sent
        time.sleep(0.3)
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        busy.sendall(body[10:])
        answer = b""
        busy.settimeout(10)
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = busy.recv(65536)
            if not chunk:
                break
            answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200") and b"connection: close" in head, answer
        assert busy.recv(10) == b""  # then closed
        idle.conn.sock.settimeout(10)
        assert idle.conn.sock.recv(10) == b""  # the idle keep-alive connection was closed by the server
        assert w.proc.wait(10) == 0 and time.monotonic() - t0 < 5
    finally:
        if w.proc.poll() is None:
            w.stop()
    df = read_requests(log_url)  # flush_seconds 300: only the drain can have written these
    assert sorted(df["age"].tolist()) == [30] * 5 + [61]
