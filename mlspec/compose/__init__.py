"""Composition: the project's root spec + config groups + overrides -> plain data with a source map.

This package is the only place that imports Hydra or OmegaConf. Hydra's compose API composes the primary
config (`mlspec.yaml`), the project's own config groups (`env/prod.yaml`) and mlspec's built-in groups
(`configs/backend/*.yaml`); it never changes the working directory, creates output folders or touches
logging when used this way. What leaves this package is plain data plus a :class:`SourceMap` that answers
"which file, line and column (or which override) set this key?".

    sources.py       the SourceMap, overrides, where a key came from
    groups.py        config groups and defaults lists: finding options, checking the defaults list
    fast.py          the Hydra-free path, taken only when it gives exactly Hydra's result
    hydra.py         the Hydra path: compose, resolve interpolations into data, find sensitive values
    hydra_errors.py  Hydra's and OmegaConf's exceptions translated into located diagnostics
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from mlspec.compose.fast import compose_fast
from mlspec.compose.groups import (DEFAULT_SPEC, PACKAGE_RE, available_options, defaults_diags, defaults_groups,
                                   find_group_file, parse_override)
from mlspec.compose.hydra import hydra_compose, to_data
from mlspec.compose.parsed import ParseCache
from mlspec.compose.sources import (Composed, Override, SourceMap, builtin_configs_dir, format_path, printable,
                                    relpath, sensitivity_of, shown_group_file)
from mlspec.errors import Diagnostic, MlspecError, SpecError, did_you_mean
from mlspec.yamlsrc import check_alias_limit

__all__ = ["Composed", "Override", "SourceMap", "available_options", "builtin_configs_dir", "compose",
           "format_path", "printable", "DEFAULT_SPEC"]


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
        raise MlspecError(f"no spec at {relpath(spec_path, Path.cwd())}",
                          hint="create one with `mlspec init`, or point at it with -f FILE / -C DIR")
    shown = relpath(spec_path, project_dir)
    cache = ParseCache.for_project(project_dir)
    primary = cache.load(spec_path, shown)  # syntax, tabs, empty file, root type, duplicate keys

    builtin = builtin_configs_dir()
    config_dir = spec_path.parent
    search_dirs = [config_dir, builtin]
    groups, _self_last = defaults_groups(primary.data.get("defaults"))
    ovs = [parse_override(o) for o in overrides]

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
            if find_group_file(key0, option, search_dirs) is None:
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
    diags += defaults_diags(primary, search_dirs, {ov.key[0] for ov in ovs if len(ov.key) == 1})
    if "backend" not in groups and not seen_backend and "backend" not in primary.data:
        hydra_overrides.append("+backend=local")
    if diags:
        raise SpecError(diags)

    if os.environ.get("MLSPEC_COMPOSE") != "hydra":
        fast = compose_fast(primary, project_dir, spec_path, search_dirs, list(overrides), group_names,
                            load=cache.load)
        if fast is not None:
            cache.save(fast.sensitive)
            return fast

    # Hydra parses group files itself and would expand a "billion laughs" before we see it: bound them first
    for d in search_dirs:
        for g in sorted(p for p in d.iterdir() if p.is_dir() and p.name in group_names):
            for f in sorted(g.rglob("*.yaml")):
                check_alias_limit(f, shown_group_file(f, project_dir))
    cfg, choices = hydra_compose(config_dir, spec_path.stem, hydra_overrides, shown, primary=primary,
                                  project_dir=project_dir, group_names=group_names)

    smap = SourceMap(project_dir=project_dir, overrides=[o for o in final_ovs if o.key])
    group_sources = []
    for group, option in sorted(choices.items()):
        if group.startswith("hydra") or option is None:
            continue
        gfile = find_group_file(group, str(option), search_dirs)
        if gfile is None:
            continue
        gsrc = cache.load(gfile, shown_group_file(gfile, project_dir), require_mapping=False)
        m = PACKAGE_RE.search(gsrc.text)
        pkg = m.group(1) if m else group.replace("/", ".")
        prefix = () if pkg == "_global_" else tuple(pkg.replace("_group_", group).split("."))
        group_sources.append((gsrc, prefix))
    primary_entry = (primary, ())
    smap.sources = ([primary_entry] + group_sources) if _self_last is False else (group_sources + [primary_entry])

    data, interp, interp_diags = to_data(cfg, smap)
    composed = Composed(data=data, sources=smap, sensitive=sensitivity_of(data, interp), choices=dict(choices),
                        diagnostics=tuple(interp_diags),
                        spec_file=spec_path)
    cache.save(composed.sensitive)
    return composed
