"""Diagnostics and the one user-facing error type.

Errors are values: a :class:`Diagnostic` names where (file, line, column, key path), what (code and
message) and how to fix it (hint). Commands collect them and show every problem at once; the CLI maps a
:class:`MlspecError` to exit code 1 and anything else to exit code 3.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem found in the user's input, sortable by place."""

    file: str = ""
    line: int = 0
    column: int = 0
    path: str = ""
    code: str = "error"
    message: str = ""
    severity: str = field(default="error", compare=False)

    def location(self) -> str:
        if not self.file:
            return ""
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file

    def render(self) -> str:
        loc = self.location()
        head = f"{loc}: " if loc else ""
        where = f"{self.path}: " if self.path else ""
        return f"{head}{self.severity}: {where}{self.message} [{self.code}]"

    def to_dict(self) -> dict:
        return {
            "file": self.file or None,
            "line": self.line or None,
            "column": self.column or None,
            "path": self.path,
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
        }


class MlspecError(Exception):
    """A failure the user can fix: printed as one line or a short block, exit code 1."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str = "", diagnostics: Sequence[Diagnostic] = ()):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.diagnostics = tuple(diagnostics)

    def render(self) -> str:
        lines = [d.render() for d in self.diagnostics]
        if self.message:
            lines.append(f"Error: {self.message}")
        if self.hint:
            lines.append(f"  {self.hint}")
        return "\n".join(lines)


class SpecError(MlspecError):
    """The spec is invalid: carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        diags = sorted(set(diagnostics))
        n = len(diags)
        files = sorted({d.file for d in diags if d.file})
        where = f" in {', '.join(files)}" if files else ""
        super().__init__(f"{n} error{'s' if n != 1 else ''}{where}; the spec is invalid.", diagnostics=diags)


class StateError(MlspecError):
    """The recorded state cannot be used as it is (corrupt, locked, stale)."""


class LockedError(StateError):
    """Another process holds the state lock."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or "" when none is close."""
    best = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{best[0]}'?" if best else ""
