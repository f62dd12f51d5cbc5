"""Data formats: how a step's inputs are loaded and the values its function returns are saved.

A :class:`Format` has a name, file extensions, ``save(value, path, **save_args)``, ``load(path, as_kind,
**load_args)`` and a predicate for the values it can save. ``as_kind`` is what the function's annotation asks
for (``mlspec.runner._annotation_kind``): ``dataframe``, ``json`` (a dict or list) or ``object`` (no
annotation: the format's natural value); ``path`` and ``bytes`` are the same for every format and handled here.

Built-ins: csv, parquet, json, jsonl, excel, text, bytes (alias ``binary``), and three for models: ``skops``
(scikit-learn models without pickle: loading runs no code and refuses types not trusted), ``joblib`` and
``pickle`` (both pickle underneath: loading one runs code of the file's choosing; keep them for files your
own steps wrote). Plugins add formats through the ``mlspec.formats`` entry-point group
(``name = "pkg.module:OBJECT"``, OBJECT a :class:`Format`); they are used only where a spec declares them.

Each format imports its library (pandas, openpyxl, skops, joblib) inside save/load, so nothing heavy is
imported until a step uses the format.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

GROUP = "mlspec.formats"
ALIASES = {"binary": "bytes"}  # a dataset's `format: binary`


class FormatError(Exception):
    """A value or file a format cannot handle; its text is the step's one-line error."""


def _all_values(_value) -> bool:
    return True


@dataclass(frozen=True)
class Format:
    """One data format. ``saves(value)`` says whether ``save`` can write the value (the default choice for
    built-ins, and the check behind 'format X cannot save a Y'); ``saves_what`` says it in words."""

    name: str
    extensions: tuple
    save: Callable[..., None]  # save(value, path, **save_args)
    load: Callable[..., Any]  # load(path, as_kind, **load_args); as_kind: "dataframe", "json" or "object"
    saves: Callable[[Any], bool] = _all_values
    saves_what: str = "any value"
    pickle_free: bool = True
    description: str = ""
    defaults: dict = field(default_factory=dict)  # save_args applied unless the spec overrides them

    @property
    def suffix(self) -> str:
        return self.extensions[0] if self.extensions else ""


# --- helpers shared by the built-ins -----------------------------------------------------------------------
def is_dataframe(value) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _type_name(value) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


def _cannot(path, fmt: str, as_kind: str) -> FormatError:
    want = {"dataframe": "a DataFrame", "json": "a dict or list"}.get(as_kind, as_kind)
    return FormatError(f"cannot load {path} ({fmt}) as {want}")


def _stable_zip(path, edit=None) -> None:
    """Rewrite a zip file (an xlsx) with fixed entry times, and ``edit(name, data)`` applied to its members,
    so that equal content gives equal bytes: a re-run that changes nothing stops the ripple (early cut-off),
    and every backend stores the same object."""
    import os
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info.filename)) for info in src.infolist()]
    tmp = f"{path}.stable"
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in entries:
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            dst.writestr(fixed, edit(info.filename, data) if edit else data)
    os.replace(tmp, path)


def _no_timestamps(name: str, data: bytes) -> bytes:
    """An xlsx's document properties without their creation and modification times."""
    if name != "docProps/core.xml":
        return data
    import re

    return re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*", rb"\g<1>1980-01-01T00:00:00Z", data)


def _json_load(path, **load_args):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh, **load_args)


# --- the built-ins ----------------------------------------------------------------------------------------
def _tabular(name: str, reader: str, writer: str, ext: tuple, defaults: dict, description: str,
             extra_saves=None) -> Format:
    """A pandas-backed format: DataFrames in and out (``pd.<reader>``, ``DataFrame.<writer>``)."""

    def load(path, as_kind, **load_args):
        if as_kind == "json":
            raise _cannot(path, name, as_kind)
        import pandas as pd

        return getattr(pd, reader)(path, **load_args)

    def save(value, path, **save_args):
        if extra_saves and not is_dataframe(value):
            return extra_saves(value, path, **save_args)
        getattr(value, writer)(path, **save_args)

    return Format(name, ext, save, load, is_dataframe, "pandas DataFrames", description=description,
                  defaults=defaults)


def _excel_sheets(value, path, **save_args):
    """A mapping of sheet name -> DataFrame: one sheet each (Kedro's multi-sheet Excel)."""
    import pandas as pd

    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for sheet, df in value.items():
            df.to_excel(writer, sheet_name=str(sheet), **save_args)


def _excel_load(path, as_kind, **load_args):
    if as_kind == "json":
        raise _cannot(path, "excel", as_kind)
    import pandas as pd

    return pd.read_excel(path, **{"engine": "openpyxl", **load_args})


def _excel_save(value, path, **save_args):
    if isinstance(value, dict):
        _excel_sheets(value, path, **save_args)
    else:
        value.to_excel(path, **{"engine": "openpyxl", **save_args})
    _stable_zip(path, _no_timestamps)


def _excel_saves(value) -> bool:
    return is_dataframe(value) or (isinstance(value, dict) and bool(value)
                                   and all(is_dataframe(v) for v in value.values()))


def _json_save(value, path, **save_args):
    if is_dataframe(value):
        value.to_json(path, **save_args)
        return
    try:
        text = json.dumps(value, **{"sort_keys": True, "indent": 1, "allow_nan": True, **save_args})
    except (TypeError, ValueError) as exc:
        raise FormatError(f"is not JSON-serialisable ({exc}): return plain data, or declare another format "
                          "(skops for a model)") from None
    Path(path).write_text(text, encoding="utf-8")


def _json_load_as(path, as_kind, **load_args):
    if as_kind == "dataframe":
        import pandas as pd

        return pd.read_json(path, **load_args)
    return _json_load(path, **load_args)


def _jsonl_save(value, path, **save_args):
    if is_dataframe(value):
        value.to_json(path, **{"orient": "records", "lines": True, **save_args})
        return
    try:
        lines = [json.dumps(v, **{"sort_keys": True, **save_args}) + "\n" for v in value]
    except (TypeError, ValueError) as exc:
        raise FormatError(f"is not JSON-serialisable ({exc}): return plain records, or declare another "
                          "format") from None
    Path(path).write_text("".join(lines), encoding="utf-8")


def _jsonl_load(path, as_kind, **load_args):
    if as_kind == "json":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line, **load_args) for line in fh if line.strip()]
    import pandas as pd

    return pd.read_json(path, **{"lines": True, **load_args})


def _text_save(value, path, encoding="utf-8", **save_args):
    with open(path, "w", encoding=encoding, **save_args) as fh:
        fh.write(value)


def _text_load(path, as_kind, encoding="utf-8", **load_args):
    if as_kind == "dataframe":
        raise _cannot(path, "text", as_kind)
    if as_kind == "json":
        return _json_load(path, **load_args)
    with open(path, encoding=encoding, **load_args) as fh:
        return fh.read()


def _bytes_save(value, path, **_save_args):
    Path(path).write_bytes(bytes(value))


def _bytes_load(path, as_kind, **load_args):
    if as_kind == "dataframe":
        raise _cannot(path, "bytes", as_kind)
    if as_kind == "json":
        return _json_load(path, **load_args)
    return str(path)  # unannotated binary data: the function gets its path and reads it as it likes


def _pickle_save(value, path, protocol=5, **save_args):
    import pickle

    with open(path, "wb") as fh:
        pickle.dump(value, fh, protocol=protocol, **save_args)


def _checked(value, path, fmt: str, as_kind: str):
    """A deserialised object, checked against what the annotation asked for."""
    if as_kind == "dataframe" and not is_dataframe(value):
        raise _cannot(path, fmt, as_kind)
    if as_kind == "json" and not isinstance(value, (dict, list)):
        raise _cannot(path, fmt, as_kind)
    return value


def _pickle_load(path, as_kind, **load_args):
    import pickle

    with open(path, "rb") as fh:
        return _checked(pickle.load(fh, **load_args), path, "pickle", as_kind)


def _joblib_save(value, path, **save_args):
    import joblib

    joblib.dump(value, path, **save_args)


def _joblib_load(path, as_kind, **load_args):
    import joblib

    return _checked(joblib.load(path, **load_args), path, "joblib", as_kind)


def _skops_save(value, path, **save_args):
    import skops.io

    try:
        skops.io.dump(value, path, **save_args)
        _canonical_skops(path)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise FormatError(f"cannot be stored by skops ({type(exc).__name__}: {exc}): declare joblib or pickle "
                          "for it (both run code when loaded)") from None


def _canonical_skops(path) -> None:
    """Rewrite a skops file so that the same model always gives the same bytes (a content hash is only worth
    something if equal content has equal bytes: early cut-off, run-cache, registry versions, backends
    reproducing hashes). skops names each object, and the .npy member holding an array, by its memory
    address, and stamps members with the time; here the numbers become 1, 2, ... in the order they appear
    in the schema and every member gets one fixed time, in name order. Loading is unchanged: the schema
    only needs its numbers to agree with the member names."""
    import json
    import re
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {i.filename: (z.read(i.filename), i.compress_type) for i in z.infolist()}
    renumber: dict = {}

    def new(n: str) -> str:
        return renumber.setdefault(n, str(len(renumber) + 1))

    npy = re.compile(r"^(\d+)\.npy$")

    def walk(node):
        if isinstance(node, dict):
            return {k: (int(new(str(v))) if k == "__id__" and isinstance(v, int) and not isinstance(v, bool)
                        else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            m = npy.match(node)
            return f"{new(m.group(1))}.npy" if m else node
        return node

    schema = walk(json.loads(members.pop("schema.json")[0]))
    out = {"schema.json": (json.dumps(schema, separators=(",", ":")).encode(), zipfile.ZIP_DEFLATED)}
    for name, (data, how) in members.items():
        m = npy.match(name)
        out[f"{new(m.group(1))}.npy" if m and m.group(1) in renumber else name] = (data, how)
    tmp = f"{path}.canonical"
    with zipfile.ZipFile(tmp, "w") as z:
        for name in sorted(out):
            data, how = out[name]
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = how, 0o644 << 16
            z.writestr(info, data)
    os.replace(tmp, path)


def _skops_load(path, as_kind, trusted=None, **load_args):
    import skops.io

    found = skops.io.get_untrusted_types(file=path)
    # scikit-learn's own classes (a tree's Tree, ...) are trusted: skops builds them from their state, and the
    # default for a returned scikit-learn model is skops; anything else must be listed
    own = [t for t in found if t.split(".", 1)[0] == "sklearn"]
    untrusted = [t for t in found if t not in own and t not in (trusted or ())]
    if untrusted:
        raise FormatError(f"{path} (skops) holds types that are not trusted: {', '.join(untrusted)}; "
                          "if you trust them, list them under the input's load_args.trusted")
    allowed = list(trusted or ()) + own
    return _checked(skops.io.load(path, trusted=allowed or None, **load_args), path, "skops", as_kind)


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_bytes(value) -> bool:
    return isinstance(value, (bytes, bytearray))


def _is_jsonish(value) -> bool:
    return isinstance(value, (dict, list)) or is_dataframe(value)


def _is_records(value) -> bool:
    return is_dataframe(value) or isinstance(value, list)


BUILTIN: dict[str, Format] = {f.name: f for f in (
    _tabular("parquet", "read_parquet", "to_parquet", (".parquet", ".pq"), {"index": True},
             "Apache Parquet (pyarrow): typed, compressed columns; the default for DataFrames."),
    _tabular("csv", "read_csv", "to_csv", (".csv",), {"index": False},
             "Comma-separated values (pandas read_csv/to_csv)."),
    Format("excel", (".xlsx",), _excel_save, _excel_load, _excel_saves,
           "pandas DataFrames, or a dict of sheet name -> DataFrame", defaults={"index": False},
           description="Excel workbooks (.xlsx, through openpyxl)."),
    Format("json", (".json",), _json_save, _json_load_as, _is_jsonish, "dicts, lists and pandas DataFrames",
           description="JSON; the default for dicts and lists."),
    Format("jsonl", (".jsonl",), _jsonl_save, _jsonl_load, _is_records, "lists and pandas DataFrames",
           description="JSON Lines: one record per line."),
    Format("text", (".txt",), _text_save, _text_load, _is_text, "str",
           description="Text (UTF-8 unless `encoding` says otherwise); the default for str."),
    Format("bytes", (".bin",), _bytes_save, _bytes_load, _is_bytes, "bytes",
           description="Raw bytes; the default for bytes. Loaded unannotated, the function gets the path."),
    Format("skops", (".skops",), _skops_save, _skops_load, saves_what="scikit-learn models and plain data",
           description="scikit-learn models without pickle: loading runs no code and refuses untrusted types."),
    Format("joblib", (".joblib",), _joblib_save, _joblib_load, pickle_free=False,
           description="joblib (pickle with efficient numpy arrays, optional `compress`)."),
    Format("pickle", (".pkl", ".pickle"), _pickle_save, _pickle_load, pickle_free=False,
           description="Python pickle, protocol 5; the default for any other value."),
)}

def is_sklearn_model(value) -> bool:
    """A scikit-learn estimator (or pipeline), by its class's module: nothing is imported to tell."""
    return type(value).__module__.split(".", 1)[0] == "sklearn" and hasattr(value, "get_params")


# the default choice for a returned value, in order: DataFrames as parquet, plain data (and numbers) as JSON, a
# scikit-learn model, a numpy array or plain data holding them as skops (loading it runs no code); only what
# none of these can hold falls through to pickle, which a consumer loads only when the spec declares it
DEFAULT_ORDER = ("parquet", "json", "bytes", "text", "skops", "pickle")


def _json_scalar(value) -> bool:
    return value is None or type(value) in (bool, int, float)


def _skops_plain(value, depth: int = 0) -> bool:
    """Values skops stores and loads back with no type to trust beyond its defaults and scikit-learn's: models,
    numpy arrays and scalars, and lists, tuples and dicts (text keys) of those and plain scalars."""
    if depth > 50:
        return False
    if is_sklearn_model(value) or _json_scalar(value) or isinstance(value, str):
        return True
    mod = type(value).__module__
    if mod == "numpy" and type(value).__name__ in ("ndarray",) and value.dtype != object:
        return True
    if mod == "numpy" and hasattr(value, "dtype") and type(value).__name__ != "ndarray":
        return True  # a numpy scalar (float64, int64, ...)
    if type(value) in (list, tuple):
        return all(_skops_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _skops_plain(v, depth + 1) for k, v in value.items())
    return False


_DEFAULT_SAVES = {"parquet": is_dataframe, "json": lambda v: isinstance(v, (dict, list)) or _json_scalar(v),
                  "bytes": _is_bytes, "text": _is_text, "skops": _skops_plain}
_GUESS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".pkl": "pickle", ".skops": "skops",
          ".pickle": "pickle", ".jsonl": "jsonl", ".txt": "text"}


# --- the registry ----------------------------------------------------------------------------------------
def plugin_names() -> list[str]:
    """Names of the installed format plugins (entry-point names: nothing is imported)."""
    from mlspec.plugins import entry_points_of

    return [ep.name for ep in entry_points_of(GROUP) if ep.name not in BUILTIN]


def names() -> list[str]:
    """Every format a spec may name: built-ins, then plugins."""
    return list(BUILTIN) + sorted(plugin_names())


_PLUGINS: dict[str, Format] = {}


def _plugin(name: str) -> Format | None:
    if name in _PLUGINS:
        return _PLUGINS[name]
    from mlspec.plugins import entry_points_of

    ep = next((e for e in entry_points_of(GROUP) if e.name == name), None)
    if ep is None:
        return None
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin is the user's to fix, in one line
        raise FormatError(f"the format plugin '{name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}; "
                          "reinstall or uninstall the package that provides it") from None
    missing = [a for a in ("save", "load") if not callable(getattr(obj, a, None))]
    if missing or not isinstance(getattr(obj, "extensions", None), (tuple, list)):
        what = f"no callable {' or '.join(missing)}()" if missing else "no `extensions` tuple"
        raise FormatError(f"the format plugin '{name}' ({ep.value}) is not a format: it has {what}; "
                          "it must be an mlspec.formats.Format")
    fmt = Format(name, tuple(obj.extensions), obj.save, obj.load, getattr(obj, "saves", _all_values),
                 getattr(obj, "saves_what", "any value"), bool(getattr(obj, "pickle_free", True)),
                 getattr(obj, "description", ""), dict(getattr(obj, "defaults", None) or {}))
    _PLUGINS[name] = fmt
    return fmt


def get(name: str) -> Format:
    """The format called ``name`` (built-in or plugin); FormatError naming the known ones otherwise."""
    name = ALIASES.get(name, name)
    fmt = BUILTIN.get(name) or _plugin(name)
    if fmt is None:
        from mlspec.errors import did_you_mean

        known = names()
        raise FormatError(f"unknown format '{name}'" + (did_you_mean(name, known) or "")
                          + f" (known: {', '.join(known)})")
    return fmt


def guess(path: str) -> str:
    """The format of a file by its extension, as 0.1 guessed it (anything unknown is bytes)."""
    return _GUESS.get(Path(path).suffix.lower(), "bytes")


def suffix(name: str) -> str:
    """The file extension for a format name ('' when unknown: loading it says why)."""
    try:
        return get(name).suffix if name and name != "auto" else ""
    except FormatError:
        return ""


def load(name: str, path: str, as_kind: str, load_args: dict | None = None):
    """Read the file at ``path`` (format ``name``) as ``as_kind`` asks."""
    if as_kind == "path":
        return path
    if as_kind == "bytes":
        return Path(path).read_bytes()
    return get(name).load(path, as_kind, **dict(load_args or {}))


def save(value, dest_base: Path, name: str = "", save_args: dict | None = None) -> tuple[str, str]:
    """Write a returned value next to ``dest_base`` (a path without extension); returns (path, format).

    With ``name`` (a declared format) that format writes it, or FormatError says why it cannot; without,
    the first of DEFAULT_ORDER that takes the value does (with its default save_args).
    """
    if name:
        try:
            fmt = get(name)
        except FormatError as exc:
            raise FormatError(f"cannot be saved: {exc}") from None
        if not fmt.saves(value):
            raise FormatError(f"is {_article(_type_name(value))}, which format '{fmt.name}' cannot save "
                              f"(it saves {fmt.saves_what}): return one of those, or declare another format")
        path = dest_base.with_suffix(fmt.suffix) if fmt.suffix else dest_base
        try:
            fmt.save(value, path, **{**fmt.defaults, **dict(save_args or {})})
        except FormatError:
            raise
        except TypeError as exc:  # most often an unknown keyword in save_args
            raise FormatError(f"could not be saved as {fmt.name} ({exc}): check its save_args") from None
        return str(path), fmt.name
    for candidate in DEFAULT_ORDER[:-1]:
        if _DEFAULT_SAVES[candidate](value):
            fmt = BUILTIN[candidate]
            path = dest_base.with_suffix(fmt.suffix)
            try:
                fmt.save(value, path, **fmt.defaults)
                return str(path), fmt.name
            except FormatError:
                pass  # e.g. a dict holding a model: not JSON (or a model skops cannot store), so the last resort
    fmt = BUILTIN[DEFAULT_ORDER[-1]]  # pickle takes any value
    path = dest_base.with_suffix(fmt.suffix)
    fmt.save(value, path, **fmt.defaults)
    return str(path), fmt.name


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun
