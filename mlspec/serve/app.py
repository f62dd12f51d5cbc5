"""The ASGI application: ``POST /predict`` and the Open Inference Protocol v2 REST endpoints.

A thin ASGI callable with orjson rather than a framework: six routes need no router, and Starlette's
request/response objects cost a measurable share of a 1-row request (see benchmarks/bench_serve.py). It runs
on uvicorn with uvloop and httptools (the worker), or on any ASGI server.

Every answer is JSON. Errors are ``{"error": "..."}`` with a 4xx status naming the column and the problem:
400 bad JSON or request shape, 401 missing/wrong bearer token, 404 unknown path or model, 405 wrong method,
413 body over ``limits.max_body_bytes``, 415 wrong content type, 422 a value the signature rejects. A 5xx
means a fault of the service or the model, never of the input.
"""

from __future__ import annotations

import hmac
import math
import sys
import time

import numpy as np
import orjson

from mlspec.serve.model import BadInput, Served, V2_TYPES, decode_instances, signature_from, to_array

_JSON = (b"content-type", b"application/json")
DISCARD_FACTOR = 8  # a body over the limit but under 8x it is read and dropped before the 413
_CLOSE = (b"connection", b"close")
_OK_TYPES = (b"application/json",)
_V2_TYPES_OK = (b"application/json", b"application/octet-stream")
_NUMPY_OF_V2 = {v: k for k, v in V2_TYPES.items()}
# the v2 datatypes a column of each kind takes
_V2_FOR_KIND = {"bool": {"BOOL"}, "int": {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
                "str": {"BYTES"}, "datetime": {"BYTES"}}
_V2_FOR_KIND["float"] = _V2_FOR_KIND["number"] = _V2_FOR_KIND["int"] | {"FP16", "FP32", "FP64"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


def _log(event: str, **fields) -> None:
    try:
        sys.stderr.write(orjson.dumps({"event": event, **fields}).decode() + "\n")
    except (OSError, ValueError):
        pass


class App:
    """The service of one model version. ``draining`` (set by the worker on SIGTERM) makes every answer
    carry ``Connection: close`` and /v2/health/ready answer 503."""

    def __init__(self, served: Served, *, name: str, version=None, max_body_bytes: int = 1_048_576,
                 token: str | None = None, reqlog=None, deployment: str = ""):
        self.served, self.sig = served, served.signature
        self.name, self.version, self.deployment = name, version, deployment or name
        self.version_text = "" if version is None else str(version)
        self.max_body = int(max_body_bytes)
        self._token = (b"Bearer " + token.encode()) if token else None
        self.reqlog = reqlog
        self.draining = False
        self.ready = True
        self.requests = self.errors = 0
        self._metadata = orjson.dumps(self._model_metadata())
        self._model_ready = orjson.dumps({"name": name, "ready": True})
        prefix = f"/v2/models/{name}"
        self._model_paths = {prefix: "meta", f"{prefix}/ready": "ready", f"{prefix}/infer": "infer"}
        if self.version_text:
            vp = f"{prefix}/versions/{self.version_text}"
            self._model_paths.update({vp: "meta", f"{vp}/ready": "ready", f"{vp}/infer": "infer"})

    def __repr__(self) -> str:  # never show the token
        return f"App(model={self.name!r}, version={self.version_text!r})"

    # --- metadata ------------------------------------------------------------------------------------------
    def _model_metadata(self) -> dict:
        sig = self.sig
        if sig.positional:
            inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, len(sig.columns)]}]
        else:
            inputs = [{"name": c.name, "datatype": c.v2_datatype, "shape": [-1]} for c in sig.columns]
        meta = {"name": self.name, "versions": [self.version_text] if self.version_text else [],
                "platform": "mlspec-" + type(self.served.model).__module__.split(".", 1)[0],
                "inputs": inputs,
                "outputs": [{"name": sig.output_name, "datatype": self.served.output_v2_datatype(),
                             "shape": [-1]}],
                "parameters": {"deployment": self.deployment, "signature": sig.source,
                               "dtypes": {c.name: c.dtype for c in sig.columns}}}
        if not self.version_text:
            del meta["versions"]
        return meta

    # --- ASGI ----------------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send):
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if self.reqlog is not None:
                    self.reqlog.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.reqlog is not None:
                    self.reqlog.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _send(self, send, status: int, body: bytes, close: bool = False):
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        if close or self.draining:
            headers.append(_CLOSE)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _http(self, scope, receive, send):
        self.requests += 1
        try:
            status, body = await self._route(scope, receive)
            await self._send(send, status, body)
        except HTTPError as exc:
            self.errors += 1
            await self._send(send, exc.status, orjson.dumps({"error": exc.message}), exc.close)
        except Exception as exc:  # a fault of the service or the model: 500, logged, the worker stays up
            self.errors += 1
            _log("error", path=scope.get("path", "")[:200], error=f"{type(exc).__name__}: {exc}"[:500])
            await self._send(send, 500, orjson.dumps({"error": f"internal error ({type(exc).__name__}); "
                                                               "see the service's log"}))

    async def _route(self, scope, receive):
        path, method = scope["path"], scope["method"]
        if path == "/predict":
            self._auth(scope)
            self._method(method, "POST")
            body = await self._body(scope, receive, _OK_TYPES)
            return 200, self._predict(body)
        if path.startswith("/v2"):
            if path in ("/v2/health/live", "/v2/health/ready"):
                self._method(method, "GET")
                if path.endswith("live"):
                    return 200, b'{"live":true}'
                if self.ready and not self.draining:
                    return 200, b'{"ready":true}'
                return 503, b'{"ready":false}'
            self._auth(scope)
            if path in ("/v2", "/v2/"):
                self._method(method, "GET")
                from mlspec import __version__

                return 200, orjson.dumps({"name": "mlspec", "version": __version__, "extensions": []})
            what = self._model_paths.get(path.rstrip("/"))
            if what is None:
                raise HTTPError(404, self._unknown_model(path))
            if what == "infer":
                self._method(method, "POST")
                body = await self._body(scope, receive, _V2_TYPES_OK)
                return 200, self._infer(scope, body)
            self._method(method, "GET")
            return 200, (self._metadata if what == "meta" else self._model_ready)
        raise HTTPError(404, f"no such endpoint: {method} {path[:100]}; the endpoints are POST /predict and the "
                             "Open Inference Protocol v2 paths under /v2")

    def _unknown_model(self, path: str) -> str:
        parts = path.split("/")
        if len(parts) >= 4 and parts[2] == "models":
            name = parts[3][:100]
            if name != self.name:
                return f"unknown model '{name}'; this service serves '{self.name}'"
            if len(parts) >= 6 and parts[4] == "versions":
                return (f"model '{self.name}' has no version '{parts[5][:40]}' here; this service serves version "
                        f"{self.version_text or '(none)'}")
        return f"no such endpoint: {path[:100]}"

    @staticmethod
    def _method(method: str, want: str):
        if method != want:
            raise HTTPError(405, f"method {method} is not allowed here; use {want}")

    def _auth(self, scope):
        if self._token is None:
            return
        got = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                got = v
                break
        if not got:
            raise HTTPError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(got, self._token):
            raise HTTPError(401, "wrong bearer token")

    async def _body(self, scope, receive, types) -> tuple[bytes, dict]:
        ctype = length = None
        extra = {}
        for k, v in scope["headers"]:
            if k == b"content-type":
                ctype = v
            elif k == b"content-length":
                length = v
            elif k == b"inference-header-content-length":
                extra["json_size"] = v
        if ctype is not None:
            base = ctype.split(b";", 1)[0].strip().lower()
            if base not in types:
                raise HTTPError(415, f"unsupported content type '{ctype[:80].decode('latin-1')}'; send "
                                     f"Content-Type: {types[0].decode()}", close=True)
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise HTTPError(400, "Content-Length is not a number", close=True) from None
            if n > self.max_body:
                msg = (f"request body of {n} bytes is over the limit of {self.max_body} bytes; send fewer rows "
                       "per request")
                if n > DISCARD_FACTOR * self.max_body:
                    raise HTTPError(413, msg, close=True)
                await self._discard(receive, n)  # read it: a client still sending gets the 413, not a reset
                raise HTTPError(413, msg)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected", close=True)
            part = msg.get("body", b"")
            if part:
                size += len(part)
                if size > self.max_body:
                    more = msg.get("more_body", False)
                    if more:
                        more = not await self._discard(receive, DISCARD_FACTOR * self.max_body - size)
                    raise HTTPError(413, f"request body is over the limit of {self.max_body} bytes; send fewer "
                                         "rows per request", close=more)
                chunks.append(part)
            if not msg.get("more_body", False):
                break
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), extra

    @staticmethod
    async def _discard(receive, budget: int) -> bool:
        """Read and drop up to ``budget`` more body bytes; True when the body ended within it."""
        while budget > 0:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return False
            budget -= len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return True
        return False

    # --- POST /predict -------------------------------------------------------------------------------------
    def _predict(self, body_extra) -> bytes:
        body, _ = body_extra
        doc = _loads(body)
        if type(doc) is not dict or "instances" not in doc:
            raise HTTPError(400, "the body must be a JSON object {\"instances\": [{column: value, ...}, ...]}")
        if len(doc) != 1:
            other = next(k for k in doc if k != "instances")
            raise HTTPError(400, f"unknown key '{str(other)[:60]}' in the body; only 'instances' is taken")
        try:
            cols, n = decode_instances(self.sig, doc["instances"])
        except BadInput as exc:
            raise HTTPError(422, str(exc)) from None
        preds = self._call_model(cols)
        answer = orjson.dumps({"predictions": _jsonable(preds)}, option=orjson.OPT_SERIALIZE_NUMPY)
        if self.reqlog is not None:  # the validated body and the answer as they are: no encoding here
            self.reqlog.add_raw(body, answer, n, time.time())
        return answer

    def _call_model(self, cols: dict) -> np.ndarray:
        try:
            preds = self.served.predict(cols)
        except (ValueError, TypeError, KeyError) as exc:  # values of the right types the model still refuses
            raise HTTPError(422, f"the model rejected the input: {str(exc)[:300]}") from None
        return preds

    def _record(self, cols: dict, preds, n: int) -> None:
        if self.reqlog is not None:
            self.reqlog.add(cols, preds, n, time.time())

    # --- POST /v2/models/{name}/infer ----------------------------------------------------------------------
    def _infer(self, scope, body_extra) -> bytes:
        body, extra = body_extra
        raw = b""
        if "json_size" in extra:
            try:
                jsize = int(extra["json_size"])
            except ValueError:
                raise HTTPError(400, "Inference-Header-Content-Length is not a number") from None
            if not 0 < jsize <= len(body):
                raise HTTPError(400, f"Inference-Header-Content-Length {jsize} does not fit the body of "
                                     f"{len(body)} bytes")
            body, raw = body[:jsize], body[jsize:]
        doc = _loads(body)
        if type(doc) is not dict:
            raise HTTPError(400, "the body must be a JSON object {\"inputs\": [...]} (Open Inference Protocol v2)")
        inputs = doc.get("inputs")
        if type(inputs) is not list or not inputs:
            raise HTTPError(400, "'inputs' must be a non-empty array of tensors {name, shape, datatype, data}")
        req_id = doc.get("id")
        if req_id is not None and type(req_id) is not str:
            raise HTTPError(400, "'id' must be a string")
        try:
            cols, n = self._v2_columns(inputs, raw)
        except BadInput as exc:
            raise HTTPError(422, str(exc)) from None
        wanted = doc.get("outputs")
        if wanted is not None:
            if type(wanted) is not list or not all(type(o) is dict and type(o.get("name")) is str for o in wanted):
                raise HTTPError(400, "'outputs' must be an array of {\"name\": ...}")
            unknown = [o["name"] for o in wanted if o["name"] != self.sig.output_name]
            if unknown:
                raise HTTPError(422, f"unknown output '{unknown[0][:60]}'; this model's output is "
                                     f"'{self.sig.output_name}'")
        preds = self._call_model(cols)
        self._record(cols, preds, n)
        flat = preds.reshape(n, -1) if preds.ndim > 1 else preds
        out = {"name": self.sig.output_name, "datatype": V2_TYPES.get(preds.dtype.name, "BYTES"),
               "shape": list(flat.shape), "data": _jsonable(flat.reshape(-1))}
        resp = {"model_name": self.name, "outputs": [out]}
        if self.version_text:
            resp["model_version"] = self.version_text
        if req_id is not None:
            resp["id"] = req_id
        return orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)

    def _v2_columns(self, inputs: list, raw: bytes) -> tuple[dict, int]:
        sig = self.sig
        tensors = {}
        offset = 0
        for i, t in enumerate(inputs):
            if type(t) is not dict:
                raise BadInput(f"inputs[{i}]: expected a tensor object {{name, shape, datatype, data}}, got "
                               f"{type(t).__name__}")
            name, shape, dtype = t.get("name"), t.get("shape"), t.get("datatype")
            if type(name) is not str:
                raise BadInput(f"inputs[{i}]: 'name' must be a string")
            if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
                raise BadInput(f"input '{name[:60]}': 'shape' must be an array of non-negative integers")
            if type(dtype) is not str:
                raise BadInput(f"input '{name[:60]}': 'datatype' must be a string such as FP64 or INT64")
            params = t.get("parameters") or {}
            if type(params) is not dict:
                raise BadInput(f"input '{name[:60]}': 'parameters' must be an object")
            count = math.prod(shape)
            if "binary_data_size" in params:
                size = params["binary_data_size"]
                if type(size) is not int or size < 0 or offset + size > len(raw):
                    raise BadInput(f"input '{name[:60]}': binary_data_size does not fit the binary part of the body")
                values = _from_binary(name, dtype, raw[offset:offset + size], count)
                offset += size
            else:
                if "data" not in t:
                    raise BadInput(f"input '{name[:60]}': 'data' is missing")
                values = _flatten(t["data"], name)
                if len(values) != count:
                    raise BadInput(f"input '{name[:60]}': shape {shape} holds {count} values, 'data' has "
                                   f"{len(values)}")
            if name in tensors:
                raise BadInput(f"input '{name[:60]}' is given twice")
            tensors[name] = (shape, dtype, values)
        if sig.positional:
            return self._v2_positional(tensors)
        unknown = [k for k in tensors if k not in sig.names]
        if unknown:
            raise BadInput(f"unknown input '{unknown[0][:60]}'; this model's inputs are: {', '.join(sig.names)}")
        for c in sig.columns:
            if c.name not in tensors:
                continue
            shape, dtype, _ = tensors[c.name]
            if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                raise BadInput(f"input '{c.name}': shape must be [rows] or [rows, 1], got {shape}")
            if dtype not in _V2_FOR_KIND[c.kind]:
                raise BadInput(f"input '{c.name}': datatype {dtype[:20]} does not fit the column's {c.dtype}; send "
                               f"{c.v2_datatype}")
        missing = [c for c in sig.names if c not in tensors]
        if missing:
            raise BadInput(f"input '{missing[0]}' is missing; this model's inputs are: {', '.join(sig.names)}")
        n = None
        cols = {}
        for c in sig.columns:
            shape, dtype, values = tensors[c.name]
            if n is None:
                n = shape[0]
            elif shape[0] != n:
                raise BadInput(f"input '{c.name}': {shape[0]} rows, but '{sig.columns[0].name}' has {n}")
            cols[c.name] = to_array(c, values) if type(values) is list else _binary_column(c, values)
        if not n:
            raise BadInput("the inputs hold no rows")
        return cols, n

    def _v2_positional(self, tensors: dict) -> tuple[dict, int]:
        sig = self.sig
        if len(tensors) != 1:
            raise BadInput(f"this model takes one input tensor of shape [rows, {len(sig.columns)}]")
        (name, (shape, dtype, values)), = tensors.items()
        width = len(sig.columns)
        if len(shape) != 2 or shape[1] != width or shape[0] < 1:
            raise BadInput(f"input '{name[:60]}': shape must be [rows, {width}], got {shape}")
        if dtype not in _V2_FOR_KIND["number"]:
            raise BadInput(f"input '{name[:60]}': datatype {dtype[:20]} is not numeric; send FP64")
        if type(values) is not list:
            values = values.tolist()
        n = shape[0]
        cols = {c.name: to_array(c, values[j::width]) for j, c in enumerate(sig.columns)}
        return cols, n


def _jsonable(preds: np.ndarray):
    """What orjson writes directly (numeric numpy arrays), else plain Python values."""
    if preds.dtype.kind in "biuf" and preds.dtype.itemsize > 2 or preds.dtype.kind == "b":
        return np.ascontiguousarray(preds)
    return preds.tolist()


def _binary_column(col, arr: np.ndarray) -> np.ndarray:
    if col.kind in ("str", "datetime"):
        return to_array(col, arr.tolist())
    if col.kind == "int" and arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(col.np_dtype).max:
        return to_array(col, arr.tolist())  # names the out-of-range value
    out = arr.astype(col.np_dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        return to_array(col, arr.tolist())
    return out


def _from_binary(name: str, dtype: str, data: bytes, count: int):
    """A tensor of the binary data extension: raw little-endian values (BYTES: 4-byte length + bytes)."""
    if dtype == "BYTES":
        out, pos = [], 0
        while pos < len(data):
            if pos + 4 > len(data):
                raise BadInput(f"input '{name[:60]}': truncated BYTES element")
            n = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
            if pos + n > len(data):
                raise BadInput(f"input '{name[:60]}': truncated BYTES element")
            try:
                out.append(data[pos:pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise BadInput(f"input '{name[:60]}': a BYTES element is not UTF-8 text") from None
            pos += n
        if len(out) != count:
            raise BadInput(f"input '{name[:60]}': the shape holds {count} values, the binary data {len(out)}")
        return out
    np_type = _NUMPY_OF_V2.get(dtype)
    if np_type is None:
        raise BadInput(f"input '{name[:60]}': unknown datatype {dtype[:20]}")
    item = np.dtype(np_type).itemsize
    if len(data) != count * item:
        raise BadInput(f"input '{name[:60]}': {len(data)} bytes of binary data for {count} {dtype} values "
                       f"({count * item} bytes)")
    return np.frombuffer(data, dtype=np.dtype(np_type).newbyteorder("<"))


def _flatten(data, name: str) -> list:
    if type(data) is not list:
        raise BadInput(f"input '{name[:60]}': 'data' must be an array")
    if not any(type(v) is list for v in data):
        return data
    out: list = []

    def walk(node, depth):
        if depth > 32:
            raise BadInput(f"input '{name[:60]}': 'data' is nested too deeply")
        for v in node:
            if type(v) is list:
                walk(v, depth + 1)
            else:
                out.append(v)

    walk(data, 0)
    return out


def _loads(body: bytes):
    if not body:
        raise HTTPError(400, "the request body is empty; send JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"the request body is not valid JSON: {str(exc)[:200]}") from None


def make_app(config, model=None) -> App:
    """The ASGI app for a worker config (a dict as the deployer writes it, or a ServeConfig). ``model``: an
    already loaded model (tests, benchmarks); else it is loaded from the artifact store."""
    from mlspec.serve import config as cfgmod
    from mlspec.serve.model import load_model

    cfg = config if isinstance(config, cfgmod.ServeConfig) else cfgmod.parse(config)
    if model is None:
        model = load_model(cfg.artifact, cfg.store_url, cfg.store_options)
    sig = signature_from(cfg.signature, model)
    served = Served(model, sig, cfg.model, cfg.version)
    reqlog = None
    if cfg.log:
        from mlspec.serve.reqlog import RequestLog

        reqlog = RequestLog(cfg.log["url"], cfg.log.get("options"), version=cfg.version,
                            dtypes={c.name: c.dtype for c in sig.columns}, positional=sig.positional,
                            max_bytes=cfg.log["max_bytes"], flush_rows=cfg.log["flush_rows"],
                            flush_seconds=cfg.log["flush_seconds"])
    return App(served, name=cfg.model, version=cfg.version, max_body_bytes=cfg.max_body_bytes,
               token=cfg.token, reqlog=reqlog, deployment=cfg.deployment)
