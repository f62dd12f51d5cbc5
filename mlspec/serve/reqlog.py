"""The request log: inputs and predictions of a deployment, in a rolling, size-bounded set of segments.

Layout under the log's URL (any fsspec URL; local paths too)::

    seg-<first ts, ns, 20 digits>-<last ts, ns, 20 digits>-<pid>-<sequence>.json

Each segment is written whole in one atomic operation (a temp file renamed into place locally, one PUT on
an object store), so a reader sees a segment completely or not at all. A segment is a header line and a
body, the body checked against the header's length and checksum. Format 2 (written now)::

    {"mlspec_request_log": 2, "rows": N, "requests": R, "version": V, "columns": [...], "dtypes": {...},
     "positional": false, "body_bytes": B, "checksum": "xxh128:..."}
    [[ts, rows, "i", {"instances": [...]}, {"predictions": [...]}], [ts, rows, "c", {column: [...]}, [...]], ...]

one record per request: ``"i"`` holds a ``POST /predict`` request's body and its answer byte for byte as
they crossed the wire (both are JSON the service parsed or wrote, and the request was validated before it
was answered), ``"c"`` the decoded columns and predictions (v2 inference, whose body may be binary). The
columns are built when the log is read (``read_requests``), not when it is written. Format 1 (a columnar
body ``{"<column>": [...], ..., "_prediction": [...], "_ts": [...]}``) is still read.

The writer deletes the oldest segments while their total size is over ``max_bytes`` (the newest segment is
always kept); it lists the store when what it wrote since its last listing could pass ``max_bytes``, and at
least every 30 s (other replicas write there too).

The writer (``RequestLog``) never runs on a request's path: a request appends its record to an in-memory
buffer (for /predict, the body and answer objects themselves: no copy), and a background thread writes a
segment every ``flush_seconds`` or once ``flush_rows`` rows are buffered, at most one segment per 0.25 s.
Writing a segment frames the records (a few bytes per request), checksums the parts and writes them with
one ``writev`` (no joined copy; the write releases the GIL): about a microsecond of the interpreter per
request, whatever its rows, instead of the columnar encoding of earlier versions. The buffer is bounded (``max(10 * flush_rows,
200,000)`` rows and ``max_buffer_bytes``): when storage is slow or failing the oldest requests are dropped
and counted, and requests never wait for storage.
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
FORMAT = 2  # the segment format written (1 is still read)
MAX_BUFFER_BYTES = 64 << 20  # the in-memory buffer's bound in bytes (with max_buffer_rows)
TRIM_RELIST_SECONDS = 30.0
MIN_FLUSH_INTERVAL = 0.25
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

    def write_parts(self, name: str, parts: list) -> None:
        """Write ``b"".join(parts)`` as ``name``, atomically. Locally with ``os.writev`` from the parts as they
        are: no joined copy (a fresh buffer of a few MB costs ~3 us per page in faults here, all of it under the
        GIL, blocking the event loop), and the write releases the GIL. Elsewhere one PUT of the joined bytes."""
        if not self.loc.local:
            self.write(name, b"".join(parts))
            return
        from mlspec.storage import atomic_write_local

        atomic_write_local(os.path.join(self.loc.url, name), list(parts), durable=False)

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
    """A format-1 segment (columnar; ``columns`` includes _prediction and _ts). Written by earlier versions;
    kept to write test fixtures of that format."""
    import orjson

    from mlspec.hashing import hash_bytes

    body = orjson.dumps(columns, option=orjson.OPT_SERIALIZE_NUMPY)
    rows = len(columns.get("_ts", ()))
    header = {MAGIC: 1, "rows": rows, "version": version, "columns": list(columns), "dtypes": dtypes,
              "body_bytes": len(body), "checksum": hash_bytes(body)}
    return json.dumps(header, separators=(",", ":"), default=str).encode() + b"\n" + body + b"\n"


def _segment_parts(header: dict, items) -> list:
    """A format-2 segment as a list of bytes (header line, ``[``, the records joined by commas, ``]``) from the
    buffered ``(ts, rows, payload, size)`` items: a payload is a record's bytes, or a /predict request's
    ``(body, answer)``, framed here. The body's checksum is computed over the parts, never over a joined copy."""
    import xxhash

    from mlspec.hashing import ALGO

    body = [b"["]
    for ts, rows, payload, _size in items:
        if type(payload) is tuple:
            body += (b'[%.6f,%d,"i",' % (ts, rows), payload[0], b",", payload[1], b"],")
        else:
            body += (payload, b",")
    body[-1] = body[-1][:-1] + b"]" if len(body[-1]) > 1 else b"]"
    h = xxhash.xxh3_128()
    for part in body:
        h.update(part)
    header = {MAGIC: FORMAT, **header, "body_bytes": sum(map(len, body)), "checksum": f"{ALGO}:{h.hexdigest()}"}
    return [json.dumps(header, separators=(",", ":"), default=str).encode() + b"\n", *body, b"\n"]


def decode_segment(data: bytes) -> tuple[dict, dict]:
    """(header, columns) of a segment of either format: ``columns`` holds one list per input column,
    ``_prediction`` and ``_ts``; ValueError saying why it cannot be read."""
    from mlspec.hashing import hash_bytes

    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    header = json.loads(head)
    if not isinstance(header, dict) or header.get(MAGIC) not in (1, FORMAT):
        raise ValueError("not a request log segment")
    body = rest[:-1] if rest.endswith(b"\n") else rest
    if len(body) != header.get("body_bytes"):
        raise ValueError(f"torn: {len(body)} of {header.get('body_bytes')} bytes")
    if hash_bytes(body) != header.get("checksum"):
        raise ValueError("checksum mismatch")
    if header[MAGIC] == 1:
        columns = json.loads(body)
    else:
        columns = _columns_of_records(header, body)
    if not isinstance(columns, dict) or any(len(v) != header.get("rows") for v in columns.values()):
        raise ValueError("columns of unequal length")
    return header, columns


def _columns_of_records(header: dict, body: bytes) -> dict:
    """The columns of a format-2 body: the requests' rows as they were sent, column by column."""
    import orjson

    names = list(header.get("columns") or ())
    positional = bool(header.get("positional"))
    cols: dict = {n: [] for n in names}
    preds: list = []
    ts: list = []
    records = orjson.loads(body)
    if type(records) is not list:
        raise ValueError("the body is not a list of records")
    for rec in records:
        if type(rec) is not list or len(rec) != 5:
            raise ValueError("a record is not [ts, rows, kind, inputs, outputs]")
        t, n, kind, inputs, outputs = rec
        if kind == "i":
            rows = inputs["instances"]
            if positional:
                for j, name in enumerate(names):
                    cols[name].extend([r[j] for r in rows])
            else:
                for name in names:
                    cols[name].extend([r[name] for r in rows])
            out = outputs["predictions"]
        elif kind == "c":
            for name in names:
                cols[name].extend(inputs[name])
            out = outputs
        else:
            raise ValueError(f"unknown record kind {str(kind)[:10]!r}")
        if len(out) != n or any(len(cols[name]) != len(ts) + n for name in names):
            raise ValueError("a record's rows do not match its count")
        preds.extend(out)
        ts.extend([t] * n)
    cols["_prediction"] = preds
    cols["_ts"] = ts
    return cols


class RequestLog:
    """Buffers the requests' records and writes them as segments from a background thread."""

    def __init__(self, url: str, options: dict | None = None, *, version=None, dtypes: dict | None = None,
                 positional: bool = False, max_bytes: int = 64 << 20, flush_rows: int = 1000,
                 flush_seconds: float = 2.0, max_buffer_rows: int | None = None,
                 max_buffer_bytes: int = MAX_BUFFER_BYTES):
        self.url, self.version, self.dtypes = url, version, dict(dtypes or {})
        self.positional = bool(positional)
        self.max_bytes, self.flush_rows, self.flush_seconds = int(max_bytes), max(1, int(flush_rows)), \
            float(flush_seconds)
        # enough for MIN_FLUSH_INTERVAL at 400k rows/s, and for a slow store to catch up
        self.max_buffer_rows = int(max_buffer_rows or max(10 * self.flush_rows, 200_000))
        self.max_buffer_bytes = int(max_buffer_bytes)
        self._store = _Store(url, options)
        self._buf: deque = deque()  # (ts, rows, record bytes)
        self._rows = self._bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written_rows = self.written_segments = self.dropped_rows = self.failed_writes = 0
        self._estimate, self._listed_at = 0, float("-inf")  # the store is listed at the first write
        self.last_error = ""

    # --- the request path: append only ---------------------------------------------------------------------
    def add_raw(self, request: bytes, answer: bytes, rows: int, ts: float | None = None) -> None:
        """A ``POST /predict`` request: its body ``{"instances": [...]}`` and its answer
        ``{"predictions": [...]}``, both JSON, kept as they are (the columns are built when the log is read)."""
        ts = ts if ts is not None else time.time()
        # no copy here: the body and the answer are kept as they are, framed only when the segment is written
        self._append(ts, rows, (request, answer), len(request) + len(answer) + 40)

    def add(self, columns: dict, predictions, rows: int, ts: float | None = None) -> None:
        """Decoded columns ({name: numpy array}) and their predictions (v2 inference)."""
        import orjson

        ts = ts if ts is not None else time.time()
        preds = predictions.reshape(rows, -1) if getattr(predictions, "ndim", 1) > 1 else predictions
        data = orjson.dumps({n: _plain(a) for n, a in columns.items()}, option=orjson.OPT_SERIALIZE_NUMPY)
        out = orjson.dumps(_plain(preds), option=orjson.OPT_SERIALIZE_NUMPY)
        record = b"[%.6f,%d,\"c\",%b,%b]" % (ts, rows, data, out)
        self._append(ts, rows, record, len(record))

    def _append(self, ts: float, rows: int, payload, size: int) -> None:
        with self._lock:
            self._buf.append((ts, rows, payload, size))
            self._rows += rows
            self._bytes += size
            self._bound()
            full = self._rows >= self.flush_rows
        if full and not self._wake.is_set():  # set once: the thread may sleep out MIN_FLUSH_INTERVAL first
            self._wake.set()

    def _bound(self) -> None:
        while (self._rows > self.max_buffer_rows or self._bytes > self.max_buffer_bytes) and len(self._buf) > 1:
            _ts, rows, _payload, size = self._buf.popleft()
            self._rows -= rows
            self._bytes -= size
            self.dropped_rows += rows

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
            # at most one segment per MIN_FLUSH_INTERVAL: many small writes cost more than a few larger ones
            self._stopped.wait(MIN_FLUSH_INTERVAL)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is buffered."""
        self._stop = True
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def flush(self) -> int:
        """Write the buffered requests as one segment; returns the rows written (0 when nothing or on failure)."""
        with self._lock:
            if not self._buf:
                return 0
            items, self._buf, rows, size = self._buf, deque(), self._rows, self._bytes
            self._rows = self._bytes = 0
        try:
            first, last = items[0][0], items[-1][0]
            header = {"rows": rows, "requests": len(items), "version": self.version, "columns": list(self.dtypes),
                      "dtypes": self.dtypes, "positional": self.positional}
            parts = _segment_parts(header, items)
            self._seq += 1
            name = f"{PREFIX}{int(first * 1e9):020d}-{int(last * 1e9):020d}-{os.getpid()}-{self._seq:06d}.json"
            self._store.write_parts(name, parts)
        except Exception as exc:  # storage down or slow: keep the requests (bounded) for the next flush
            self.failed_writes += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            _emit("request_log_write_failed", url=self.url, error=self.last_error[:300])
            with self._lock:
                items.extend(self._buf)  # what arrived meanwhile is newer
                self._buf = items
                self._rows += rows
                self._bytes += size
                self._bound()
            return 0
        self.written_rows += rows
        self.written_segments += 1
        try:
            self._trim(name, sum(map(len, parts)))
        except Exception as exc:
            _emit("request_log_trim_failed", url=self.url, error=f"{type(exc).__name__}: {exc}"[:300])
        return rows

    def _trim(self, written: str, size: int) -> None:
        """Delete the oldest segments while the total is over max_bytes. Listing costs O(segments), so the
        store is listed only when the estimate (the last listing plus what this writer wrote since) passes
        max_bytes or the listing is over TRIM_RELIST_SECONDS old (other replicas write there too)."""
        self._estimate += size
        now = time.monotonic()
        if self._estimate <= self.max_bytes and now - self._listed_at < TRIM_RELIST_SECONDS:
            return
        sizes = self._store.sizes()
        self._listed_at = now
        total = sum(sizes.values())
        self._estimate = total
        if total <= self.max_bytes:
            return
        for name in sorted(sizes, key=_segment_sort_key)[:-1]:  # oldest first; the newest always stays
            if total <= self.max_bytes:
                break
            self._store.delete(name)
            total -= sizes[name]
        self._estimate = total


def _plain(arr):
    """A numpy column as orjson writes it: numeric arrays as they are (orjson serialises them natively,
    5x faster than lists), datetimes as ISO text, anything else as a list."""
    import numpy as np

    arr = np.asarray(arr)
    if arr.dtype.kind == "M":
        return [None if str(v) == "NaT" else str(v) for v in arr.astype("datetime64[ns]")]
    if arr.dtype.kind in "biuf" and arr.dtype.itemsize >= 4 or arr.dtype.kind == "b":
        return np.ascontiguousarray(arr)
    return arr.tolist()


def read_requests(url: str, options: dict | None = None, *, last: int | None = None,
                  since: float | None = None):
    """The logged requests under ``url`` as a DataFrame: one column per input feature, ``_prediction``,
    ``_ts`` (UTC epoch seconds) and ``_version``, oldest first. ``last``: only the newest N rows;
    ``since``: only rows logged at or after this epoch time. A torn or unreadable segment is skipped with a
    warning."""
    import numpy as np
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
                            # numpy's parser: the one the service validated them with (ISO 8601 of any form)
                            frame[col] = np.array(frame[col].tolist(), dtype="datetime64[ns]")
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
