"""The prediction service: a real worker process (uvicorn, the model loaded from a real artifact store),
real HTTP clients (http.client and tritonclient's v2 HTTP client), responses checked against the Open
Inference Protocol's schema (tests/oip_v2/rest_responses.schema.json), the request log read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from mlspec.serve.local import WorkerFailed, start_worker
from serve_support import Client, numeric_model, pipeline_model, rows_of, store_model, training_frame, write_config

SCHEMA = json.loads((Path(__file__).parent / "oip_v2" / "rest_responses.schema.json").read_text())


def validate(doc, definition: str) -> None:
    schema = {**SCHEMA, "$ref": f"#/$defs/{definition}"}
    jsonschema.Draft202012Validator(schema).validate(doc)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = numeric_model()
    store_url, digest = store_model(model, root)
    log_url = str(root / "reqlog")
    cfg = write_config(root / "worker.json", store_url, digest, log_url=log_url)
    errlog = open(root / "worker.err", "wb")
    w = start_worker(str(cfg), stderr=errlog)
    yield {"worker": w, "model": model, "log_url": log_url, "root": root, "cfg": cfg, "store": store_url,
           "digest": digest}
    rc = w.stop()
    errlog.close()
    assert rc == 0, (root / "worker.err").read_text()


def test_ready_line_names_pid_port_and_version(served):
    w = served["worker"]
    assert w.ready["event"] == "ready"
    assert w.ready["pid"] == w.proc.pid and w.ready["port"] == w.port > 0
    assert w.ready["version"] == 3
    assert w.ready["mode"] == "numpy"  # a numeric signature is stacked into one matrix


@pytest.mark.parametrize("n", [1, 100])
def test_predict_answers_what_the_model_predicts(served, n):
    df = training_frame(n, seed=5)[["age", "income", "tenure"]]
    c = Client(served["worker"].port)
    status, headers, body = c.predict(rows_of(df))
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert body["predictions"] == served["model"].predict(df).tolist()


def test_v2_endpoints_with_tritonclient(served):
    import tritonclient.http as th

    port = served["worker"].port
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("churn-clf") and client.is_model_ready("churn-clf", "3")
    assert not client.is_model_ready("other-model")
    meta = client.get_model_metadata("churn-clf")
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("age", "INT64"), ("income", "FP64"),
                                                                    ("tenure", "INT64")]
    assert meta["outputs"][0]["name"] == "churned" and meta["versions"] == ["3"]
    assert meta["parameters"]["signature"] == "declared"
    df = training_frame(20, seed=9)[["age", "income", "tenure"]]
    want = served["model"].predict(df)
    for binary in (False, True):  # JSON tensors, then the binary tensor extension tritonclient uses by default
        inputs = []
        for name, dt in (("age", "INT64"), ("income", "FP64"), ("tenure", "INT64")):
            t = th.InferInput(name, [len(df)], dt)
            t.set_data_from_numpy(df[name].to_numpy(), binary_data=binary)
            inputs.append(t)
        result = client.infer("churn-clf", inputs, model_version="3", request_id=f"req-{binary}")
        assert result.as_numpy("churned").tolist() == want.tolist()
        resp = result.get_response()
        assert resp["model_name"] == "churn-clf" and resp["model_version"] == "3" and resp["id"] == f"req-{binary}"
    with pytest.raises(th.InferenceServerException, match="column 'age'.*expected an integer"):
        bad = th.InferInput("age", [1], "INT64")
        bad._data = ["x"]  # what a client sending strings in an INT64 tensor puts on the wire
        bad._raw_data = None
        ok = [th.InferInput(n, [1], d) for n, d in (("income", "FP64"), ("tenure", "INT64"))]
        ok[0].set_data_from_numpy(np.array([1.5]), binary_data=False)
        ok[1].set_data_from_numpy(np.array([2]), binary_data=False)
        client.infer("churn-clf", [bad] + ok)
    client.close()


def test_v2_responses_match_the_protocol_schema(served):
    c = Client(served["worker"].port)
    for path, definition in (("/v2/health/live", "server_live_response"),
                             ("/v2/health/ready", "server_ready_response"),
                             ("/v2", "server_metadata_response"),
                             ("/v2/models/churn-clf", "model_metadata_response"),
                             ("/v2/models/churn-clf/versions/3", "model_metadata_response"),
                             ("/v2/models/churn-clf/ready", "model_ready_response")):
        status, _, body = c.request("GET", path)
        assert status == 200, (path, body)
        validate(body, definition)
    req = {"id": "1", "inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 60]},
                                 {"name": "income", "shape": [2, 1], "datatype": "FP64", "data": [[40.0], [80.5]]},
                                 {"name": "tenure", "shape": [2], "datatype": "INT64", "data": [1, 9]}],
           "outputs": [{"name": "churned"}]}
    status, _, body = c.post_json("/v2/models/churn-clf/infer", req)
    assert status == 200, body
    validate(body, "inference_response")
    out = body["outputs"][0]
    assert out["shape"] == [2] and len(out["data"]) == 2 and out["datatype"] == "INT64"
    for path, doc in (("/v2/models/nope", None), ("/v2/models/churn-clf/versions/7", None),
                      ("/v2/models/churn-clf/infer", {"inputs": "x"})):
        status, _, body = c.request("GET", path) if doc is None else c.post_json(path, doc)
        assert 400 <= status < 500
        validate(body, "error_response")


def _big_rows(n):
    return [{"age": 30, "income": 1.0, "tenure": 1}] * n


@pytest.mark.parametrize("method,path,body,headers,status,needle", [
    ("POST", "/predict", b'{"instances": [{"age": "abc", "income": 1.0, "tenure": 2}]}', None, 422,
     "column 'age' (row 0): expected an integer (int64), got string 'abc'"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": 1.0}]}', None, 422, "column 'tenure' is missing"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": 1.0, "tenure": 1, "zip": 1}]}', None, 422,
     "unknown column 'zip'"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": null, "tenure": 1}]}', None, 422,
     "column 'income' (row 0): expected a number (float64), got null"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": 1.0, "tenure": true}]}', None, 422,
     "column 'tenure' (row 0): expected an integer (int64), got boolean True"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": 1.0, "tenure": 1.5}]}', None, 422,
     "column 'tenure' (row 0): expected an integer (int64), got number 1.5"),
    ("POST", "/predict", b'{"instances": [{"age": 9223372036854775808, "income": 1.0, "tenure": 1}]}', None, 422,
     "column 'age' (row 0): 9223372036854775808 is out of range for int64"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": NaN, "tenure": 1}]}', None, 400, "not valid JSON"),
    ("POST", "/predict", b'{"instances": [{"age": 40, "income": 1e999, "tenure": 1}]}', None, 400, "not valid JSON"),
    ("POST", "/predict", b'{"instances": []}', None, 422, "'instances' is empty"),
    ("POST", "/predict", b'{"rows": []}', None, 400, "{\"instances\""),
    ("POST", "/predict", b'{"instances": [], "x": 1}', None, 400, "unknown key 'x'"),
    ("POST", "/predict", b'{"instances": [[1, 2, 3]]}', None, 422, "row 0: expected an object"),
    ("POST", "/predict", b'{"instances": [{"age": 1', None, 400, "not valid JSON"),
    ("POST", "/predict", b'', None, 400, "empty"),
    ("POST", "/predict", b'{"instances": []}', {"Content-Type": "text/plain"}, 415, "unsupported content type"),
    ("GET", "/predict", None, None, 405, "use POST"),
    ("GET", "/nothing", None, None, 404, "no such endpoint"),
    ("GET", "/v2/models/other", None, None, 404, "unknown model 'other'; this service serves 'churn-clf'"),
    ("GET", "/v2/models/churn-clf/versions/2", None, None, 404, "has no version '2'"),
    ("POST", "/v2/models/churn-clf/infer", b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", '
     b'"data": [1.0]}]}', None, 422, "input 'age': datatype FP64 does not fit the column's int64"),
    ("POST", "/v2/models/churn-clf/infer", b'{"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", '
     b'"data": [1]}]}', None, 422, "shape [2] holds 2 values, 'data' has 1"),
    ("POST", "/v2/models/churn-clf/infer", b'{"inputs": [{"name": "size", "shape": [1], "datatype": "INT64", '
     b'"data": [1]}]}', None, 422, "unknown input 'size'"),
])
def test_bad_requests_get_4xx_naming_the_problem(served, method, path, body, headers, status, needle):
    c = Client(served["worker"].port)
    if headers is None and body is not None:
        headers = {"Content-Type": "application/json"}
    got, _, doc = c.request(method, path, body, headers)
    assert got == status, doc
    assert needle in doc["error"]


def test_body_over_the_limit_is_413_by_length_and_while_streaming(served):
    port = served["worker"].port
    big = json.dumps({"instances": _big_rows(40_000)}).encode()
    assert len(big) > 1_048_576
    c = Client(port)
    status, headers, doc = c.request("POST", "/predict", big, {"Content-Type": "application/json"})
    assert status == 413 and "over the limit of 1048576 bytes" in doc["error"]
    assert headers.get("connection") != "close"  # under 8x the limit the body is read and dropped
    assert c.predict(_big_rows(1))[0] == 200  # on the same connection
    huge = b'{"instances": [' + b" " * (9 * 1_048_576) + b"]}"
    c2 = Client(port)
    try:
        status, headers, doc = c2.request("POST", "/predict", huge, {"Content-Type": "application/json"})
        assert status == 413 and headers.get("connection") == "close"
    except ConnectionError:  # answered at once and closed, possibly while the client was still sending
        pass

    def chunks():  # no Content-Length: the limit is enforced while the body arrives
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/predict", body=chunks(), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and b"over the limit" in resp.read()
    conn.close()
    status, _, _ = Client(port).predict(_big_rows(2))
    assert status == 200  # still serving


def test_request_log_holds_inputs_and_predictions(served):
    from mlspec.serve.reqlog import read_requests

    port, model = served["worker"].port, served["model"]
    marker = training_frame(7, seed=77)[["age", "income", "tenure"]]
    marker["age"] = [101, 102, 103, 104, 105, 106, 107]  # ages no other test sends
    t0 = time.time()
    status, _, _ = Client(port).predict(rows_of(marker))
    assert status == 200
    deadline = time.time() + 30
    while time.time() < deadline:
        df = read_requests(served["log_url"])
        if (df.get("age", pd.Series([], dtype="int64")) > 100).sum() == 7:
            break
        time.sleep(0.2)
    got = df[df.age > 100].reset_index(drop=True)
    assert got[["age", "income", "tenure"]].equals(marker.reset_index(drop=True))
    assert got["_prediction"].tolist() == model.predict(marker).tolist()
    assert (got["_version"] == 3).all() and got["_ts"].between(t0 - 1, time.time()).all()
    assert str(got["age"].dtype) == "int64" and str(got["income"].dtype) == "float64"
    last = read_requests(served["log_url"], last=3)
    assert len(last) == 3 and last["age"].tolist() == [105, 106, 107]
    assert len(read_requests(served["log_url"], since=time.time() + 60)) == 0


def test_a_model_that_needs_a_dataframe_is_served_with_one(tmp_path):
    model = pipeline_model()
    store_url, digest = store_model(model, tmp_path)
    sig = {"inputs": [{"name": "age", "dtype": "int64"}, {"name": "income", "dtype": "float64"},
                      {"name": "plan", "dtype": "object"}], "output": {"name": "churned", "dtype": "int64"}}
    cfg = write_config(tmp_path / "w.json", store_url, digest, signature=sig)
    w = start_worker(str(cfg))
    try:
        assert w.ready["mode"] == "dataframe"
        rows = [{"age": 60, "income": 30.5, "plan": "gold"}, {"age": 25, "income": 70.0, "plan": "basic"}]
        c = Client(w.port)
        status, _, body = c.predict(rows)
        assert status == 200 and body["predictions"] == model.predict(pd.DataFrame(rows)).tolist()
        status, _, body = c.predict([{"age": 60, "income": 30.5, "plan": 3}])
        assert status == 422 and "column 'plan' (row 0): expected a string (object), got integer 3" in body["error"]
        status, _, body = c.predict([{"age": 60, "income": 30.5, "plan": "platinum"}])  # unknown category
        assert status == 422 and body["error"].startswith("the model rejected the input:")
    finally:
        assert w.stop() == 0


def test_bearer_token_is_required_and_never_written(tmp_path):
    secret = "s3cr3t-token-value-4242"
    store_url, digest = store_model(numeric_model(), tmp_path)
    log_url = str(tmp_path / "log")
    cfg = write_config(tmp_path / "w.json", store_url, digest, token_env="MLSPEC_SERVE_TOKEN", log_url=log_url)
    err = tmp_path / "worker.err"
    with open(err, "wb") as fh:
        w = start_worker(str(cfg), env={**os.environ, "MLSPEC_SERVE_TOKEN": secret}, stderr=fh)
        try:
            c = Client(w.port)
            row = [{"age": 40, "income": 50.0, "tenure": 3}]
            assert c.predict(row)[0] == 401
            status, _, body = c.predict(row, {"Authorization": "Bearer wrong"})
            assert status == 401 and body["error"] == "wrong bearer token"
            assert c.request("GET", "/v2/models/churn-clf")[0] == 401
            assert c.request("GET", "/v2/health/ready")[0] == 200  # probes need no token
            assert c.predict(row, {"Authorization": f"Bearer {secret}"})[0] == 200
        finally:
            assert w.stop() == 0
    written = [err.read_bytes(), cfg.read_bytes()] + [p.read_bytes() for p in Path(log_url).iterdir()]
    assert len(written) > 2 and not any(secret.encode() in b for b in written)


def test_a_missing_token_variable_fails_the_start(tmp_path):
    store_url, digest = store_model(numeric_model(), tmp_path)
    cfg = write_config(tmp_path / "w.json", store_url, digest, token_env="MLSPEC_SERVE_TOKEN_UNSET")
    env = {k: v for k, v in os.environ.items() if k != "MLSPEC_SERVE_TOKEN_UNSET"}
    with pytest.raises(WorkerFailed, match="MLSPEC_SERVE_TOKEN_UNSET is not set"):
        start_worker(str(cfg), env=env)


def test_load_failures_are_one_json_line_and_exit_1(tmp_path):
    store_url, digest = store_model(numeric_model(), tmp_path)
    cfg = write_config(tmp_path / "w.json", store_url, "xxh128:" + "0" * 32)
    proc = subprocess.run([sys.executable, "-m", "mlspec.serve.worker", "--config", str(cfg), "--port", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    event = json.loads(lines[0])
    assert event["event"] == "failed" and "is missing from" in event["error"]
    # a corrupted object: its content no longer matches its hash
    from mlspec.artifacts import ArtifactStore

    obj = Path(ArtifactStore(store_url).loc.join(ArtifactStore(store_url).object_name(digest)))
    os.chmod(obj, 0o644)
    obj.write_bytes(obj.read_bytes()[:-10])
    cfg = write_config(tmp_path / "w2.json", store_url, digest)
    with pytest.raises(WorkerFailed, match="is corrupt"):
        start_worker(str(cfg))
    # a signature that does not fit the model
    store2, digest2 = store_model(numeric_model(), tmp_path / "b")
    sig = {"inputs": [{"name": "age", "dtype": "int64"}, {"name": "zip", "dtype": "object"}], "output": None}
    cfg = write_config(tmp_path / "w3.json", store2, digest2, signature=sig)
    with pytest.raises(WorkerFailed, match="the model also needs income, tenure; the model was not fitted on zip"):
        start_worker(str(cfg))


def test_skops_still_refuses_untrusted_types_with_the_lean_import(tmp_path):
    """The worker imports skops without its estimator table (import_skops_lean): a scikit-learn model loads,
    a file holding a type nobody trusted (a function) is refused, one line naming the type."""
    import operator

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    df = training_frame()
    x = df[["age", "income", "tenure"]]
    risky = make_pipeline(FunctionTransformer(operator.neg), numeric_model()).fit(x, df["churned"])
    store_url, digest = store_model(risky, tmp_path)
    with pytest.raises(WorkerFailed, match=r"holds types that are not trusted: _operator\.neg"):
        start_worker(str(write_config(tmp_path / "w.json", store_url, digest)))
    code = ("import sys; from mlspec.serve.model import import_skops_lean; import_skops_lean(); "
            "from skops.io import _trusted_types as t; import sklearn.utils; "
            "print(len(t.SKLEARN_ESTIMATOR_TYPE_NAMES), sklearn.utils.all_estimators.__name__, "
            "'sklearn.gaussian_process' in sys.modules, 'pytest' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["0", "all_estimators", "False", "False"], out.stderr  # lean, and put back


def test_the_worker_imports_only_what_serving_needs(served):
    code = ("import sys, json; from mlspec.serve import worker, app, config, model, reqlog; "
            f"a = app.make_app(config.read({str(served['cfg'])!r})); "
            "print(json.dumps(sorted(m for m in ('hydra', 'omegaconf', 'jsonschema', 'mlspec.cli', 'mlspec.spec', "
            "'mlspec.plan', 'rich', 'ray', 'starlette', 'fastapi', 'pydantic') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
