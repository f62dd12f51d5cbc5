"""The request log on its own (real local directories and a real S3-compatible server): segments rolled
to a size bound, torn or foreign segments skipped with a warning, a failing store never blocking the
request path and bounding the buffer, and a worker whose store and log are on S3 with credentials that
are never written."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from mlspec.serve.reqlog import RequestLog, read_requests


def _add(log: RequestLog, start: int, n: int, ts: float | None = None) -> None:
    ages = np.arange(start, start + n, dtype="int64")
    log.add({"age": ages, "income": ages * 0.5}, (ages % 2).astype("int64"), n, ts)


def _log(url, **kw) -> RequestLog:
    return RequestLog(str(url), version=7, dtypes={"age": "int64", "income": "float64"},
                      **{"flush_rows": 10_000, "flush_seconds": 3600, **kw})


def test_segments_roll_within_max_bytes_oldest_first(tmp_path):
    log = _log(tmp_path / "log", max_bytes=3_000)
    for i in range(30):
        _add(log, i * 10, 10)
        assert log.flush() == 10
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "log").iterdir()}
    newest = max(sizes)
    assert sum(sizes.values()) - sizes[newest] <= 3_000 and len(sizes) < 30  # the oldest were deleted
    df = read_requests(str(tmp_path / "log"))
    ages = df["age"].tolist()
    assert ages == list(range(ages[0], 300)) and ages[0] > 0  # the newest rows, contiguous; the oldest deleted
    assert (df["_version"] == 7).all() and df["_prediction"].tolist() == [a % 2 for a in ages]
    assert read_requests(str(tmp_path / "log"), last=15)["age"].tolist() == list(range(285, 300))


def test_since_and_last_select_rows_by_time(tmp_path):
    log = _log(tmp_path / "log")
    for i, ts in enumerate((1_000.0, 2_000.0, 3_000.0)):
        _add(log, i * 5, 5, ts)
        log.flush()
    url = str(tmp_path / "log")
    assert read_requests(url, since=2_000.0)["age"].tolist() == list(range(5, 15))
    assert read_requests(url, since=2_000.5)["age"].tolist() == list(range(10, 15))
    assert read_requests(url, since=2_000.0, last=3)["age"].tolist() == [12, 13, 14]
    assert len(read_requests(url, last=0)) == 0
    assert read_requests(str(tmp_path / "nothing")).empty


def test_torn_and_foreign_segments_are_skipped_with_a_warning(tmp_path):
    log = _log(tmp_path / "log")
    for i in range(3):
        _add(log, i * 4, 4)
        log.flush()
    names = sorted(p.name for p in (tmp_path / "log").iterdir())
    middle = tmp_path / "log" / names[1]
    middle.write_bytes(middle.read_bytes()[:-20])  # torn
    (tmp_path / "log" / "seg-00000000000000000001-00000000000000000001-1-000001.json").write_bytes(b"\x00garbage")
    edited = tmp_path / "log" / names[2]
    edited.write_bytes(edited.read_bytes().replace(b"[8,9,10,11]", b"[8,9,10,99]"))  # same size, other bytes
    with pytest.warns(UserWarning) as caught:
        df = read_requests(str(tmp_path / "log"))
    text = " ".join(str(w.message) for w in caught)
    assert names[1] in text and "torn" in text and "checksum mismatch" in text and "garbage" not in text
    assert df["age"].tolist() == [0, 1, 2, 3]


def test_a_failing_store_never_blocks_requests_and_bounds_the_buffer(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    log = _log(blocker / "log", flush_rows=10, max_buffer_rows=50)
    for i in range(20):
        _add(log, i * 10, 10)  # 200 rows: the buffer keeps the newest 50
    assert log.dropped_rows == 150
    assert log.flush() == 0 and log.failed_writes == 1 and "NotADirectoryError" in log.last_error
    _add(log, 200, 10)  # still taking rows while the store is down
    assert log.dropped_rows == 160
    blocker.unlink()  # the store comes back: the buffered rows are written by the next flush
    assert log.flush() == 50
    assert read_requests(str(blocker / "log"))["age"].tolist() == list(range(160, 210))


def test_the_background_thread_writes_and_close_flushes(tmp_path):
    log = _log(tmp_path / "log", flush_rows=5, flush_seconds=0.1)
    log.start()
    _add(log, 0, 5)
    deadline = time.time() + 20
    while time.time() < deadline and len(read_requests(str(tmp_path / "log"))) < 5:
        time.sleep(0.05)
    assert len(read_requests(str(tmp_path / "log"))) == 5  # written without any flush() from here
    _add(log, 5, 2)
    log.close()
    assert read_requests(str(tmp_path / "log"))["age"].tolist() == list(range(7))
    assert log._thread is None


@pytest.fixture
def aws_env(monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_a_worker_with_store_and_log_on_s3_keeps_its_credentials_secret(s3, aws_env, tmp_path):
    from mlspec.artifacts import ArtifactStore
    from mlspec.serve.local import start_worker
    from serve_support import Client, numeric_model, write_config

    from mlspec import formats

    secret = "testing-secret-9f8e7d"
    options = {"endpoint_url": s3, "key": "testing", "secret": secret}
    path, _ = formats.save(numeric_model(), tmp_path / "model", "skops")
    digest, _ = ArtifactStore("s3://team/serve/artifacts", options).put_file(path)
    cfg = write_config(tmp_path / "w.json", "s3://team/serve/artifacts", digest,
                       log_url="s3://team/serve/requests/churn-api", flush_seconds=0.2)
    env = {**os.environ, "MLSPEC_SERVE_STORE_OPTIONS": json.dumps(options),
           "MLSPEC_SERVE_CACHE": str(tmp_path / "cache")}
    err = tmp_path / "worker.err"
    with open(err, "wb") as fh:
        w = start_worker(str(cfg), env=env, stderr=fh)
        try:
            rows = [{"age": 70 + i, "income": 20.0 + i, "tenure": i} for i in range(6)]
            assert Client(w.port).predict(rows)[0] == 200
        finally:
            assert w.stop() == 0
    df = read_requests("s3://team/serve/requests/churn-api", options)
    assert df["age"].tolist() == [70 + i for i in range(6)]
    assert secret.encode() not in err.read_bytes() + Path(cfg).read_bytes()
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3, key="testing", secret=secret)
    for key in fs.find("team/serve/requests"):
        assert secret.encode() not in fs.cat(key)


def test_predict_bodies_are_logged_as_sent_and_read_back_as_typed_columns(tmp_path):
    """Format 2: a /predict record keeps the request's body and the answer byte for byte (here pretty-printed,
    with ints for a float column); the columns are built on read, alongside decoded-column records."""
    log = RequestLog(str(tmp_path / "log"), version=3, dtypes={"age": "int64", "income": "float64"},
                     flush_rows=10_000, flush_seconds=3600)
    body = json.dumps({"instances": [{"income": 10, "age": 30}, {"age": 31, "income": 2.5}]}, indent=2).encode()
    log.add_raw(body, b'{"predictions":[1,0]}', 2, 1_000.0)
    log.add({"age": np.array([32], dtype="int64"), "income": np.array([7.25])}, np.array([1]), 1, 1_001.0)
    assert log.flush() == 3
    (seg,) = list((tmp_path / "log").iterdir())
    header = json.loads(seg.read_bytes().partition(b"\n")[0])
    assert header["mlspec_request_log"] == 2 and header["rows"] == 3 and header["requests"] == 2
    assert body in seg.read_bytes()  # as sent: nothing was encoded on the request's path
    df = read_requests(str(tmp_path / "log"))
    assert df["age"].tolist() == [30, 31, 32] and df["income"].tolist() == [10.0, 2.5, 7.25]
    assert str(df["age"].dtype) == "int64" and str(df["income"].dtype) == "float64"
    assert df["_prediction"].tolist() == [1, 0, 1] and df["_ts"].tolist() == [1_000.0, 1_000.0, 1_001.0]
    assert (df["_version"] == 3).all()


def test_positional_rows_are_read_back_by_position(tmp_path):
    log = RequestLog(str(tmp_path / "log"), version=1, dtypes={"x0": "number", "x1": "number"}, positional=True,
                     flush_rows=10_000, flush_seconds=3600)
    log.add_raw(b'{"instances":[[1,2.5],[3,4]]}', b'{"predictions":[0.5,0.25]}', 2, 5.0)
    log.flush()
    df = read_requests(str(tmp_path / "log"))
    assert df["x0"].tolist() == [1, 3] and df["x1"].tolist() == [2.5, 4] and df["_prediction"].tolist() == [0.5, 0.25]


def test_segments_of_the_first_format_are_still_read(tmp_path):
    from mlspec.serve.reqlog import encode_segment

    d = tmp_path / "log"
    d.mkdir()
    old = encode_segment({"age": np.array([1, 2], dtype="int64"), "income": np.array([0.5, 1.5]),
                          "_prediction": np.array([0, 1]), "_ts": np.array([10.0, 10.0])}, 2,
                         {"age": "int64", "income": "float64"})
    (d / "seg-00000000010000000000-00000000010000000000-1-000001.json").write_bytes(old)
    log = RequestLog(str(d), version=3, dtypes={"age": "int64", "income": "float64"}, flush_rows=10_000,
                     flush_seconds=3600)
    log.add_raw(b'{"instances":[{"age":3,"income":2.5}]}', b'{"predictions":[1]}', 1, 20.0)
    log.flush()
    df = read_requests(str(d))
    assert df["age"].tolist() == [1, 2, 3] and df["_version"].tolist() == [2, 2, 3]
    assert df["_prediction"].tolist() == [0, 1, 1] and str(df["age"].dtype) == "int64"


def test_a_record_that_does_not_fit_its_header_skips_the_segment_with_a_warning(tmp_path):
    log = RequestLog(str(tmp_path / "log"), version=1, dtypes={"age": "int64"}, flush_rows=10_000,
                     flush_seconds=3600)
    log.add_raw(b'{"instances":[{"age":1},{"age":2}]}', b'{"predictions":[1]}', 2, 1.0)  # 2 rows, 1 prediction
    log.flush()
    log.add_raw(b'{"instances":[{"age":5}]}', b'{"predictions":[0]}', 1, 2.0)
    log.flush()
    with pytest.warns(UserWarning, match="rows do not match"):
        df = read_requests(str(tmp_path / "log"))
    assert df["age"].tolist() == [5]


def test_the_buffer_is_bounded_in_bytes_too(tmp_path):
    log = RequestLog(str(tmp_path / "log"), dtypes={"age": "int64"}, flush_rows=10_000, flush_seconds=3600,
                     max_buffer_bytes=1_000)
    body = b'{"instances":[{"age":1}]}'
    for i in range(100):
        log.add_raw(body, b'{"predictions":[0]}', 1, float(i))
    assert log.dropped_rows > 0 and log._bytes <= 1_000
    assert log.flush() == 100 - log.dropped_rows
    assert read_requests(str(tmp_path / "log"))["_ts"].iloc[-1] == 99.0  # the newest kept
