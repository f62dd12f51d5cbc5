"""Where each key of a composed spec came from: a file, line and column, or an override."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

from mlspec.errors import Diagnostic

from mlspec.sensitive import Sensitivity


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


def relpath(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return str(path)


def shown_group_file(path: Path, project_dir: Path) -> str:
    """How a config group file is named in messages: project-relative, or <mlspec>/configs/... if built in."""
    if path.is_relative_to(project_dir):
        return relpath(path, project_dir)
    return f"<mlspec>/configs/{path.parent.name}/{path.name}"


@dataclass
class Composed:
    data: dict
    sources: SourceMap
    sensitive: "Sensitivity"  # which paths and values are secret (mlspec.sensitive)
    choices: dict  # config group -> chosen option
    spec_file: Path
    diagnostics: tuple = ()  # interpolations that failed (their keys hold None); reported with the rest


def sensitivity_of(data: dict, interp) -> "Sensitivity":
    """Find the spec's sensitive values and register them with the process's redactor at once, so no
    error, warning or record written from here on can show them."""
    from mlspec import sensitive

    found = sensitive.find(data, interp)
    sensitive.register(found)
    return found
