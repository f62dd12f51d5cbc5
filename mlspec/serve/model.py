"""The served model, its signature, and the decoding of request rows into columns the model predicts on.

A request's rows are validated column by column against the signature (one set of value types per column,
then one numpy conversion), so a 100-row request costs a few list passes, not 100 Python dicts checked
value by value. A bad value is found only when the column fails, and named: column, row and problem.

How the model is called is chosen once, at load: a signature of numeric and boolean columns is stacked
into one float64 matrix (4x faster than a DataFrame in scikit-learn's ``predict``), unless a probe shows
the model answers differently (or not at all) without a DataFrame (a ColumnTransformer selecting columns
by name, for instance); then every request builds a DataFrame with the signature's columns.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np


class BadInput(Exception):
    """A request the signature rejects; its text names the column and the problem (answered 422)."""


class LoadError(Exception):
    """The model could not be loaded or does not fit its signature (the worker reports it and exits 1)."""


# signature dtype (numpy names from pandas' parquet metadata, or arrow type names) -> (kind, numpy dtype)
_INTS = {f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)}
_KIND_ALIASES = {"double": "float64", "float": "float32", "halffloat": "float16", "Int64": "int64",
                 "Int32": "int32", "Int16": "int16", "Int8": "int8", "Float64": "float64", "Float32": "float32",
                 "boolean": "bool"}
_STRINGS = {"object", "str", "string", "large_string", "utf8", "large_utf8", "category", "dictionary"}
V2_TYPES = {"bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
            "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "float16": "FP16",
            "float32": "FP32", "float64": "FP64"}
_BOOL, _INT, _FLOAT, _STR, _TIME, _NUMBER = "bool", "int", "float", "str", "datetime", "number"
# the Python types (as JSON decodes them) a column of each kind accepts
_ALLOWED = {_BOOL: frozenset({bool}), _INT: frozenset({int}), _FLOAT: frozenset({int, float}),
            _NUMBER: frozenset({int, float}), _STR: frozenset({str}), _TIME: frozenset({str})}
_WHAT = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null", list: "array",
         dict: "object"}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # as the signature (or the model) declares it
    kind: str  # bool, int, float, number (int or float, no declared dtype), str, datetime
    np_dtype: str  # what the column is converted to

    @property
    def v2_datatype(self) -> str:
        return V2_TYPES.get(self.np_dtype, "BYTES")

    @property
    def allowed(self) -> frozenset:
        return _ALLOWED[self.kind]


def column(name: str, dtype: str | None) -> Column:
    d = _KIND_ALIASES.get(str(dtype), str(dtype)) if dtype else ""
    if d == "bool":
        return Column(name, d, _BOOL, "bool")
    if d in _INTS:
        return Column(name, d, _INT, d)
    if d in ("float16", "float32", "float64"):
        return Column(name, d, _FLOAT, d)
    if d.startswith(("datetime64", "timestamp")):
        return Column(name, d, _TIME, "datetime64[ns]")
    if d in _STRINGS or d.startswith(("dictionary<", "string")):
        return Column(name, d, _STR, "object")
    return Column(name, d or "number", _NUMBER, "float64")  # unknown or undeclared: a number


def _show(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(value) -> str:
    what = _WHAT.get(type(value), type(value).__name__)
    if isinstance(value, (list, dict)) or value is None:
        return what
    return f"{what} {_show(value)}"


def column_problem(col: Column, values: list, rows_offset: int = 0) -> str:
    """Why ``values`` cannot be the column: the first offending value, named with its row."""
    allowed = col.allowed
    for i, v in enumerate(values):
        if type(v) not in allowed:
            return f"column '{col.name}' (row {i + rows_offset}): expected {_expect(col)}, got {_describe(v)}"
        if col.kind in (_FLOAT, _NUMBER) and type(v) is float and not math.isfinite(v):
            return f"column '{col.name}' (row {i + rows_offset}): expected a finite number, got {v}"
        if col.kind == _INT:
            info = np.iinfo(col.np_dtype)
            if not info.min <= v <= info.max:
                return (f"column '{col.name}' (row {i + rows_offset}): {v} is out of range for {col.np_dtype} "
                        f"({info.min}..{info.max})")
        if col.kind == _TIME:
            try:
                np.datetime64(v, "ns")
            except (ValueError, TypeError, OverflowError):
                return (f"column '{col.name}' (row {i + rows_offset}): expected an ISO 8601 date/time, got "
                        f"{_describe(v)}")
    return f"column '{col.name}': cannot be read as {col.dtype}"


def _expect(col: Column) -> str:
    return {_BOOL: "a boolean (bool)", _INT: f"an integer ({col.dtype})", _FLOAT: f"a number ({col.dtype})",
            _NUMBER: "a number", _STR: f"a string ({col.dtype})", _TIME: f"an ISO 8601 date/time ({col.dtype})"
            }[col.kind]


def to_array(col: Column, values: list) -> np.ndarray:
    """The column's values as a numpy array of its dtype; BadInput naming the first bad value."""
    types = set(map(type, values))
    if not types <= col.allowed:
        raise BadInput(column_problem(col, values))
    try:
        if col.kind == _TIME:
            arr = np.array(values, dtype="datetime64[ns]")
        elif col.kind == _STR:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
        else:
            arr = np.array(values, dtype=col.np_dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadInput(column_problem(col, values)) from None
    if col.kind in (_FLOAT, _NUMBER) and float in types and not np.isfinite(arr).all():
        raise BadInput(column_problem(col, values))
    return arr


@dataclass
class Signature:
    columns: list  # [Column]
    output_name: str = "prediction"
    output_dtype: str = ""
    source: str = "declared"  # declared, model (feature_names_in_), positional (n_features_in_ numbers)
    names: tuple = field(default=())

    def __post_init__(self):
        self.names = tuple(c.name for c in self.columns)

    @property
    def positional(self) -> bool:
        return self.source == "positional"


def signature_from(config_sig: dict | None, model) -> Signature:
    """The signature to serve: the declared one, else the model's ``feature_names_in_``, else positional rows
    of ``n_features_in_`` numbers."""
    out = (config_sig or {}).get("output") or {}
    out_name, out_dtype = out.get("name") or "prediction", out.get("dtype") or ""
    inputs = (config_sig or {}).get("inputs") or []
    names_in = getattr(model, "feature_names_in_", None)
    if inputs:
        cols = [column(str(i["name"]), i.get("dtype")) for i in inputs]
        if names_in is not None:
            declared, fitted = [c.name for c in cols], [str(n) for n in names_in]
            if set(declared) != set(fitted):
                missing = [n for n in fitted if n not in declared]
                extra = [n for n in declared if n not in fitted]
                raise LoadError("the signature's inputs do not match the model's feature_names_in_"
                                + (f"; the model also needs {', '.join(missing)}" if missing else "")
                                + (f"; the model was not fitted on {', '.join(extra)}" if extra else "")
                                + ": register the model again from the step that trained it")
            by_name = {c.name: c for c in cols}
            cols = [by_name[n] for n in fitted]  # the model's order: a numpy matrix is positional
        return Signature(cols, out_name, out_dtype, "declared")
    if names_in is not None:
        return Signature([column(str(n), None) for n in names_in], out_name, out_dtype, "model")
    n = getattr(model, "n_features_in_", None)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise LoadError("the model has no signature, no feature_names_in_ and no n_features_in_: register it "
                        "with a signature (train it on a parquet DataFrame) so that the service can check inputs")
    return Signature([column(f"x{i}", None) for i in range(int(n))], out_name, out_dtype, "positional")


class Served:
    """A loaded model with its signature and the way it is called (``mode``: numpy or dataframe)."""

    def __init__(self, model, signature: Signature, name: str = "model", version=None):
        self.model, self.signature, self.name, self.version = model, signature, name, version
        self.mode = self._choose_mode()
        if self.mode == "numpy" and getattr(model, "feature_names_in_", None) is not None:
            # the matrix's columns are in the model's feature_names_in_ order (signature_from): the warning
            # that a matrix has no names would be printed (and cost) on every request
            warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)

    # --- calling the model -------------------------------------------------------------------------------
    def _matrix(self, cols: dict) -> np.ndarray:
        arrays = [cols[n] for n in self.signature.names]
        if len(arrays) == 1:
            return arrays[0].astype(np.float64, copy=False).reshape(-1, 1)
        return np.column_stack(arrays).astype(np.float64, copy=False)

    def _frame(self, cols: dict):
        import pandas as pd

        return pd.DataFrame({n: cols[n] for n in self.signature.names}, copy=False)

    def predict(self, cols: dict) -> np.ndarray:
        x = self._matrix(cols) if self.mode == "numpy" else self._frame(cols)
        return np.asarray(self.model.predict(x))

    def _choose_mode(self) -> str:
        sig = self.signature
        if sig.positional:
            return "numpy"
        if not all(c.kind in (_BOOL, _INT, _FLOAT, _NUMBER) for c in sig.columns):
            return "dataframe"
        probe = {c.name: np.array([0, 1, 2], dtype=c.np_dtype) for c in sig.columns}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                by_frame = np.asarray(self.model.predict(self._frame(probe)))
        except Exception:
            return "dataframe"  # the probe values may be out of the model's domain: keep the safe path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                by_matrix = np.asarray(self.model.predict(self._matrix(probe)))
        except Exception:
            return "dataframe"
        same = by_frame.shape == by_matrix.shape and bool((by_frame == by_matrix).all())
        return "numpy" if same else "dataframe"

    # --- outputs -------------------------------------------------------------------------------------------
    def output_v2_datatype(self, preds: np.ndarray | None = None) -> str:
        if preds is not None:
            return V2_TYPES.get(preds.dtype.name, "BYTES")
        if self.signature.output_dtype:
            return column("", self.signature.output_dtype).v2_datatype
        return "FP64"


def decode_instances(sig: Signature, instances) -> tuple[dict, int]:
    """``{"instances": [...]}`` rows -> ({column: array}, number of rows); BadInput naming the problem."""
    if type(instances) is not list:
        raise BadInput(f"'instances' must be an array of rows, got {_describe(instances)}")
    n = len(instances)
    if n == 0:
        raise BadInput("'instances' is empty: send at least one row")
    if sig.positional:
        return _decode_positional(sig, instances), n
    width = len(sig.columns)
    if not all(type(r) is dict and len(r) == width for r in instances):
        for i, r in enumerate(instances):
            if type(r) is not dict:
                raise BadInput(f"row {i}: expected an object of column: value, got {_describe(r)}")
            _row_columns(sig, r, i)
    cols = {}
    for c in sig.columns:
        name = c.name
        try:
            values = [r[name] for r in instances]
        except KeyError:
            i = next(i for i, r in enumerate(instances) if name not in r)
            _row_columns(sig, instances[i], i)
            raise BadInput(f"row {i}: column '{name}' is missing") from None  # (unreachable: _row_columns raises)
        cols[name] = to_array(c, values)
    return cols, n


def _row_columns(sig: Signature, row: dict, i: int) -> None:
    missing = [n for n in sig.names if n not in row]
    if missing:
        raise BadInput(f"row {i}: column '{missing[0]}' is missing"
                       + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                       + f"; expected columns: {', '.join(sig.names)}")
    extra = [k for k in row if k not in sig.names]
    if extra:
        raise BadInput(f"row {i}: unknown column '{_show_name(extra[0])}'; expected columns: {', '.join(sig.names)}")


def _show_name(name: str) -> str:
    return name if len(name) <= 60 else name[:57] + "..."


def _decode_positional(sig: Signature, instances: list) -> dict:
    width = len(sig.columns)
    for i, r in enumerate(instances):
        if type(r) is not list:
            raise BadInput(f"row {i}: expected an array of {width} numbers (this model has no column names), got "
                           f"{_describe(r)}")
        if len(r) != width:
            raise BadInput(f"row {i}: expected {width} numbers, got {len(r)}")
    cols = {}
    for j, c in enumerate(sig.columns):
        cols[c.name] = to_array(c, [r[j] for r in instances])
    return cols


def load_model(artifact: dict, store_url: str, store_options: dict | None = None):
    """The model object from the artifact store (its content checked against its hash)."""
    from mlspec import formats
    from mlspec.artifacts import ArtifactStore

    digest, fmt = artifact.get("hash"), artifact.get("format") or "skops"
    if not digest:
        raise LoadError("the config's artifact has no hash")
    if fmt == "skops":
        import_skops_lean()
    store = ArtifactStore(store_url, store_options or None)
    cache = os.environ.get("MLSPEC_SERVE_CACHE") or None
    path = store.local_path(digest, cache)
    try:
        return formats.load(fmt, path, "object", artifact.get("load_args") or None)
    except formats.FormatError as exc:
        raise LoadError(str(exc)) from None


def import_skops_lean() -> None:
    """Import ``skops.io`` without the table of every scikit-learn estimator it builds at import.

    skops computes its default trusted types by calling scikit-learn's ``all_estimators()``, which imports
    every module of scikit-learn (and pytest, through ``sklearn.utils._testing``): 0.3-0.45 s of the worker's
    start, for a list a worker never needs. Here ``all_estimators`` answers ``[]`` for the time of that import
    only, so skops' default list holds no scikit-learn estimator. What a load trusts does not change: mlspec's
    loader (``mlspec.formats``) passes the ``sklearn.*`` types found in the file as trusted itself, as it
    always did, and anything else must be in skops' remaining defaults (numpy, scipy, builtins) or listed by
    the user; a file with any other type is refused as before (tests/test_serve.py). When skops is already
    imported, or scikit-learn has no ``all_estimators``, nothing is done."""
    import sys

    if "skops.io" in sys.modules:
        return
    import sklearn.utils

    real = getattr(sklearn.utils, "all_estimators", None)
    if real is None:
        return
    sklearn.utils.all_estimators = lambda type_filter=None: []
    try:
        import skops.io  # noqa: F401
    finally:
        sklearn.utils.all_estimators = real
