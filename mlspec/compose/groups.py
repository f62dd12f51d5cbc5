"""Config groups and defaults lists: finding a group's options and checking the defaults list."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from mlspec.errors import Diagnostic, SpecError, did_you_mean
from mlspec.yamlsrc import YamlSource, _syntax_diag, load_yaml
from mlspec.compose.sources import Override, shown_group_file


DEFAULT_SPEC = "mlspec.yaml"


PACKAGE_RE = re.compile(r"^#\s*@package\s+(\S+)", re.M)


def parse_override(text: str) -> Override:
    body = text.lstrip("+~")
    key = body.split("=", 1)[0].strip()
    if "=" not in body or not key:
        return Override(text, ())
    if "@" in key:
        key = key.split("@", 1)[0]
    return Override(text, tuple(key.split(".")))


def defaults_groups(defaults: Any) -> tuple[set, bool | None]:
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


def find_group_file(group: str, option: str, dirs: Sequence[Path]) -> Path | None:
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


def defaults_diags(primary: YamlSource, search_dirs: Sequence[Path], overridden: set) -> list[Diagnostic]:
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
        if find_group_file(group, option, search_dirs) is None:
            opts = available_options(group, search_dirs)
            avail = f"available: {', '.join(opts)}" if opts else f"there is no '{group}/' directory"
            line, col = primary.locate(("defaults", i, group)) or (0, 0)
            diags.append(Diagnostic(primary.file, line, col, f"defaults[{i}].{group}", "unknown-option",
                                    f"no option '{option}' in config group '{group}' ({avail})"
                                    f"{did_you_mean(option, opts)}"))
    return diags


def group_yaml_error(exc: Exception, project_dir: Path) -> SpecError:
    """A config group file Hydra could not parse: the same located diagnostic as for the root spec."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    path = Path(getattr(mark, "name", "") or "")
    if not path.is_file():
        return SpecError([Diagnostic("<config group>", 0, 0, "", "yaml-syntax",
                                     f"invalid YAML in a config group file: {exc}")])
    shown = shown_group_file(path.resolve(), project_dir)
    try:
        load_yaml(path, shown, require_mapping=False)  # syntax, tabs, duplicate keys
    except SpecError as err:
        return err
    return SpecError([_syntax_diag(shown, path.read_text(encoding="utf-8", errors="replace"), exc)])
