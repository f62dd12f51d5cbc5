"""Data contracts: what a table must look like, checked whenever it is read (datasets, step outputs) and on
demand (``mlspec data check``), with a report that summarises each violated check.

A contract (``datasets.X.contract`` or ``steps.S.outputs.O.contract``, see docs/spec.md) becomes a pandera
``DataFrameSchema`` (:func:`to_schema`): pandera's dtype engine parses and compares dtypes, and its built-in
checks (``in_range``, ``isin``, ``str_matches``, ...) do the vectorised work. What pandera's own validation
adds on top, collecting one failure case per failing cell (12,000 rows for 1 % bad rows of 1M) and
formatting them, is what makes it slow and verbose; :func:`check_frame` runs the schema's columns and
checks itself and keeps, per violated check, its count and the first few failing rows.

Results are cached by (data fingerprint, contract digest) in ``.mlspec/cache/contracts/``: data already
checked against the same contract is not checked again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlspec.errors import MlspecError

CONTRACT_VERSION = 1  # bump when checking changes meaning: cached results of older versions are ignored
EXAMPLES = 3  # failing rows shown per violated check

TABULAR = ("csv", "parquet", "json", "jsonl", "excel")
_EXT = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "jsonl",
        ".ndjson": "jsonl", ".xlsx": "excel", ".xls": "excel"}


class ContractViolation(MlspecError):
    """Data that breaks its contract; ``report`` says how."""

    def __init__(self, report: "ContractReport", hint: str = ""):
        super().__init__(report.text(), hint=hint or report.hint())
        self.report = report


@dataclass
class Violation:
    """One violated check: where (column, or '' for the table), which check, how many rows, a few examples."""

    column: str
    check: str
    count: int
    detail: str = ""
    examples: list = field(default_factory=list)  # [(row label, value)] ; value a scalar or {column: value}

    def line(self, row_word: str = "row") -> str:
        where = f"column {self.column}: " if self.column else ""
        if not self.count:
            return f"{where}{self.check}: {self.detail}" if self.detail else f"{where}{self.check}"
        text = f"{where}{self.check}: {self.count} {'rows fail' if self.count != 1 else 'row fails'}"
        if self.detail:
            text += f" ({self.detail})"
        if self.examples:
            text += ", e.g. " + ", ".join(f"{row_word} {r}: {_show(v)}" for r, v in self.examples)
        return text

    def to_dict(self) -> dict:
        return {"column": self.column or None, "check": self.check, "count": self.count, "detail": self.detail,
                "examples": [{"row": _plain(r), "value": _plain(v)} for r, v in self.examples]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Violation":
        return cls(d.get("column") or "", d["check"], int(d["count"]), d.get("detail", ""),
                   [(e["row"], e["value"]) for e in d.get("examples") or ()])


@dataclass
class ContractReport:
    """The outcome of checking one table against its contract."""

    source: str  # dataset.X or step.S.O
    where: str = ""  # the file (or store object) read
    rows: int | None = None
    violations: list = field(default_factory=list)
    row_word: str = "row"  # "line" when rows are a CSV file's line numbers

    @property
    def ok(self) -> bool:
        return not self.violations

    def text(self) -> str:
        if self.ok:
            return f"{self.source}: contract holds ({self.rows} rows)"
        n = len(self.violations)
        where = f" ({self.where}" + (f", {self.rows} rows" if self.rows is not None else "") + ")" if self.where else ""
        head = f"{self.source} violates its contract{where}: {n} check{'s' if n != 1 else ''} failed"
        return "\n".join([head] + [f"  - {v.line(self.row_word)}" for v in self.violations])

    def hint(self) -> str:
        if self.source.startswith("dataset."):
            return (f"fix the data, or the contract in the spec if it is wrong; "
                    f"`mlspec data check {self.source}` checks it again without applying")
        step = self.source.rsplit(".", 1)[0]
        return f"fix what {step} writes, or the contract in the spec if it is wrong, then apply again"

    def to_dict(self) -> dict:
        return {"source": self.source, "where": self.where, "rows": self.rows, "ok": self.ok,
                "row_word": self.row_word, "violations": [v.to_dict() for v in self.violations]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ContractReport":
        return cls(d["source"], d.get("where", ""), d.get("rows"), [Violation.from_dict(v) for v in d["violations"]],
                   d.get("row_word", "row"))


def _plain(v):
    """A value as JSON keeps it (numpy scalars and timestamps to Python)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, (str, int, float, bool)) or v is None:
        if isinstance(v, float) and v != v:
            return None
        return v
    return str(v)


def _show(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_show(x)}" for k, x in v.items()) + "}"
    v = _plain(v)
    if v is None:
        return "null"
    return repr(v) if isinstance(v, str) else str(v)


# --- the contract as a pandera schema ----------------------------------------------------------------------
def digest(contract: Mapping) -> str:
    import xxhash

    text = json.dumps({"v": CONTRACT_VERSION, "c": contract}, sort_keys=True, separators=(",", ":"), default=str)
    return xxhash.xxh3_64_hexdigest(text.encode())


def _table_checks(contract: Mapping) -> list:
    """The cross-column checks: ``"expr"`` or ``{expr, name}``, as (name, expression)."""
    out = []
    for c in contract.get("checks") or ():
        if isinstance(c, str):
            out.append((c, c))
        else:
            out.append((c.get("name") or c["expr"], c["expr"]))
    return out


def to_schema(contract: Mapping):
    """The pandera DataFrameSchema a contract stands for (dtypes parsed by pandera's engine)."""
    import pandera.pandas as pa

    columns = {}
    for name, c in (contract.get("columns") or {}).items():
        c = c or {}
        checks = []
        if c.get("min") is not None and c.get("max") is not None:
            checks.append(pa.Check.in_range(c["min"], c["max"]))
        elif c.get("min") is not None:
            checks.append(pa.Check.ge(c["min"]))
        elif c.get("max") is not None:
            checks.append(pa.Check.le(c["max"]))
        if c.get("values") is not None:
            checks.append(pa.Check.isin(list(c["values"])))
        if c.get("regex"):
            checks.append(pa.Check.str_matches(c["regex"]))
        if c.get("min_length") is not None or c.get("max_length") is not None:
            checks.append(pa.Check.str_length(c.get("min_length"), c.get("max_length")))
        columns[name] = pa.Column(_pa_dtype(c.get("dtype")), checks=checks, nullable=bool(c.get("nullable", True)),
                                  unique=bool(c.get("unique", False)), required=True, name=name)
    table = [pa.Check(_expr_fn(expr), name=name, error=expr) for name, expr in _table_checks(contract)]
    unique = list(contract.get("unique") or ()) or None
    return pa.DataFrameSchema(columns, checks=table, strict=bool(contract.get("strict", False)), unique=unique)


def _pa_dtype(name):
    if not name:
        return None
    from pandera.engines import pandas_engine

    try:
        return pandas_engine.Engine.dtype(name)
    except TypeError:
        raise MlspecError(f"contract dtype '{name}' is not a pandas dtype",
                          hint="use a pandas dtype name: int64, float64, bool, string, object, category, "
                               "datetime64[ns]") from None


def _expr_fn(expr: str):
    def check(df):
        return df.eval(expr)

    return check


# --- dtypes: a column passes when its values convert losslessly to the declared dtype ------------------------
def _family(dtype) -> str:
    import pandas as pd
    from pandas.api import types as t

    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if t.is_bool_dtype(dtype):
        return "bool"
    if t.is_integer_dtype(dtype):
        return "int"
    if t.is_float_dtype(dtype):
        return "float"
    if t.is_datetime64_any_dtype(dtype):
        return "datetime"
    if t.is_timedelta64_dtype(dtype):
        return "timedelta"
    if t.is_string_dtype(dtype) or t.is_object_dtype(dtype):
        return "string"
    return str(dtype)


def _declared_family(pa_dtype) -> str:
    import pandas as pd

    name = str(pa_dtype)
    if name in ("object", "str", "string") or name.startswith("string"):
        return "string"
    return _family(pd.api.types.pandas_dtype(getattr(pa_dtype, "type", name)))


def _dtype_violation(name: str, s, pa_dtype, declared: str, index):
    """(violation or None, the series to run value checks on or None when its type is wrong)."""
    import numpy as np
    import pandas as pd

    want, got = _declared_family(pa_dtype), _family(s.dtype)
    if want == got or (want == "string" and got == "category") or (want == "float" and got == "int"):
        return None, s
    if want in ("int", "float") and got in ("int", "float", "string", "bool"):
        conv = pd.to_numeric(s, errors="coerce") if got == "string" else s.astype("float64")
        bad = conv.isna() & s.notna()
        if want == "int":
            frac = conv.notna() & (np.floor(conv) != conv)
            bad = bad | frac
        if not bad.any():
            return None, conv
        return _violation(name, f"dtype {declared}", bad, s, index, f"found {s.dtype}: not {declared} values"), None
    if want == "bool" and got in ("int", "float", "string"):
        ok = s.isna() | s.isin([0, 1, True, False, "true", "false", "True", "False"])
        if ok.all():
            return None, s
        return _violation(name, f"dtype {declared}", ~ok, s, index, f"found {s.dtype}: not {declared} values"), None
    if want == "datetime" and got == "string":
        conv = pd.to_datetime(s, errors="coerce")
        bad = conv.isna() & s.notna()
        if not bad.any():
            return None, conv
        return _violation(name, f"dtype {declared}", bad, s, index, f"found {s.dtype}: not dates"), None
    if want == "category" and got == "string":
        return None, s
    return Violation(name, f"dtype {declared}", 0, f"found {s.dtype}"), None


def _violation(column: str, check: str, bad, values, index, detail: str = "") -> Violation:
    """A Violation from a boolean mask of failing rows: its count and the first few rows."""
    import numpy as np

    mask = np.asarray(bad, dtype=bool)
    count = int(np.count_nonzero(mask))
    pos = np.flatnonzero(mask)[:EXAMPLES]
    if hasattr(values, "iloc") and getattr(values, "ndim", 1) == 2:
        rows = values.iloc[pos]
        examples = [(index[p], {c: rows.iloc[i][c] for c in rows.columns}) for i, p in enumerate(pos)]
    else:
        arr = values.iloc[pos] if hasattr(values, "iloc") else values[pos]
        examples = [(index[p], v) for p, v in zip(pos, list(arr))]
    return Violation(column, check, count, detail, examples)


def _passed(output, n: int):
    """A pandera check's boolean output (rows by position, nulls left out) as one flag per row."""
    import numpy as np

    if len(output) == n:
        return np.asarray(output, dtype=bool)
    ok = np.ones(n, dtype=bool)
    ok[np.asarray(output.index, dtype=np.int64)] = np.asarray(output, dtype=bool)
    return ok


def _check_name(check) -> str:
    return str(check.error or check.name)


def check_frame(contract: Mapping, df, source: str = "data", where: str = "", schema=None,
                row_offset: int = 0) -> ContractReport:
    """Check a DataFrame against a contract; every violated check once, with its count and a few rows.
    Rows are labelled by position (0-based) plus ``row_offset`` (a CSV's first data line is row 2 with
    ``row_offset=2``)."""
    import numpy as np

    schema = schema if schema is not None else to_schema(contract)
    n = len(df)
    index = np.arange(n) + row_offset
    report = ContractReport(source, where, n)
    out = report.violations
    rows = contract.get("rows") or {}
    if rows.get("min") is not None and n < rows["min"]:
        out.append(Violation("", f"rows >= {rows['min']}", 0, f"found {n}"))
    if rows.get("max") is not None and n > rows["max"]:
        out.append(Violation("", f"rows <= {rows['max']}", 0, f"found {n}"))
    present = set(map(str, df.columns))
    for name in schema.columns:
        if name not in present:
            out.append(Violation(name, "missing column", 0,
                                 "not in the data, which has " + (", ".join(sorted(present)) or "no columns")))
    if schema.strict:
        extra = [c for c in map(str, df.columns) if c not in schema.columns]
        for c in extra:
            out.append(Violation(c, "unexpected column", 0, "not in the contract, which is strict"))
    for name, col in schema.columns.items():
        if name not in present:
            continue
        s = df[name].reset_index(drop=True)  # positions: pandera leaves nulls out of a check's output
        declared = (contract.get("columns") or {}).get(name, {}).get("dtype")
        values = s
        if col.dtype is not None:
            v, values = _dtype_violation(name, s, col.dtype, declared, index)
            if v is not None:
                out.append(v)
        nulls = s.isna()
        if not col.nullable:
            if nulls.any():
                out.append(_violation(name, "not null", nulls, s, index))
        if col.unique:
            dup = s.duplicated(keep=False) & ~nulls
            if dup.any():
                out.append(_violation(name, "unique", dup, s, index, "duplicate values"))
        if values is None:
            continue  # wrong type: value checks would only repeat that
        for check in col.checks:
            try:
                bad = ~_passed(check(values).check_output, n) & ~np.asarray(nulls)
            except (TypeError, ValueError, AttributeError) as exc:  # e.g. a regex on numbers
                out.append(Violation(name, _check_name(check), 0, f"cannot be checked on {s.dtype}: {exc}"))
                continue
            if bad.any():
                out.append(_violation(name, _check_name(check), bad, s, index))
    if schema.unique:
        keys = [k for k in schema.unique if k in present]
        if len(keys) == len(schema.unique):
            dup = df.duplicated(subset=keys, keep=False)
            if dup.any():
                out.append(_violation("", f"unique ({', '.join(keys)})", dup, df[keys], index,
                                      "duplicate keys"))
    for check in schema.checks:
        try:
            bad = ~_passed(check(df.reset_index(drop=True)).check_output, n)
        except Exception as exc:  # noqa: BLE001 - the user's expression: its error is the report
            out.append(Violation("", f"check '{_check_name(check)}'", 0,
                                 f"cannot be evaluated: {type(exc).__name__}: {exc}"))
            continue
        if bad.any():
            cols = [c for c in map(str, df.columns) if c in str(check.error)]
            out.append(_violation("", f"check '{_check_name(check)}'", bad, df[cols] if cols else df, index))
    return report


# --- reading the data ---------------------------------------------------------------------------------------
def guess_format(path: str) -> str:
    return _EXT.get(os.path.splitext(path.lower())[1], "")


def read_table(path: str, fmt: str = "auto", options: Mapping | None = None, load_args: Mapping | None = None):
    """A DataFrame from a file, a glob or a directory (local or fsspec); unreadable data raises
    :class:`ReadProblem` saying what is wrong with it (empty, malformed, not UTF-8, ...)."""
    import pandas as pd

    fmt = fmt if fmt and fmt != "auto" else guess_format(path)
    if fmt not in TABULAR:
        raise ReadProblem("format", f"format {fmt or 'unknown'} is not a table (contracts check csv, parquet, json, "
                                    "jsonl or excel)")
    files = _files(path, options)
    frames = [_read_one(f, fmt, options, load_args) for f in files]
    if fmt == "csv" and all(len(f) == 0 and len(f.columns) == 0 for f in frames):
        raise ReadProblem("empty file", "no columns (the file is blank)")
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


class ReadProblem(Exception):
    def __init__(self, check: str, detail: str):
        super().__init__(detail)
        self.check, self.detail = check, detail


def _files(path: str, options) -> list:
    if "://" not in path or path.startswith("file://"):
        import glob

        p = path[len("file://"):] if path.startswith("file://") else path
        if any(c in p for c in "*?["):
            files = sorted(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
        elif os.path.isdir(p):
            files = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            files = [p]
        if not files:
            raise ReadProblem("read", f"no files at {path}")
        return files
    import fsspec

    fs, p = fsspec.core.url_to_fs(path, **dict(options or {}))
    found = fs.glob(p) if any(c in p for c in "*?[") else ([x for x in fs.find(p)] if fs.isdir(p) else [p])
    return [fs.unstrip_protocol(x) for x in sorted(found)]


def _read_one(path: str, fmt: str, options, load_args):
    import pandas as pd

    args = dict(load_args or {})
    so = dict(options or {}) if "://" in path and not path.startswith("file://") else None
    try:
        if fmt == "csv":
            if so is None and os.path.getsize(path) == 0:
                raise ReadProblem("empty file", "0 bytes, not even a header line")
            return pd.read_csv(path, storage_options=so, **args)
        if fmt == "parquet":
            return pd.read_parquet(path, storage_options=so, **args)
        if fmt == "json":
            return pd.read_json(path, storage_options=so, **args)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, storage_options=so, **args)
        return pd.read_excel(path, storage_options=so, **args)
    except ReadProblem:
        raise
    except UnicodeDecodeError as exc:
        enc = args.get("encoding", "utf-8")
        raise ReadProblem("encoding", _bad_byte(path, enc) if so is None else f"not valid {enc}: {exc.reason}") \
            from None
    except pd.errors.EmptyDataError:
        raise ReadProblem("empty file", "no columns (the file is blank)") from None
    except pd.errors.ParserError as exc:
        msg = str(exc).replace("Error tokenizing data. C error: ", "").strip()
        raise ReadProblem("malformed csv", msg) from None
    except FileNotFoundError:
        raise ReadProblem("readable", f"{path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - pandas, pyarrow and friends have their own error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReadProblem("readable", f"cannot be read as {fmt}: {type(exc).__name__}: {first}") from None


def _bad_byte(path: str, encoding: str) -> str:
    """Where a file stops being valid text: the byte, its line and column."""
    data = Path(path).read_bytes()
    try:
        data.decode(encoding)
        return f"not valid {encoding}"
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return (f"not valid {encoding}: byte 0x{data[exc.start]:02x} at line {line}, column {col} "
                f"(save the file as UTF-8)")


def check_path(contract: Mapping, path: str, source: str, fmt: str = "auto", options=None, load_args=None,
               shown: str = "") -> ContractReport:
    """Read a table and check it; a file that cannot be read is a report of its own (one violation)."""
    shown = shown or path
    try:
        df = read_table(path, fmt, options, load_args)
    except ReadProblem as p:
        return ContractReport(source, shown, None, [Violation("", p.check, 0, p.detail)])
    real = fmt if fmt and fmt != "auto" else guess_format(path)
    if real == "csv":
        report = check_frame(contract, df, source, shown, row_offset=2)  # line 1 is the header
        report.row_word = "line"
        return report
    return check_frame(contract, df, source, shown)


# --- the cache ----------------------------------------------------------------------------------------------
class ContractCache:
    """Reports by (data hash, contract digest): JSON files under ``.mlspec/cache/contracts/``."""

    def __init__(self, project_dir: str | os.PathLike):
        self.dir = Path(project_dir) / ".mlspec" / "cache" / "contracts"

    def _file(self, data_hash: str, contract: Mapping) -> Path:
        import xxhash

        return self.dir / f"{xxhash.xxh3_64_hexdigest((data_hash + ':' + digest(contract)).encode())}.json"

    def get(self, data_hash: str, contract: Mapping) -> ContractReport | None:
        try:
            return ContractReport.from_dict(json.loads(self._file(data_hash, contract).read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, data_hash: str, contract: Mapping, report: ContractReport) -> None:
        f = self._file(data_hash, contract)
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(report.to_dict()), "utf-8")  # example rows keep their column order
            os.replace(tmp, f)
        except OSError:
            pass  # a cache that cannot be written only costs a re-check


def check_dataset(spec, ds, data_hash: str | None = None, *, use_cache: bool = True) -> tuple[ContractReport, bool]:
    """Check a dataset of the spec against its contract: (report, whether it came from the cache)."""
    cache = ContractCache(spec.project_dir)
    if use_cache and data_hash:
        hit = cache.get(data_hash, ds.contract)
        if hit is not None:
            return hit, True
    uri = ds.uri
    path = uri if ("://" in uri and not uri.startswith("file://")) or os.path.isabs(uri) else str(spec.project_dir / uri)
    try:
        report = check_path(ds.contract, path, ds.address, ds.format, ds.options, shown=uri)
    except MlspecError as exc:  # a contract that cannot be built (an unknown dtype): the report says so
        report = ContractReport(ds.address, uri, None, [Violation("", "contract", 0, exc.message)])
    if data_hash:
        cache.put(data_hash, ds.contract, report)
    return report, False


def check_output(project, address: str, output: str, out: Mapping, contract: Mapping, *,
                 use_cache: bool = True) -> tuple[ContractReport, bool]:
    """Check a step output (a stored artifact) against the contract its step declares for it."""
    source = f"{address}.{output}"
    cache = ContractCache(project.spec.project_dir)
    h = out.get("hash", "")
    if use_cache and h:
        hit = cache.get(h, contract)
        if hit is not None:
            hit.source = source
            return hit, True
    fmt = out.get("format") or "auto"
    if fmt not in TABULAR:
        report = ContractReport(source, h, None, [Violation("", "tabular", 0,
                                f"the output is {fmt}, not a table: a contract needs csv, parquet, json or jsonl")])
    else:
        try:
            path = project.artifacts.local_path(h, produced_by=source)
        except MlspecError as exc:
            report = ContractReport(source, h, None, [Violation("", "readable", 0, str(exc))])
        else:
            try:
                report = check_path(contract, str(path), source, fmt, shown=f"{output} ({fmt}, {h[:16]})")
            except MlspecError as exc:
                report = ContractReport(source, h, None, [Violation("", "contract", 0, exc.message)])
    cache.put(h, contract, report)
    return report, False


# --- drafting a contract from data (like TFX's SchemaGen) ----------------------------------------------------
def infer(df, *, max_values: int = 20) -> dict:
    """A draft contract for a person to review: pandera infers dtypes, nullability and ranges; mlspec adds
    allowed values for low-cardinality text columns, uniqueness for key-like columns and a row floor."""
    import pandera.pandas as pa

    inferred = pa.infer_schema(df)
    columns: dict[str, Any] = {}
    for name, col in inferred.columns.items():
        s = df[name]
        c: dict[str, Any] = {"dtype": _dtype_name(s.dtype)}
        c["nullable"] = bool(s.isna().any())
        fam = _family(s.dtype)
        for check in col.checks:
            st = check.statistics or {}
            if fam in ("int", "float"):
                cast = int if fam == "int" else float
                if "min_value" in st:
                    c["min"] = cast(st["min_value"])
                if "max_value" in st:
                    c["max"] = cast(st["max_value"])
        nn = s.dropna()
        if fam in ("string", "category", "bool", "int"):
            uniq = nn.unique()
            if 0 < len(uniq) <= max_values and len(nn) >= 2 * len(uniq) and fam != "int" or \
                    (fam == "int" and 0 < len(uniq) <= 2 and len(nn) > 2):
                c["values"] = sorted(_plain(v) for v in uniq)
        if len(nn) == len(s) and len(nn) > 1 and nn.is_unique and fam in ("int", "string"):
            c["unique"] = True
        columns[str(name)] = c
    return {"columns": columns, "rows": {"min": int(len(df) // 2)}, "strict": True}


def _dtype_name(dtype) -> str:
    fam = _family(dtype)
    return {"string": "string", "int": "int64", "float": "float64", "bool": "bool", "category": "category",
            "datetime": "datetime64[ns]"}.get(fam, str(dtype))
