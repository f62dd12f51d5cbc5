"""Composition: the project's root spec + config groups + overrides -> plain data with a source map.

This is the only module that imports Hydra or OmegaConf. Hydra's compose API composes the primary config
(`mlspec.yaml`), the project's own config groups (`env/prod.yaml`) and mlspec's built-in groups
(`configs/backend/*.yaml`); it never changes the working directory, creates output folders or touches
logging when used this way. What leaves this module is plain data plus a :class:`SourceMap` that answers
"which file, line and column (or which override) set this key?".
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from mlspec.errors import Diagnostic, MlspecError, SpecError, did_you_mean
from mlspec.yamlsrc import YamlSource, _syntax_diag, load_yaml, parse_scalar

DEFAULT_SPEC = "mlspec.yaml"
_PACKAGE_RE = re.compile(r"^#\s*@package\s+(\S+)", re.M)
_CMD_PLACEHOLDER = re.compile(r"(?<!\\)\$\{(inputs|outputs|params)\.")


def builtin_configs_dir() -> Path:
    """mlspec's built-in config groups (``configs/`` in the repo, ``mlspec/configs`` in a wheel)."""
    return Path(str(resources.files("mlspec.configs")))


@dataclass(frozen=True)
class Override:
    text: str
    key: tuple  # key path the override sets ((), for a group choice such as backend=ray)
    group: str = ""


@dataclass
class SourceMap:
    """Where each key path of the composed spec came from, in order of precedence (last wins)."""

    project_dir: Path
    sources: list = field(default_factory=list)  # [(YamlSource, package_prefix_tuple)] lowest first
    overrides: list = field(default_factory=list)  # [Override]

    def locate(self, path: Sequence, *, prefer_key: bool = False) -> tuple[str, int, int]:
        """(file, line, column) for a key path; file is 'override ...' when an override set it."""
        path = tuple(path)
        for ov in reversed(self.overrides):
            if ov.key and path[: len(ov.key)] == ov.key:
                return (f"override '{ov.text}'", 0, 0)
        best, best_depth, above = None, -1, None
        for src, prefix in reversed(self.sources):
            if path[: len(prefix)] != prefix:
                # the path is above this file's package: the group node itself, if no file holds the path
                if prefix[: len(path)] == path and above is None:
                    above = (src, ())
                continue
            depth = src.depth_of(path[len(prefix):])
            if depth > best_depth:
                best, best_depth = (src, path[len(prefix):]), depth
        best = best or above
        if best is None:
            return ("", 0, 0)
        src, rel = best
        pos = src.locate(rel, prefer_key=prefer_key) or (1, 1)
        return (src.file, pos[0], pos[1])

    def diag(self, path: Sequence, code: str, message: str, *, prefer_key: bool = False) -> Diagnostic:
        file, line, col = self.locate(path, prefer_key=prefer_key)
        return Diagnostic(file, line, col, printable(format_path(path)), code, printable(message))


def printable(text: str) -> str:
    """``text`` with control characters escaped (a key may hold a newline): one diagnostic, one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def format_path(path: Sequence) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


@dataclass
class Composed:
    data: dict
    sources: SourceMap
    sensitive: "Sensitivity"  # which paths and values are secret (mlspec.sensitive)
    choices: dict  # config group -> chosen option
    spec_file: Path
    diagnostics: tuple = ()  # interpolations that failed (their keys hold None); reported with the rest


def _rel(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return str(path)


def _parse_override(text: str) -> Override:
    body = text.lstrip("+~")
    key = body.split("=", 1)[0].strip()
    if "=" not in body or not key:
        return Override(text, ())
    if "@" in key:
        key = key.split("@", 1)[0]
    return Override(text, tuple(key.split(".")))


def _defaults_groups(defaults: Any) -> tuple[set, bool | None]:
    """Groups named in a primary defaults list, and whether _self_ comes last (None = not listed)."""
    groups: set = set()
    self_last = None
    if isinstance(defaults, list):
        for i, item in enumerate(defaults):
            if item == "_self_":
                self_last = i == len(defaults) - 1
            elif isinstance(item, dict):
                for k in item:
                    groups.add(str(k).lstrip("+~").split("@")[0].replace("override ", "").strip())
            elif isinstance(item, str) and "/" in item:
                groups.add(item.split("/")[0])
    return groups, self_last


def _find_group_file(group: str, option: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        p = d / group / f"{option}.yaml"
        if p.is_file():
            return p
    return None


def available_options(group: str, dirs: Sequence[Path]) -> list[str]:
    out = set()
    for d in dirs:
        g = d / group
        if g.is_dir():
            out.update(p.stem for p in g.glob("*.yaml"))
    return sorted(out)


def compose(project_dir: str | os.PathLike = ".", spec_file: str | None = None,
            overrides: Sequence[str] = ()) -> Composed:
    """Compose the spec. Raises :class:`SpecError` with located diagnostics on any problem."""
    from mlspec import sensitive

    # a secret given on the command line is sensitive before anything (even an error about it) is shown
    sensitive.REDACTOR.add(o.split("=", 1)[1] for o in overrides
                           if "=" in o and sensitive.is_sensitive_key(o.split("=", 1)[0].lstrip("+~")))
    project_dir = Path(project_dir).resolve()
    spec_path = (project_dir / (spec_file or DEFAULT_SPEC)).resolve()  # like git -C: paths are relative to DIR
    if not spec_path.is_file():
        raise MlspecError(f"no spec at {_rel(spec_path, Path.cwd())}",
                          hint="create one with `mlspec init`, or point at it with -f FILE / -C DIR")
    shown = _rel(spec_path, project_dir)
    primary = load_yaml(spec_path, shown)  # syntax, tabs, empty file, root type, duplicate keys

    builtin = builtin_configs_dir()
    config_dir = spec_path.parent
    search_dirs = [config_dir, builtin]
    groups, _self_last = _defaults_groups(primary.data.get("defaults"))
    ovs = [_parse_override(o) for o in overrides]

    # Hydra refuses `backend=ray` when the primary's defaults list has no backend entry: a backend is
    # always chosen (local by default), so add or redirect the choice ourselves.
    hydra_overrides = [f"hydra.searchpath=[file://{builtin}]"]
    diags: list[Diagnostic] = []
    group_names = {p.name for d in search_dirs if d.is_dir() for p in d.iterdir() if p.is_dir()}
    seen_backend = False
    final_ovs = []
    for ov, text in zip(ovs, overrides):
        if "=" not in text and not text.startswith("~"):
            diags.append(Diagnostic(f"override '{text}'", 0, 0, "", "bad-override",
                                    "an override has the form key=value, +key=value or group=option"))
            continue
        key0 = ".".join(ov.key)
        if key0 in group_names and not text.startswith(("+", "~")):
            option = text.split("=", 1)[1]
            if key0 == "backend":
                seen_backend = True
            if _find_group_file(key0, option, search_dirs) is None:
                opts = available_options(key0, search_dirs)
                diags.append(Diagnostic(f"override '{text}'", 0, 0, key0, "unknown-option",
                                        f"no option '{option}' in config group '{key0}' (available: "
                                        f"{', '.join(opts)}){did_you_mean(option, opts)}"))
                continue
            if key0 not in groups:
                text = "+" + text
            final_ovs.append(Override(text, (), key0))
        else:
            final_ovs.append(ov)
        hydra_overrides.append(text)
    diags += _defaults_diags(primary, search_dirs, {ov.key[0] for ov in ovs if len(ov.key) == 1})
    if "backend" not in groups and not seen_backend and "backend" not in primary.data:
        hydra_overrides.append("+backend=local")
    if diags:
        raise SpecError(diags)

    if os.environ.get("MLSPEC_COMPOSE") != "hydra":
        fast = _compose_fast(primary, project_dir, spec_path, search_dirs, list(overrides), group_names)
        if fast is not None:
            return fast

    cfg, choices = _hydra_compose(config_dir, spec_path.stem, hydra_overrides, shown, primary=primary,
                                  project_dir=project_dir, group_names=group_names)

    smap = SourceMap(project_dir=project_dir, overrides=[o for o in final_ovs if o.key])
    group_sources = []
    for group, option in sorted(choices.items()):
        if group.startswith("hydra") or option is None:
            continue
        gfile = _find_group_file(group, str(option), search_dirs)
        if gfile is None:
            continue
        gsrc = load_yaml(gfile, _shown_group_file(gfile, project_dir), require_mapping=False)
        m = _PACKAGE_RE.search(gsrc.text)
        pkg = m.group(1) if m else group.replace("/", ".")
        prefix = () if pkg == "_global_" else tuple(pkg.replace("_group_", group).split("."))
        group_sources.append((gsrc, prefix))
    primary_entry = (primary, ())
    smap.sources = ([primary_entry] + group_sources) if _self_last is False else (group_sources + [primary_entry])

    data, interp, interp_diags = _to_data(cfg, smap)
    return Composed(data=data, sources=smap, sensitive=_sensitivity(data, interp), choices=dict(choices),
                    diagnostics=tuple(interp_diags),
                    spec_file=spec_path)


def _shown_group_file(path: Path, project_dir: Path) -> str:
    """How a config group file is named in messages: project-relative, or <mlspec>/configs/... if built in."""
    if path.is_relative_to(project_dir):
        return _rel(path, project_dir)
    return f"<mlspec>/configs/{path.parent.name}/{path.name}"


def _defaults_diags(primary: YamlSource, search_dirs: Sequence[Path], overridden: set) -> list[Diagnostic]:
    """A defaults entry `- group: option` naming no file, located at the entry (Hydra's message has no line)."""
    defaults = primary.data.get("defaults")
    diags = []
    for i, item in enumerate(defaults if isinstance(defaults, list) else []):
        if not (isinstance(item, dict) and len(item) == 1):
            continue
        (group, option), = item.items()
        if isinstance(group, str) and not group.strip():
            line, col = primary.locate(("defaults", i)) or (0, 0)
            diags.append(Diagnostic(primary.file, line, col, f"defaults[{i}]", "compose-error",
                                    "a defaults entry `- GROUP: OPTION` needs a group name"))
            continue
        if not (isinstance(group, str) and isinstance(option, str) and group not in overridden
                and re.fullmatch(r"[A-Za-z0-9_-]+", group) and re.fullmatch(r"[A-Za-z0-9_.-]+", option)):
            continue  # optional/override/package forms, list options, interpolations: left to Hydra
        if _find_group_file(group, option, search_dirs) is None:
            opts = available_options(group, search_dirs)
            avail = f"available: {', '.join(opts)}" if opts else f"there is no '{group}/' directory"
            line, col = primary.locate(("defaults", i, group)) or (0, 0)
            diags.append(Diagnostic(primary.file, line, col, f"defaults[{i}].{group}", "unknown-option",
                                    f"no option '{option}' in config group '{group}' ({avail})"
                                    f"{did_you_mean(option, opts)}"))
    return diags


def _group_yaml_error(exc: Exception, project_dir: Path) -> SpecError:
    """A config group file Hydra could not parse: the same located diagnostic as for the root spec."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    path = Path(getattr(mark, "name", "") or "")
    if not path.is_file():
        return SpecError([Diagnostic("<config group>", 0, 0, "", "yaml-syntax",
                                     f"invalid YAML in a config group file: {exc}")])
    shown = _shown_group_file(path.resolve(), project_dir)
    try:
        load_yaml(path, shown, require_mapping=False)  # syntax, tabs, duplicate keys
    except SpecError as err:
        return err
    return SpecError([_syntax_diag(shown, path.read_text(encoding="utf-8", errors="replace"), exc)])


_SIMPLE_OVERRIDE = re.compile(r"(\+{0,2})([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)=(.*)")
_SIMPLE_VALUE = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?|true|false|True|False|null|"
                           r"[A-Za-z_/.][A-Za-z0-9_./:@-]*")
_YAML_BOOLISH = {"yes", "no", "on", "off", "y", "n", "Yes", "No", "On", "Off", "YES", "NO", "ON", "OFF", "Y", "N"}


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _nest(data: Any, prefix: tuple) -> Any:
    for part in reversed(prefix):
        data = {part: data}
    return data


def _compose_fast(primary: YamlSource, project_dir: Path, spec_path: Path, search_dirs: list, overrides: list,
                  group_names: set) -> Composed | None:
    """Compose without Hydra when the spec uses only what we can reproduce exactly.

    Hydra + OmegaConf cost ~1.5 ms per step of a large spec (10 s for 2,000 steps): most of `validate`
    and `plan`. A spec without interpolation, with a defaults list of plain `group: option` entries and
    simple overrides (`key=value`, `+key=value`, `group=option`) composes here with the same result
    (tests/test_compose_parity.py checks it against Hydra); anything else, and every error, goes
    through Hydra. Returns None when Hydra is needed.
    """
    if "${" in primary.text:
        return None
    defaults = primary.data.get("defaults")
    entries: list[tuple] = []
    if defaults is not None:
        if not isinstance(defaults, list):
            return None
        for item in defaults:
            if item == "_self_":
                entries.append(("_self_", None))
            elif isinstance(item, dict) and len(item) == 1:
                (k, v), = item.items()
                if not (isinstance(k, str) and isinstance(v, str)) or not re.fullmatch(r"[A-Za-z_][\w-]*", k):
                    return None
                entries.append((k, v))
            else:
                return None
    if ("_self_", None) not in entries:
        entries.append(("_self_", None))
    in_defaults = {g for g, _ in entries if g != "_self_"}
    key_overrides = []
    backend_chosen = "backend" in in_defaults or "backend" in primary.data
    for text in overrides:
        m = _SIMPLE_OVERRIDE.fullmatch(text)
        if not m:
            return None
        plus, key, val = m.groups()
        if key in group_names and not plus:
            if key in in_defaults:
                entries = [(g, val if g == key else o) for g, o in entries]
            else:
                entries.append((key, val))  # Hydra appends `+group=option` after the primary's entries
            backend_chosen = backend_chosen or key == "backend"
            continue
        if not _SIMPLE_VALUE.fullmatch(val) or val in _YAML_BOOLISH:
            return None
        key_overrides.append((plus, tuple(key.split(".")), parse_scalar(val), text))
    if not backend_chosen:
        entries.append(("backend", "local"))
    data: dict = {}
    sources: list = []
    choices: dict = {}
    for group, option in entries:
        if group == "_self_":
            data = _deep_merge(data, {k: v for k, v in primary.data.items() if k != "defaults"})
            sources.append((primary, ()))
            continue
        gfile = _find_group_file(group, option, search_dirs)
        if gfile is None:
            return None
        shown = _rel(gfile, project_dir) if gfile.is_relative_to(project_dir) else f"<mlspec>/configs/{group}/{option}.yaml"
        gsrc = load_yaml(gfile, shown, require_mapping=False)
        if "${" in gsrc.text or (isinstance(gsrc.data, dict) and "defaults" in gsrc.data):
            return None
        if gsrc.data is not None and not isinstance(gsrc.data, dict):
            return None
        m = _PACKAGE_RE.search(gsrc.text)
        pkg = m.group(1) if m else group
        prefix = () if pkg == "_global_" else tuple(pkg.replace("_group_", group).split("."))
        data = _deep_merge(data, _nest(gsrc.data or {}, prefix))
        sources.append((gsrc, prefix))
        choices[group] = option
    for plus, path, value, _text in key_overrides:
        node = data
        for part in path[:-1]:
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None and plus:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                return None  # Hydra explains the error
            node = nxt
        exists = path[-1] in node
        if (plus == "" and not exists) or (plus == "+" and exists):
            return None
        node[path[-1]] = value
    smap = SourceMap(project_dir=project_dir, sources=sources,
                     overrides=[Override(t, p) for _, p, _, t in key_overrides])
    return Composed(data=data, sources=smap, sensitive=_sensitivity(data, ()), choices=choices, spec_file=spec_path)


def _hydra_compose(config_dir: Path, name: str, overrides: list[str], shown: str, *,
                   primary: YamlSource | None = None, project_dir: Path | None = None,
                   group_names: set | frozenset = frozenset()):
    import warnings

    import yaml
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with warnings.catch_warnings():
            # Hydra warns, naming its own source file, when the defaults list has no `_self_`; the order is
            # documented (the spec file comes last), so the warning is noise with an absolute path
            warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`")
            with initialize_config_dir(config_dir=str(config_dir), version_base=None, job_name="mlspec"):
                cfg = hydra_compose(config_name=name, overrides=overrides, return_hydra_config=True)
    except yaml.YAMLError as exc:  # a config group file is not valid YAML (the root spec was checked before)
        raise _group_yaml_error(exc, project_dir or config_dir) from None
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise SpecError([_hydra_diag(exc, overrides, shown, primary, group_names)]) from None
    except (TypeError, KeyError, IndexError, AttributeError, AssertionError) as exc:
        # Hydra itself fails on some inputs: `~steps.a.outputs.0` (TypeError deleting a list item), a
        # defaults entry with an empty group name (AssertionError)
        import traceback

        frames = {f.name for f in traceback.extract_tb(exc.__traceback__)}
        user = [o for o in overrides[1:] if o != "+backend=local"]
        if "_apply_overrides_to_config" not in frames or not user:
            raise SpecError([Diagnostic(shown, 0, 0, "defaults", "compose-error",
                                        f"Hydra cannot compose the spec ({type(exc).__name__}: {exc or 'assertion'}); "
                                        "check the `defaults:` list")]) from None
        where = f"override '{user[0]}'" if len(user) == 1 else f"override '{' '.join(user)}'"
        raise SpecError([Diagnostic(where, 0, 0, "", "bad-override",
                                    f"cannot apply this override ({type(exc).__name__}: {exc}); a list item "
                                    "cannot be deleted on its own: set the whole list instead, e.g. key=[a,b]")]) from None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    return cfg, choices


def _unparsable_interpolation(node: Any, path: tuple = ()) -> tuple | None:
    """(key path, value) of the first string whose ${...} OmegaConf cannot parse, or None."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        if isinstance(node, str) and "${" in node:
            from omegaconf.errors import GrammarParseError
            from omegaconf.grammar_parser import parse

            try:
                parse(node)
            except GrammarParseError:
                return path, node
        return None
    for k, v in items:
        found = _unparsable_interpolation(v, path + (k,))
        if found is not None:
            return found
    return None


def _key_suggestion(key: str, data: Any) -> str:
    """The key path of the root spec that an override key misspells ('a.b.c'), or ""."""
    parts, node = key.split("."), data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return ""
        if part not in node:
            best = difflib.get_close_matches(part, sorted(map(str, node)), n=1, cutoff=0.6)
            return ".".join(parts[:i] + best[:1] + parts[i + 1:]) if best else ""
        node = node[part]
    return ""


def _hydra_diag(exc: Exception, overrides: list[str], shown: str, primary: YamlSource | None = None,
                group_names: set | frozenset = frozenset()) -> Diagnostic:
    cause = exc.__cause__ or exc.__context__
    if not str(exc).strip() and cause is not None and str(cause).strip():
        # ConfigCompositionException() raised from an OmegaConf error: a bad interpolation or value
        from omegaconf.errors import GrammarParseError

        text = str(cause).strip()
        first = text.splitlines()[0]
        full_key = re.search(r"full_key:[ \t]*(\S+)", text)
        line = col = 0
        value = None
        if full_key and primary is not None:
            kpath = tuple(full_key.group(1).split("."))
            if primary.depth_of(kpath) == len(kpath):
                line, col = primary.locate(kpath) or (0, 0)
                value = primary.data
                for part in kpath:
                    value = value.get(part) if isinstance(value, dict) else None
        kpath_text = printable(full_key.group(1)) if full_key else ""
        if isinstance(cause, GrammarParseError) and not line and primary is not None:
            bad = _unparsable_interpolation(primary.data)  # e.g. under an empty key: no full_key to go by
            if bad is not None:
                kpath, value = bad
                line, col = primary.locate(kpath) or (0, 0)
                kpath_text = printable(format_path(kpath))
        first = printable(first)
        if isinstance(cause, GrammarParseError):
            what = f"the interpolation in {printable(repr(value))}" if isinstance(value, str) else "an interpolation"
            return Diagnostic(shown, line, col, kpath_text, "bad-interpolation",
                              f"cannot parse {what}: {first} (write ${{key.path}} or ${{oc.env:VAR}}; "
                              "escape a literal ${ as \\${)")
        m = re.match(r"Value '(\w+)' is not a supported primitive type", first)
        if m:
            return Diagnostic(shown, line, col, kpath_text, "unsupported-value",
                              f"a YAML value of type '{m.group(1)}' is not supported here; use a string, number, "
                              "boolean, list or mapping (quote it to keep it as text)")
        return Diagnostic(shown, line, col, kpath_text, "compose-error", f"cannot compose the spec: {first}")
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for text in overrides[1:]:
        body = text.lstrip("+~")
        key = body.split("=", 1)[0]
        if text in str(exc) or f"'{key}'" in str(exc) or f"'{body}'" in str(exc) or key in msg:
            where = f"override '{text}'"
            if "Could not override" in msg:
                known = primary.data if primary is not None and key.split(".")[0] not in group_names else {}
                close = _key_suggestion(key, known)
                return Diagnostic(where, 0, 0, key, "bad-override",
                                  f"there is no key '{key}' to override; "
                                  + (f"did you mean '{close}'? To add '{key}' as a new key" if close
                                     else "to add it as a new key") + f", write '+{body}'")
            if "Could not append" in msg:
                return Diagnostic(where, 0, 0, key, "bad-override",
                                  f"'{key}' is already set, so '+' cannot add it; write '{body}' to change it, "
                                  f"or '++{body}' to set it whether or not it exists")
            hint = ""
            if "not in struct" in msg or "Key '" in msg:
                hint = f"; to add a new key write '+{body}'"
            return Diagnostic(where, 0, 0, key, "bad-override", f"{msg.rstrip('.')}{hint}")
    return Diagnostic(shown, 0, 0, "", "compose-error", msg)


def _to_data(cfg, smap: SourceMap) -> tuple[dict, list, list]:
    """Resolve interpolations into plain data; every failed interpolation is a located diagnostic.

    A failed interpolation's key is set to None so that the rest of the spec can still be checked and
    the user sees every problem at once; the diagnostics come back with the data.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = OmegaConf.to_container(cfg, resolve=False)
    interp: list[tuple] = []
    _find_interpolations(raw, (), interp)
    if not interp:
        return raw, [], []
    all_interp = list(interp)
    # ${inputs.X}, ${outputs.X}, ${params.X} in a step's cmd are filled in at run time, not by OmegaConf
    kept = []
    for path, text in interp:
        if len(path) == 3 and path[0] == "steps" and path[2] == "cmd":
            escaped = _CMD_PLACEHOLDER.sub(r"\\${\1.", text)
            cfg[path[0]][path[1]][path[2]] = escaped
            if "${" not in _CMD_PLACEHOLDER.sub("", text):
                continue
        kept.append((path, text))
    interp = kept
    diags = []
    for path, text in interp:
        node_parent = cfg
        try:
            for part in path[:-1]:
                node_parent = node_parent[part]
            node_parent[path[-1]]  # resolves this interpolation
        except OmegaConfBaseException as exc:
            diags.append(_interp_diag(exc, path, text, smap))
    failed = {format_path(p) for p, _t in interp} & {d.path for d in diags}
    for path, _text in interp:
        if format_path(path) in failed:
            parent = cfg
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = None
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        if diags:
            raise SpecError(diags) from None
        raise
    return data, all_interp, diags


def _sensitivity(data: dict, interp) -> "Sensitivity":
    """Find the spec's sensitive values and register them with the process's redactor at once, so no
    error, warning or record written from here on can show them."""
    from mlspec import sensitive

    found = sensitive.find(data, interp)
    sensitive.register(found)
    return found


def _interp_diag(exc, path, text, smap: SourceMap) -> Diagnostic:
    msg = str(exc).strip().splitlines()[0]
    m = re.search(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)", text)
    if "Environment variable" in msg and m:
        message = (f"environment variable '{m.group(1)}' is not set (from {text}); set it, or give a "
                   f"default: ${{oc.env:{m.group(1)},DEFAULT}}")
        code = "unset-env"
    elif "not found" in msg.lower() or "missing" in msg.lower():
        ref = re.search(r"\$\{([^}]*)\}", text)
        message = f"interpolation {text} points at a missing key" + (f" '{ref.group(1)}'" if ref else "")
        code = "bad-interpolation"
    else:
        message = f"cannot resolve {text}: {msg}"
        code = "bad-interpolation"
    return smap.diag(path, code, message)


def _find_interpolations(node: Any, path: tuple, out: list) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _find_interpolations(v, path + (k,), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _find_interpolations(v, path + (i,), out)
    elif isinstance(node, str) and "${" in node:
        out.append((path, node))
