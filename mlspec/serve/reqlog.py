"""The request log: inputs and predictions of a deployment, in a rolling, size-bounded set of segments.

Layout under the log's URL (any fsspec URL; local paths too)::

    seg-<first ts, ns, 20 digits>-<last ts, ns, 20 digits>-<pid>-<sequence>.json

Each segment is written whole in one atomic operation (a temp file renamed into place locally, one PUT on
an object store), so a reader sees a segment completely or not at all. A segment is two lines:

    {"mlspec_request_log": 1, "rows": N, "version": V, "columns": [...], "dtypes": {...},
     "body_bytes": B, "checksum": "xxh3:..."}
    {"<column>": [...], ..., "_prediction": [...], "_ts": [...]}

the second line columnar JSON, checked against the header's length and checksum. After each write the
writer lists the segments and deletes the oldest while their total size is over ``max_bytes`` (the newest
segment is always kept).

The writer (``RequestLog``) never runs on a request's path: a request appends its decoded columns and
predictions to an in-memory buffer (one lock, no copy) and a background thread writes a segment every
``flush_seconds`` or ``flush_rows`` rows. The buffer is bounded (``10 * flush_rows`` rows): when storage
is slow or failing the oldest rows are dropped and counted, and requests never wait for storage.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from collections import deque

MAGIC = "mlspec_request_log"
PREFIX = "seg-"


def _emit(event: str, **fields) -> None:
    try:
        sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _segment_sort_key(name: str):
    return name


class _Store:
    """The few storage operations the log needs, on a local directory or an fsspec URL."""

    def __init__(self, url: str, options: dict | None):
        from mlspec.storage import Location

        self.loc = Location(url, options or None)

    def write(self, name: str, data: bytes) -> None:
        self.loc.write_bytes(name, data, durable=False)

    def sizes(self) -> dict:
        """{segment name: size} of the segments present."""
        out = {}
        if self.loc.local:
            try:
                with os.scandir(self.loc.url) as it:
                    for e in it:
                        if e.name.startswith(PREFIX) and e.name.endswith(".json"):
                            try:
                                out[e.name] = e.stat().st_size
                            except FileNotFoundError:
                                pass
            except FileNotFoundError:
                pass
            return out
        try:
            entries = self.loc.fs.ls(self.loc.url, detail=True)
        except FileNotFoundError:
            return out
        for e in entries:
            name = str(e.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(PREFIX) and name.endswith(".json"):
                out[name] = int(e.get("size") or 0)
        return out

    def read(self, name: str) -> bytes | None:
        return self.loc.read_bytes(name)

    def delete(self, name: str) -> None:
        self.loc.delete(name)


def encode_segment(columns: dict, version, dtypes: dict) -> bytes:
    """One segment's bytes: header line, then the columnar body (``columns`` includes _prediction, _ts)."""
    import orjson

    from mlspec.hashing import hash_bytes

    body = orjson.dumps(columns)
    rows = len(columns.get("_ts", ()))
    header = {MAGIC: 1, "rows": rows, "version": version, "columns": list(columns), "dtypes": dtypes,
              "body_bytes": len(body), "checksum": hash_bytes(body)}
    return json.dumps(header, separators=(",", ":"), default=str).encode() + b"\n" + body + b"\n"


def decode_segment(data: bytes) -> tuple[dict, dict]:
    """(header, columns) of a segment; ValueError saying why it cannot be read."""
    from mlspec.hashing import hash_bytes

    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    header = json.loads(head)
    if not isinstance(header, dict) or header.get(MAGIC) != 1:
        raise ValueError("not a request log segment")
    body = rest[:-1] if rest.endswith(b"\n") else rest
    if len(body) != header.get("body_bytes"):
        raise ValueError(f"torn: {len(body)} of {header.get('body_bytes')} bytes")
    if hash_bytes(body) != header.get("checksum"):
        raise ValueError("checksum mismatch")
    columns = json.loads(body)
    if not isinstance(columns, dict) or any(len(v) != header.get("rows") for v in columns.values()):
        raise ValueError("columns of unequal length")
    return header, columns


class RequestLog:
    """Buffers (inputs, predictions) of requests and writes them as segments from a background thread."""

    def __init__(self, url: str, options: dict | None = None, *, version=None, dtypes: dict | None = None,
                 max_bytes: int = 64 << 20, flush_rows: int = 1000, flush_seconds: float = 2.0,
                 max_buffer_rows: int | None = None):
        self.url, self.version, self.dtypes = url, version, dict(dtypes or {})
        self.max_bytes, self.flush_rows, self.flush_seconds = int(max_bytes), max(1, int(flush_rows)), \
            float(flush_seconds)
        self.max_buffer_rows = int(max_buffer_rows or 10 * self.flush_rows)
        self._store = _Store(url, options)
        self._buf: deque = deque()  # (ts, {column: array}, predictions, rows)
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written_rows = self.written_segments = self.dropped_rows = self.failed_writes = 0
        self.last_error = ""

    # --- the request path: append only ---------------------------------------------------------------------
    def add(self, columns: dict, predictions, rows: int, ts: float | None = None) -> None:
        with self._lock:
            self._buf.append((ts if ts is not None else time.time(), columns, predictions, rows))
            self._rows += rows
            while self._rows > self.max_buffer_rows and len(self._buf) > 1:
                dropped = self._buf.popleft()
                self._rows -= dropped[3]
                self.dropped_rows += dropped[3]
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    # --- the background thread -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlspec-request-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop:
                break
            self.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is buffered."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def flush(self) -> int:
        """Write the buffered rows as one segment; returns the rows written (0 when nothing or on failure)."""
        with self._lock:
            if not self._buf:
                return 0
            items, self._buf, rows = list(self._buf), deque(), self._rows
            self._rows = 0
        try:
            data, first, last = self._segment(items)
            self._seq += 1
            name = f"{PREFIX}{int(first * 1e9):020d}-{int(last * 1e9):020d}-{os.getpid()}-{self._seq:06d}.json"
            self._store.write(name, data)
        except Exception as exc:  # storage down or slow: keep the rows (bounded) for the next flush
            self.failed_writes += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            _emit("request_log_write_failed", url=self.url, error=self.last_error[:300])
            with self._lock:
                self._buf.extendleft(reversed(items))
                self._rows += rows
                while self._rows > self.max_buffer_rows and len(self._buf) > 1:
                    dropped = self._buf.popleft()
                    self._rows -= dropped[3]
                    self.dropped_rows += dropped[3]
            return 0
        self.written_rows += rows
        self.written_segments += 1
        try:
            self._trim()
        except Exception as exc:
            _emit("request_log_trim_failed", url=self.url, error=f"{type(exc).__name__}: {exc}"[:300])
        return rows

    def _segment(self, items: list) -> tuple[bytes, float, float]:
        import numpy as np

        names = list(items[0][1])
        cols: dict = {}
        for name in names:
            parts = [it[1].get(name) for it in items]
            if any(p is None for p in parts):  # a column missing in some request (cannot happen for one model)
                parts = [p if p is not None else np.full(it[3], None, dtype=object) for p, it in zip(parts, items)]
            arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
            cols[name] = _plain(arr)
        preds = np.concatenate([np.asarray(it[2]).reshape(it[3], -1) if np.asarray(it[2]).ndim > 1
                                else np.asarray(it[2]) for it in items])
        cols["_prediction"] = _plain(preds)
        ts = []
        for it in items:
            ts.extend([it[0]] * it[3])
        cols["_ts"] = ts
        return encode_segment(cols, self.version, self.dtypes), ts[0], ts[-1]

    def _trim(self) -> None:
        sizes = self._store.sizes()
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        for name in sorted(sizes, key=_segment_sort_key)[:-1]:  # oldest first; the newest always stays
            if total <= self.max_bytes:
                break
            self._store.delete(name)
            total -= sizes[name]


def _plain(arr):
    """A numpy column as JSON-ready values (datetimes as ISO text)."""
    if arr.dtype.kind == "M":
        return [None if str(v) == "NaT" else str(v) for v in arr.astype("datetime64[ns]")]
    return arr.tolist()


def read_requests(url: str, options: dict | None = None, *, last: int | None = None,
                  since: float | None = None):
    """The logged requests under ``url`` as a DataFrame: one column per input feature, ``_prediction``,
    ``_ts`` (UTC epoch seconds) and ``_version``, oldest first. ``last``: only the newest N rows;
    ``since``: only rows logged at or after this epoch time. A torn or unreadable segment is skipped with a
    warning."""
    import pandas as pd

    store = _Store(url, options)
    names = sorted(store.sizes(), key=_segment_sort_key)
    if since is not None:
        keep = []
        for n in names:
            try:
                last_ns = int(n[len(PREFIX):].split("-")[1])
            except (IndexError, ValueError):
                keep.append(n)
                continue
            if last_ns >= since * 1e9 - 1:
                keep.append(n)
        names = keep
    frames, rows = [], 0
    for name in reversed(names):  # newest first, so that `last` reads only what it needs
        try:
            data = store.read(name)
            if data is None:  # deleted by the writer's trim since the listing
                continue
            header, cols = decode_segment(data)
            frame = pd.DataFrame(cols)
            for col, dtype in (header.get("dtypes") or {}).items():
                if col in frame:
                    try:
                        if str(dtype).startswith(("datetime64", "timestamp")):
                            frame[col] = pd.to_datetime(frame[col])
                        elif str(dtype) not in ("object", "str", "string", "category", "number", ""):
                            frame[col] = frame[col].astype(dtype)
                    except (TypeError, ValueError):
                        pass
            frame["_version"] = header.get("version")
        except Exception as exc:  # one bad segment must not hide the others from a monitor
            warnings.warn(f"request log segment {name} skipped: {type(exc).__name__}: {exc}", stacklevel=2)
            continue
        frames.append(frame)
        rows += len(frame)
        if last is not None and since is None and rows >= last:
            break
    if not frames:
        return pd.DataFrame({"_prediction": [], "_ts": pd.Series([], dtype="float64"), "_version": []})
    out = pd.concat(list(reversed(frames)), ignore_index=True)
    if since is not None:
        out = out[out["_ts"] >= since].reset_index(drop=True)
    if last is not None:
        out = out.iloc[-last:].reset_index(drop=True) if last > 0 else out.iloc[0:0]
    return out
