"""Golden tests for `mlspec validate`: the real CLI, run as a subprocess, on the cases in tests/cases/validate/.

Each case is a directory holding a small project (``mlspec.yaml``, maybe group files such as
``env/prod.yaml``) and:

* ``args`` (optional): one line of extra arguments after ``mlspec validate``, split with :func:`shlex.split`;
* ``env`` (optional): ``KEY=VALUE`` lines, environment variables set for the run (named ``environ`` when
  ``env/`` is a config group directory of the case);
* ``expected.txt``: stdout then stderr of ``mlspec --no-color validate ARGS``;
* ``expected_exit``: its exit code;
* ``expected.json``: stdout of ``mlspec --no-color validate --format json ARGS`` (same exit code).

Regenerate with ``MLSPEC_UPDATE_GOLDEN=1 pytest tests/test_validate_golden.py``, then read every changed
message: it must say where (file:line:col or the override), which key, what was expected, and suggest a fix.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CASES_DIR = HERE / "cases" / "validate"
EXAMPLES_DIR = REPO / "examples"
UPDATE = os.environ.get("MLSPEC_UPDATE_GOLDEN") == "1"
# Variables a case may rely on being unset (e.g. `${oc.env:NOT_SET_VAR}`).
_UNSET = ("NOT_SET_VAR", "MLSPEC_TEST_ENV", "RAY_ADDRESS")


def _cases() -> list[Path]:
    return sorted(p for p in CASES_DIR.iterdir() if p.is_dir()) if CASES_DIR.is_dir() else []


def _case_ids(cases: list[Path]) -> list[str]:
    return [c.name for c in cases]


def _env(case: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    # `env` may be a config group directory (env/prod.yaml): then the variables file is `environ`
    env_file = next((f for f in (case / "env", case / "environ") if f.is_file()), None)
    if env_file is not None:
        for line in env_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value
    return env


def _args(case: Path) -> list[str]:
    f = case / "args"
    return shlex.split(f.read_text(encoding="utf-8").strip()) if f.exists() else []


def _run(case: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlspec", "-C", str(case), "--no-color", "validate", *extra, *_args(case)]
    return subprocess.run(cmd, cwd=case, env=_env(case), capture_output=True, text=True, timeout=120)


def _assert_machine_independent(text: str, case: Path) -> None:
    for needle in (str(case), str(REPO), "/tmp/", "/work/", str(Path.home())):
        assert needle not in text, f"absolute path {needle!r} in the output of {case.name}:\n{text}"


CASES = _cases()


def test_enough_cases():
    invalid = [c for c in CASES if not c.name.startswith("valid-")]
    valid = [c for c in CASES if c.name.startswith("valid-")]
    assert len(invalid) >= 34, f"only {len(invalid)} invalid cases"
    assert len(valid) >= 3, f"only {len(valid)} valid cases"


@pytest.mark.parametrize("case", CASES, ids=_case_ids(CASES))
def test_validate_text(case: Path):
    proc = _run(case)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    if UPDATE:
        (case / "expected.txt").write_text(out, encoding="utf-8")
        (case / "expected_exit").write_text(f"{proc.returncode}\n", encoding="utf-8")
    _assert_machine_independent(out, case)
    expected_exit = int((case / "expected_exit").read_text().strip())
    assert out == (case / "expected.txt").read_text(encoding="utf-8")
    assert proc.returncode == expected_exit
    if case.name.startswith("valid-"):
        assert proc.returncode == 0 and out.startswith("Success!"), out
    else:
        assert proc.returncode == 1, out
        # every line is a located diagnostic or the closing summary
        for line in out.splitlines():
            assert line.startswith(("Error: ", "override '")) or ": error: " in line, line


@pytest.mark.parametrize("case", CASES, ids=_case_ids(CASES))
def test_validate_json(case: Path):
    proc = _run(case, "--format", "json")
    assert proc.stderr == "", proc.stderr
    got = json.loads(proc.stdout)
    if UPDATE:
        (case / "expected.json").write_text(json.dumps(got, indent=2) + "\n", encoding="utf-8")
    _assert_machine_independent(proc.stdout, case)
    assert got == json.loads((case / "expected.json").read_text(encoding="utf-8"))
    expected_exit = int((case / "expected_exit").read_text().strip())
    assert proc.returncode == expected_exit
    assert (proc.returncode == 0) == (got == [])
    for d in got:
        assert set(d) == {"file", "line", "column", "path", "code", "message", "severity"}
        assert d["file"], d
        assert d["severity"] == "error"


@pytest.mark.parametrize("case", CASES, ids=_case_ids(CASES))
def test_json_matches_text(case: Path):
    """The text output shows exactly the diagnostics of the JSON output, in the same order."""
    diags = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    lines = (case / "expected.txt").read_text(encoding="utf-8").splitlines()
    rendered = []
    for d in diags:
        loc = d["file"] + (f":{d['line']}:{d['column']}" if d["line"] else "")
        where = f"{d['path']}: " if d["path"] else ""
        rendered.append(f"{loc}: error: {where}{d['message']} [{d['code']}]")
    assert lines[:len(rendered)] == rendered
    if diags:
        assert lines[len(rendered):] and lines[len(rendered)].startswith("Error: "), lines


def _examples() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*/mlspec.yaml"))


def test_examples_exist():
    assert _examples(), f"no examples/*/mlspec.yaml under {EXAMPLES_DIR}"


@pytest.mark.parametrize("spec", _examples(), ids=lambda p: p.parent.name)
def test_example_validates(spec: Path):
    proc = subprocess.run([sys.executable, "-m", "mlspec", "-C", str(spec.parent), "--no-color", "validate"],
                          cwd=spec.parent, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success!"), proc.stdout
