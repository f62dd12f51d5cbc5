"""The docs are executable, and complete where completeness can be checked.

1. Every ```console block of README.md and docs/*.md is a script: its `$ mlspec ...` lines run in order,
   per file, in a fresh copy of examples/churn (the working directory), as `python -m mlspec ...` with
   NO_COLOR=1. Each must exit 0, or the code its trailing `# exit N` comment names. `$ cd DIR` changes
   the directory (inside the copy); `> FILE` at the end of a command sends its stdout to FILE. Any other
   `$` line fails the test: show such commands in a ```bash block instead. A block preceded by the line
   `<!-- docs-test: skip -->` is not run (for examples that need files the churn example does not have).
2. docs/cli.md names every command, subcommand and long option of mlspec/cli.py.
3. docs/errors.md names every diagnostic code the spec checks can emit (found in the source, so a new code
   fails this test until it is documented); docs/plan.md names every plan reason code.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlspec.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
EXAMPLE = REPO / "examples" / "churn"
SKIP_MARK = "<!-- docs-test: skip"
EXIT_RE = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


# --- 1. console blocks -----------------------------------------------------------------------------
def console_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command text without the `$ `) of every `$` line in the file's console blocks."""
    out: list[tuple[int, str]] = []
    fence, lang, skip, prev = None, "", False, ""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE_RE.match(line)
        if fence is None:
            if m:
                fence, lang = m.group(2), m.group(3)
                skip = prev.strip().startswith(SKIP_MARK)
            elif line.strip():
                prev = line
            continue
        if m and m.group(2).startswith(fence) and not m.group(3):
            fence, prev = None, ""
            continue
        if lang == "console" and not skip and line.startswith("$ "):
            out.append((n, line[2:].strip()))
    return out


def _docs_with_commands() -> list[Path]:
    return [p for p in DOCS if console_commands(p)]


def _copy_example(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".mlspec", "__pycache__", "*.pyc", "plan.json"))
    return dest


@pytest.mark.parametrize("doc", _docs_with_commands(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_console_blocks_run(doc: Path, tmp_path: Path):
    root = _copy_example(tmp_path / "project")
    cwd = root
    env = dict(os.environ, NO_COLOR="1")
    env.pop("RAY_ADDRESS", None)
    where = doc.relative_to(REPO).as_posix()
    try:
        _run_console_commands(doc, root, cwd, env, where)
    finally:
        _stop_services(root)


def _stop_services(root: Path) -> None:
    """The churn example deploys `churn-api`: kill every service supervisor the commands left running (by the
    pids their run directories record), so that the next doc's apply finds the port free."""
    import json
    import signal

    for status in root.rglob(".mlspec/services/*/*/status.json"):
        try:
            pid = json.loads(status.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError, TypeError):
            pass


def _run_console_commands(doc: Path, root: Path, cwd: Path, env: dict, where: str) -> None:
    for lineno, text in console_commands(doc):
        m = EXIT_RE.search(text)
        expected = int(m.group(1)) if m else 0
        argv = shlex.split(EXIT_RE.sub("", text), comments=True)
        stdout_to = None
        if len(argv) >= 3 and argv[-2] == ">":
            stdout_to, argv = cwd / argv[-1], argv[:-2]
        bad = [a for a in argv if a in ("|", "||", "&&", ";", ">", ">>", "<", "&")]
        assert not bad, f"{where}:{lineno}: the docs test runs one mlspec command per line, not {bad}: {text}"
        if argv[0] == "cd" and len(argv) == 2:
            cwd = (cwd / argv[1]).resolve()
            assert cwd.is_dir() and cwd.is_relative_to(root), f"{where}:{lineno}: cannot cd to {argv[1]}"
            continue
        assert argv[0] == "mlspec", (f"{where}:{lineno}: a ```console block may only run `mlspec` (and `cd`); "
                                     f"show other commands in a ```bash block: {text}")
        proc = subprocess.run([sys.executable, "-m", "mlspec", *argv[1:]], cwd=cwd, env=env, text=True,
                              capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
        if stdout_to is not None:
            stdout_to.write_text(proc.stdout, encoding="utf-8")
        assert proc.returncode == expected, (
            f"{where}:{lineno}: `{text}` exited {proc.returncode}, the doc says {expected}\n"
            f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}")


def test_console_parser_reads_blocks(tmp_path: Path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```console\n$ mlspec plan   # exit 2\nPlan: ...\n```\n\n<!-- docs-test: skip -->\n"
                   "```console\n$ mlspec plan env=prod\n```\n```bash\n$ mlspec nope\n```\n````console\n```\n"
                   "$ mlspec validate\n````\n", encoding="utf-8")
    assert console_commands(doc) == [(3, "mlspec plan   # exit 2"), (16, "mlspec validate")]


def marked_block(path: Path, mark: str) -> str:
    """The fenced block that follows the line `<!-- docs-test: MARK -->`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"<!-- docs-test: {mark} -->") + 1
    assert FENCE_RE.match(lines[start]), f"{path.name}: no fenced block after the {mark} mark"
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == lines[start].strip()[:3])
    return "\n".join(lines[start + 1:end]) + "\n"


@pytest.mark.skipif(shutil.which("nice") is None, reason="the example backend runs steps under `nice`")
def test_backend_example_passes_conformance(tmp_path: Path):
    """The third-party backend of docs/backends.md, and its test module, pass mlspec.testing."""
    doc = REPO / "docs" / "backends.md"
    (tmp_path / "mlspec_nice.py").write_text(marked_block(doc, "backend-example"), encoding="utf-8")
    (tmp_path / "test_nice.py").write_text(marked_block(doc, "backend-conformance"), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_nice.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# --- 2. the CLI reference is complete ----------------------------------------------------------------
def _walk(parser: argparse.ArgumentParser, prefix: str):
    """(command path, parser) for the parser and every subcommand, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}")


def test_cli_reference_names_every_command_and_flag():
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [f"mlspec {c}" for c in COMMANDS if f"mlspec {c}" not in text]
    for path, parser in _walk(build_parser(), "mlspec"):
        if path.count(" ") >= 2 and path not in text:  # subcommands: `mlspec state list`
            missing.append(path)
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and opt not in text:
                    missing.append(f"{path} {opt}")
    assert not missing, f"docs/cli.md does not mention: {', '.join(missing)}"


# --- 3. every diagnostic and reason code is documented -------------------------------------------------
def _code_arg(call: ast.Call) -> ast.AST | None:
    """The argument of a diagnostic call that carries the code."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name not in ("Diagnostic", "diag", "err"):
        return None
    for kw in call.keywords:
        if kw.arg == "code":
            return kw.value
    if name == "Diagnostic" and len(call.args) >= 5:  # Diagnostic(file, line, column, path, code, message)
        return call.args[4]
    if name in ("diag", "err") and len(call.args) >= 2:  # smap.diag(path, code, message), self.err(...)
        return call.args[1]
    return None


def diagnostic_codes() -> set[str]:
    """Every literal code passed to Diagnostic(...), SourceMap.diag(...) or _Checker.err(...) in mlspec/."""
    codes: set[str] = set()
    for path in sorted((REPO / "mlspec").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            assigned: dict[str, set] = {}
            for node in ast.walk(func):  # `code = "unset-env"` ... `smap.diag(path, code, message)`
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant):
                            assigned.setdefault(t.id, set()).add(node.value.value)
            for node in ast.walk(func):
                arg = _code_arg(node) if isinstance(node, ast.Call) else None
                if arg is None:
                    continue
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        codes.add(sub.value)
                    elif isinstance(sub, ast.Name):
                        codes.update(v for v in assigned.get(sub.id, ()) if isinstance(v, str))
    return {c for c in codes if re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", c)}


def test_errors_doc_names_every_diagnostic_code():
    codes = diagnostic_codes()
    # the extractor must find the codes it is meant to find (a broken regex would pass vacuously)
    assert {"dangling-reference", "unknown-key", "yaml-tab", "unset-env", "import-error", "cycle"} <= codes
    text = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = sorted(c for c in codes if f"`{c}`" not in text)
    assert not missing, f"docs/errors.md does not document these diagnostic codes: {', '.join(missing)}"


def test_plan_doc_names_every_reason_code():
    from mlspec.core.types import ReasonCode

    text = (REPO / "docs" / "plan.md").read_text(encoding="utf-8")
    missing = sorted(c.value for c in ReasonCode if f"`{c.value}`" not in text)
    assert not missing, f"docs/plan.md does not document these reason codes: {', '.join(missing)}"