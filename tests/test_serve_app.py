"""The ASGI application in-process (make_app with a model object, driven through the ASGI interface as
any server drives it): signatures taken from the model or positional, how the model is called, and the
dtypes the worker tests do not cover (bool, datetime, text over the v2 binary extension)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from mlspec.serve.app import make_app
from serve_support import numeric_model, training_frame


def call(app, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """One request through the ASGI interface: (status, headers, JSON body)."""
    hdrs = [(k.lower().encode(), v.encode()) for k, v in {"content-type": "application/json",
                                                          **(headers or {})}.items()]
    scope = {"type": "http", "method": method, "path": path, "headers": hdrs, "query_string": b""}
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), json.loads(sent[1]["body"])


def config(signature=None):
    return {"deployment": "d", "model": "m", "version": 1, "artifact": {"hash": "xxh128:" + "0" * 32},
            "store": {"url": "/nonexistent"}, "signature": signature, "log": None}


def predict(app, rows):
    return call(app, "POST", "/predict", json.dumps({"instances": rows}).encode())


def test_without_a_signature_the_models_feature_names_are_the_columns():
    model = numeric_model()
    app = make_app(config(None), model=model)
    status, _, meta = call(app, "GET", "/v2/models/m")
    assert meta["parameters"]["signature"] == "model"
    assert [i["name"] for i in meta["inputs"]] == ["age", "income", "tenure"]
    df = training_frame(5, seed=3)[["age", "income", "tenure"]]
    rows = [{k: (float(v) if k == "income" else int(v)) for k, v in r.items()} for r in df.to_dict("records")]
    status, _, body = predict(app, rows)
    assert status == 200 and body["predictions"] == model.predict(df).tolist()
    status, _, body = predict(app, [{"age": "old", "income": 1, "tenure": 1}])
    assert status == 422 and "column 'age' (row 0): expected a number, got string 'old'" in body["error"]


def test_without_names_rows_are_positional():
    from sklearn.linear_model import LogisticRegression

    df = training_frame()
    model = LogisticRegression(max_iter=500).fit(df[["age", "income", "tenure"]].to_numpy(), df["churned"])
    app = make_app(config(None), model=model)
    _, _, meta = call(app, "GET", "/v2/models/m")
    assert meta["parameters"]["signature"] == "positional"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    status, _, body = predict(app, [[30, 40.5, 2], [70, 80.0, 9]])
    assert status == 200 and body["predictions"] == model.predict(np.array([[30, 40.5, 2], [70, 80.0, 9]])).tolist()
    status, _, body = predict(app, [{"age": 1}])
    assert status == 422 and "row 0: expected an array of 3 numbers" in body["error"]
    status, _, body = predict(app, [[1, 2]])
    assert status == 422 and "row 0: expected 3 numbers, got 2" in body["error"]
    req = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[30, 40.5, 2], [70, 80.0, 9]]}]}
    status, _, body = call(app, "POST", "/v2/models/m/infer", json.dumps(req).encode())
    assert status == 200 and body["outputs"][0]["data"] == body_preds(model, [[30, 40.5, 2], [70, 80.0, 9]])


def body_preds(model, rows):
    return model.predict(np.array(rows, dtype=float)).tolist()


def test_a_model_selecting_columns_by_name_gets_a_dataframe():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    df = training_frame()
    model = Pipeline([("pre", ColumnTransformer([("s", StandardScaler(), ["tenure", "age"])])),
                      ("clf", LogisticRegression())]).fit(df[["age", "income", "tenure"]], df["churned"])
    sig = {"inputs": [{"name": "age", "dtype": "int64"}, {"name": "income", "dtype": "float64"},
                      {"name": "tenure", "dtype": "int64"}], "output": None}
    app = make_app(config(sig), model=model)
    assert app.served.mode == "dataframe"  # the probe: the model refuses a matrix
    assert make_app(config(sig), model=numeric_model()).served.mode == "numpy"
    rows = [{"age": 30, "income": 40.0, "tenure": 1}, {"age": 60, "income": 90.0, "tenure": 11}]
    status, _, body = predict(app, rows)
    assert status == 200 and body["predictions"] == model.predict(pd.DataFrame(rows)).tolist()


def test_a_signature_in_another_order_than_the_model_is_reordered():
    model = numeric_model()
    sig = {"inputs": [{"name": "tenure", "dtype": "int64"}, {"name": "age", "dtype": "int64"},
                      {"name": "income", "dtype": "float64"}], "output": None}
    app = make_app(config(sig), model=model)
    assert app.served.mode == "numpy"
    rows = [{"tenure": 1, "age": 25, "income": 20.0}, {"tenure": 10, "age": 70, "income": 90.0}]
    status, _, body = predict(app, rows)
    assert status == 200 and body["predictions"] == model.predict(pd.DataFrame(rows)[["age", "income",
                                                                                         "tenure"]]).tolist()


@pytest.fixture(scope="module")
def typed_app():
    from sklearn.dummy import DummyClassifier

    X = pd.DataFrame({"active": [True, False, True], "since": pd.to_datetime(["2024-01-01", "2024-02-01",
                                                                               "2024-03-01"]),
                      "plan": ["a", "b", "a"], "score": np.array([1.5, 2.5, 3.5], dtype="float32")})
    model = DummyClassifier(strategy="most_frequent").fit(X, ["yes", "no", "yes"])
    sig = {"inputs": [{"name": "active", "dtype": "bool"}, {"name": "since", "dtype": "datetime64[ns]"},
                      {"name": "plan", "dtype": "object"}, {"name": "score", "dtype": "float32"}],
           "output": {"name": "label", "dtype": "object"}}
    return make_app(config(sig), model=model)


@pytest.mark.parametrize("row,problem", [
    ({"active": 1, "since": "2024-01-01", "plan": "a", "score": 1}, "column 'active' (row 0): expected a boolean"),
    ({"active": True, "since": "yesterday", "plan": "a", "score": 1},
     "column 'since' (row 0): expected an ISO 8601 date/time, got string 'yesterday'"),
    ({"active": True, "since": 20240101, "plan": "a", "score": 1}, "column 'since' (row 0): expected an ISO 8601"),
    ({"active": True, "since": "2024-01-01", "plan": ["a"], "score": 1}, "column 'plan' (row 0): expected a string"),
    ({"active": True, "since": "2024-01-01", "plan": "a", "score": "1"}, "column 'score' (row 0): expected a number"),
])
def test_bool_datetime_text_and_float32_columns(typed_app, row, problem):
    good = {"active": False, "since": "2024-05-01T10:30:00", "plan": "b", "score": 2}
    status, _, body = predict(typed_app, [good])
    assert status == 200 and body["predictions"] == ["yes"]
    status, _, body = predict(typed_app, [good, row])
    assert status == 422 and problem.replace("(row 0)", "(row 1)") in body["error"]


def test_v2_binary_tensors_with_text_and_bool(typed_app):
    import tritonclient.http as th
    from tritonclient.http._utils import _get_inference_request

    inputs = []
    for name, dt, values in (("active", "BOOL", np.array([True, False])),
                             ("since", "BYTES", np.array(["2024-01-01", "2024-06-30T12:00:00"], dtype=object)),
                             ("plan", "BYTES", np.array(["a", "ü-plan"], dtype=object)),
                             ("score", "FP32", np.array([1.5, 2.0], dtype="float32"))):
        t = th.InferInput(name, [2], dt)
        t.set_data_from_numpy(values, binary_data=True)
        inputs.append(t)
    body, json_size = _get_inference_request(inputs, "", None, 0, False, False, 0, None, None)
    status, _, doc = call(typed_app, "POST", "/v2/models/m/infer", body,
                          {"inference-header-content-length": str(json_size)})
    assert status == 200, doc
    assert doc["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["yes", "yes"]}
    status, _, doc = call(typed_app, "POST", "/v2/models/m/infer", body[:-3],
                          {"inference-header-content-length": str(json_size)})
    assert status == 422 and "input 'score'" in doc["error"]


def test_typed_columns_through_predict_and_binary_v2_are_logged_and_read_back(tmp_path):
    """Both record kinds of the request log with bool, datetime, text and float32 columns: a /predict body
    kept as sent and a binary v2 request kept as decoded columns, read back typed by read_requests."""
    import tritonclient.http as th
    from sklearn.dummy import DummyClassifier
    from tritonclient.http._utils import _get_inference_request

    from mlspec.serve.reqlog import read_requests

    X = pd.DataFrame({"active": [True, False], "since": pd.to_datetime(["2024-01-01", "2024-02-01"]),
                      "plan": ["a", "b"], "score": np.array([1.5, 2.5], dtype="float32")})
    model = DummyClassifier(strategy="most_frequent").fit(X, ["yes", "yes"])
    sig = {"inputs": [{"name": "active", "dtype": "bool"}, {"name": "since", "dtype": "datetime64[ns]"},
                      {"name": "plan", "dtype": "object"}, {"name": "score", "dtype": "float32"}],
           "output": {"name": "label", "dtype": "object"}}
    cfg = {**config(sig), "log": {"url": str(tmp_path / "log"), "flush_rows": 10_000, "flush_seconds": 3600}}
    app = make_app(cfg, model=model)
    assert predict(app, [{"active": False, "since": "2024-05-01T10:30:00", "plan": "b", "score": 2}])[0] == 200
    inputs = []
    for name, dt, values in (("active", "BOOL", np.array([True])), ("since", "BYTES", np.array(["2024-06-30"],
                                                                                                dtype=object)),
                             ("plan", "BYTES", np.array(["ü"], dtype=object)),
                             ("score", "FP32", np.array([0.5], dtype="float32"))):
        t = th.InferInput(name, [1], dt)
        t.set_data_from_numpy(values, binary_data=True)
        inputs.append(t)
    body, json_size = _get_inference_request(inputs, "", None, 0, False, False, 0, None, None)
    status, _, doc = call(app, "POST", "/v2/models/m/infer", body, {"inference-header-content-length": str(json_size)})
    assert status == 200, doc
    assert app.reqlog.flush() == 2
    df = read_requests(str(tmp_path / "log"))
    assert df["active"].tolist() == [False, True] and df["plan"].tolist() == ["b", "ü"]
    assert df["since"].tolist() == [pd.Timestamp("2024-05-01T10:30:00"), pd.Timestamp("2024-06-30")]
    assert str(df["score"].dtype) == "float32" and df["score"].tolist() == [2.0, 0.5]
    assert df["_prediction"].tolist() == ["yes", "yes"]
