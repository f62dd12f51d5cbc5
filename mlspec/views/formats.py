"""Output formats, declared once: which `--format` values each command offers, and the shared renderers.

Every command that shows data builds plain data (the JSON view *is* that data) and, for people, a text or
Markdown rendering of the same data. ``--format json`` always prints exactly what the text shows, as data.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

# command -> the formats it offers; the first is the default
FORMATS: dict[str, tuple[str, ...]] = {
    "validate": ("text", "json"),
    "graph": ("text", "json", "mermaid", "dot"),
    "plan": ("text", "json", "markdown"),
    "show": ("text", "json", "markdown"),
    "apply": ("text", "json"),
    "state list": ("text", "json", "markdown"),
    "state show": ("text", "json"),
    "state history": ("text", "json", "markdown"),
    "models list": ("text", "json", "markdown"),
    "refresh": ("text", "json", "markdown"),
    "deployments list": ("text", "json", "markdown"),
    "models show": ("text", "json", "markdown"),
    "models history": ("text", "json", "markdown"),
    "runs list": ("text", "json", "markdown"),
    "runs show": ("text", "json"),
    "lineage": ("text", "json"),
    "metrics show": ("text", "json", "markdown"),
    "metrics diff": ("text", "json", "markdown"),
    "plots show": ("text", "json", "markdown"),
    "plots diff": ("text", "json", "markdown"),
    "artifacts verify": ("text", "json"),
    "backends": ("text", "json", "markdown"),
    "checkout": ("text", "json"),
    "triggers check": ("text", "json", "markdown"),
    "data check": ("text", "json"),
    "monitor": ("text", "json"),
}


def add_format_option(parser, command: str, help: str = "") -> None:
    """The `--format` option of a command, from FORMATS."""
    choices = FORMATS[command]
    parser.add_argument("--format", choices=choices, default=choices[0],
                        help=help or f"output format: {', '.join(choices)} (default {choices[0]})")


def to_json(data) -> str:
    """Data as the JSON views print it: sorted keys, indented, non-finite numbers as "nan"/"inf"/"-inf"."""
    from mlspec.state import json_safe

    return json.dumps(json_safe(data), indent=2, sort_keys=True, default=str)


def text_table(headers: Sequence[str], rows: Sequence[Sequence], *, align_right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; numbers right-aligned where asked."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [r[i].rjust(widths[i]) if i in align_right else r[i].ljust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], *, align_right: Sequence[int] = ()) -> str:
    def cell(v) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i in align_right else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def emit(console, fmt: str, data, *, text: Callable[[object], str] | None = None,
         markdown: Callable[[object], str] | None = None) -> None:
    """Print ``data`` in ``fmt``: JSON is the data itself; text and Markdown render it."""
    if fmt == "json":
        console.print(to_json(data))
    elif fmt == "markdown" and markdown is not None:
        console.print(markdown(data))
    elif text is not None:
        out = text(data)
        if out:
            console.print(out)
    else:
        console.print(to_json(data))
