"""Fuzz a real worker with malformed requests (Hypothesis): wrong types, missing and extra columns, null,
NaN, out-of-range numbers, bodies over the limit, bad JSON, wrong content types, malformed v2 tensors.
Every answer is a 4xx with a message, the worker stays up, and its request log holds exactly the valid
requests sent afterwards, intact."""

from __future__ import annotations

import json
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlspec.serve.local import start_worker
from serve_support import Client, numeric_model, store_model, write_config

COLUMNS = {"age": "int", "income": "float", "tenure": "int"}
LIMIT = 65_536  # a small body limit, so that bodies over it are cheap to send many times
EXAMPLES = 1_200


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    store_url, digest = store_model(numeric_model(), root)
    log_url = str(root / "log")
    cfg = write_config(root / "w.json", store_url, digest, log_url=log_url, max_body=LIMIT, flush_seconds=0.2)
    w = start_worker(str(cfg))
    yield w, log_url
    assert w.stop() == 0


# --- strategies: each yields (method, path, body bytes, headers) that the service must refuse ----------------
valid_int = st.integers(-(2 ** 40), 2 ** 40)
valid_float = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
junk = st.one_of(st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
wrong_for_int = st.one_of(junk, st.floats(allow_nan=False, allow_infinity=False),
                          st.integers(2 ** 63, 2 ** 64 - 1), st.integers(-(2 ** 64), -(2 ** 63) - 1))
wrong_for = {"int": wrong_for_int, "float": junk}


@st.composite
def valid_row(draw):
    return {"age": draw(valid_int), "income": draw(valid_float), "tenure": draw(valid_int)}


@st.composite
def bad_row(draw):
    row = draw(valid_row())
    how = draw(st.sampled_from(["type", "missing", "extra", "not_object"]))
    if how == "type":
        col = draw(st.sampled_from(list(COLUMNS)))
        row[col] = draw(wrong_for[COLUMNS[col]])
    elif how == "missing":
        for col in draw(st.lists(st.sampled_from(list(COLUMNS)), min_size=1, unique=True)):
            del row[col]
    elif how == "extra":
        name = draw(st.text(min_size=1, max_size=20).filter(lambda s: s not in COLUMNS))
        row[name] = draw(st.one_of(valid_float, junk))
    else:
        return draw(st.one_of(st.lists(valid_float, max_size=4), st.text(max_size=5), st.integers(), st.none()))
    return row


JSON = {"Content-Type": "application/json"}


@st.composite
def bad_instances(draw):
    good = draw(st.lists(valid_row(), max_size=5))
    bad = draw(st.lists(bad_row(), min_size=1, max_size=3))
    rows = good + bad
    rows = draw(st.permutations(rows))
    return "POST", "/predict", json.dumps({"instances": rows}).encode(), JSON


@st.composite
def bad_document(draw):
    doc = draw(st.one_of(
        st.lists(valid_row(), max_size=2),  # a bare list
        st.text(max_size=10), st.integers(), st.none(), st.booleans(),
        st.fixed_dictionaries({"instances": st.one_of(st.just([]), st.text(max_size=5), st.integers(),
                                                      st.dictionaries(st.text(max_size=3), st.integers()))}),
        st.fixed_dictionaries({"instances": st.lists(valid_row(), min_size=1, max_size=2),
                               "extra": st.integers()}),
        st.dictionaries(st.text(max_size=8).filter(lambda k: k != "instances"), st.integers(), max_size=3)))
    return "POST", "/predict", json.dumps(doc).encode(), JSON


@st.composite
def bad_json(draw):
    rows = draw(st.lists(valid_row(), min_size=1, max_size=3))
    text = json.dumps({"instances": rows})
    how = draw(st.sampled_from(["truncate", "nan", "inf", "garbage", "trailing"]))
    if how == "truncate":
        body = text[:draw(st.integers(1, len(text) - 1))].encode()
    elif how == "nan":
        body = text.replace(str(json.dumps(rows[0]["income"])), "NaN", 1).encode()
    elif how == "inf":
        body = text.replace(str(json.dumps(rows[0]["income"])), draw(st.sampled_from(["Infinity", "-Infinity",
                                                                                     "1e999"])), 1).encode()
    elif how == "garbage":
        body = draw(st.binary(min_size=1, max_size=200))
    else:
        body = (text + draw(st.sampled_from(["}", "]", ",", "x", "{}"]))).encode()
    try:
        json.loads(body)
        if how == "garbage":
            body = b"{" + body
            json.loads(body)
        elif how != "nan" and how != "inf":
            return draw(bad_instances())
    except ValueError:
        pass
    return "POST", "/predict", body, JSON


@st.composite
def bad_content_type(draw):
    ctype = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                  "application/xml", "text/json", "application/jsonx", "image/png"]))
    rows = draw(st.lists(valid_row(), min_size=1, max_size=2))
    path = draw(st.sampled_from(["/predict", "/v2/models/churn-clf/infer"]))
    return "POST", path, json.dumps({"instances": rows}).encode(), {"Content-Type": ctype}


@st.composite
def huge_body(draw):
    n = draw(st.integers(LIMIT + 1, 3 * LIMIT))
    row = json.dumps({"age": 1, "income": 1.0, "tenure": 1}).encode() + b","
    body = b'{"instances": [' + row * (n // len(row) + 1) + b'{"age": 1, "income": 1.0, "tenure": 1}]}'
    return "POST", draw(st.sampled_from(["/predict", "/v2/models/churn-clf/infer"])), body, JSON


@st.composite
def bad_v2(draw):
    tensors = [{"name": "age", "shape": [1], "datatype": "INT64", "data": [40]},
               {"name": "income", "shape": [1], "datatype": "FP64", "data": [1.5]},
               {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [2]}]
    i = draw(st.integers(0, 2))
    how = draw(st.sampled_from(["datatype", "shape", "data", "name", "drop", "dup", "not_tensor", "inputs"]))
    if how == "datatype":
        tensors[i]["datatype"] = draw(st.sampled_from(["BYTES", "BOOL", "FP99", "", "int64"])) if i != 1 \
            else draw(st.sampled_from(["BYTES", "BOOL", "XX"]))
    elif how == "shape":
        tensors[i]["shape"] = draw(st.one_of(st.just([]), st.just([2]), st.just([1, 2]), st.just([-1]),
                                             st.lists(st.text(max_size=2), min_size=1, max_size=2)))
    elif how == "data":
        tensors[i]["data"] = draw(st.one_of(st.lists(wrong_for[COLUMNS[tensors[i]["name"]]], min_size=1,
                                                     max_size=1), st.text(max_size=4), st.none()))
    elif how == "name":
        tensors[i]["name"] = draw(st.one_of(st.text(max_size=8).filter(lambda s: s not in COLUMNS), st.integers()))
    elif how == "drop":
        del tensors[i]
    elif how == "dup":
        tensors.append(dict(tensors[i]))
    elif how == "not_tensor":
        tensors[i] = draw(st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
    else:
        return "POST", "/v2/models/churn-clf/infer", json.dumps({"inputs": draw(st.one_of(
            st.just([]), st.text(max_size=3), st.none(), st.integers()))}).encode(), JSON
    return "POST", "/v2/models/churn-clf/infer", json.dumps({"inputs": tensors}).encode(), JSON


malformed = st.one_of(bad_instances(), bad_document(), bad_json(), bad_content_type(), huge_body(), bad_v2())


def test_fuzz_every_malformed_request_gets_4xx_and_the_log_stays_intact(worker):
    from mlspec.serve.reqlog import read_requests

    w, log_url = worker
    sent, client = [], [Client(w.port)]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(malformed)
    def one(req):
        method, path, body, headers = req
        try:
            status, _, doc = client[0].request(method, path, body, headers)
        except ConnectionError:  # the server may close after a 413 before reading all of a huge body
            client[0] = Client(w.port)
            assert len(body) > LIMIT, "only a body over the limit may be cut short"
            status, doc = 413, {"error": "(closed while sending)"}
        sent.append(status)
        assert 400 <= status < 500, (status, doc, body[:300])
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc

    one()
    assert len(sent) >= 1000
    assert {400, 413, 415, 422} <= set(sent)
    assert w.proc.poll() is None  # still up
    c = Client(w.port)
    assert c.request("GET", "/v2/health/live")[0] == 200
    good = [{"age": 1000 + i, "income": 0.5 * i, "tenure": i} for i in range(25)]
    for i in range(0, 25, 5):
        assert c.predict(good[i:i + 5])[0] == 200
    deadline = time.time() + 30
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while time.time() < deadline:
            df = read_requests(log_url)
            if len(df) >= 25:
                break
            time.sleep(0.2)
    assert not [x for x in caught if "skipped" in str(x.message)]
    # nothing a refused request carried reached the log: exactly the 25 valid rows, typed and whole
    assert len(df) == 25
    assert df["age"].tolist() == [r["age"] for r in good] and df["tenure"].tolist() == list(range(25))
    assert str(df["age"].dtype) == "int64" and str(df["income"].dtype) == "float64"
    assert df.notna().all().all()
