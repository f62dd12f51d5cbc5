"""Output: colour only on a terminal (and never with NO_COLOR), plain when piped. Passed in, never global."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_CODES = {"green": "32", "red": "31", "yellow": "33", "cyan": "36", "bold": "1", "dim": "2", "magenta": "35"}


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, color: bool | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        if color is None:
            color = hasattr(self.out, "isatty") and self.out.isatty() and not os.environ.get("NO_COLOR") \
                and os.environ.get("TERM") != "dumb"
        self.color = color
        self.interactive = hasattr(self.out, "isatty") and self.out.isatty()

    def style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def print(self, text: str = "", *, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()
