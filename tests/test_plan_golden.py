"""Golden plan cases: tests/cases/plan/<case>/ (see the README there). Text, JSON and Markdown views."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

CASES = Path(__file__).parent / "cases" / "plan"
UPDATE = os.environ.get("MLSPEC_UPDATE_GOLDEN") == "1"
SECRET_MARK = "s3cr3t-value"


def _overlay(src: Path, dest: Path) -> None:
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.name != ".keep":
            t = dest / p.relative_to(src)
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, t)


def _env(path: Path) -> dict:
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def normalise(text: str, root: Path, secret_case: bool = False) -> str:
    text = text.replace(str(root), "<project>")
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", text)
    text = re.sub(r"r\d{8}-\d{6}-[0-9a-f]{6}", "<run-id>", text)
    text = re.sub(r"pid \d+", "pid <pid>", text)
    text = re.sub(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "since <time>", text)
    text = re.sub(r"\S+@\S+ \(", "<user>@<host> (", text)
    # secret fingerprints are keyed by the state's random key: their values differ per state
    text = re.sub(r"keyed:[0-9a-f]{32}", "keyed:<keyed>", text)
    if secret_case:
        text = re.sub(r'"fingerprint": "xxh128:[0-9a-f]{32}"', '"fingerprint": "<fingerprint>"', text)
    return text


def _mutate(root: Path, actions: list[str]) -> None:
    for action in actions:
        if action == "corrupt-state":
            p = root / ".mlspec/state/default.state.json"
            p.write_text(p.read_text().replace('"serial": 2', '"serial": 7'))
        elif action == "lock":
            from mlspec.lock import StateLock
            from mlspec.storage import Location

            StateLock(Location(str(root / ".mlspec/state")), "default").acquire("apply", "r20260101-000000-abcdef")
        elif action.startswith("touch "):
            p = root / action.split(" ", 1)[1]
            os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
        elif action.startswith("rm "):
            (root / action.split(" ", 1)[1]).unlink()
        elif action.startswith("mlspec "):  # mlspec ARGS: a command run between the applies and the plan
            r = run_cli("-C", str(root), *shlex.split(action)[1:])
            assert r.returncode == 0, r.stderr
        elif action.startswith("write "):  # write PATH TEXT: a hand edit
            _, rel, text = action.split(" ", 2)
            (root / rel).write_text(text + "\n")
        else:
            raise ValueError(f"unknown mutate action {action!r}")


def _check(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        path.write_text(actual)
        if not UPDATE:
            pytest.fail(f"{path} did not exist; written: review it and rerun")
        return
    assert actual == path.read_text(), f"golden mismatch: {path}"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir() and p.name != "base"))
def test_plan_case(case, tmp_path):
    cdir = CASES / case
    root = tmp_path / "p"
    _overlay(CASES / "base", root)
    for stage in sorted(cdir.glob("apply*")):
        if stage.is_dir():
            _overlay(stage, root)
            run_cli("-C", str(root), "apply", "--auto-approve", env=_env(cdir / f"{stage.name}.env"))
    if (cdir / "plan").is_dir():
        _overlay(cdir / "plan", root)
    if (cdir / "mutate").is_file():
        _mutate(root, (cdir / "mutate").read_text().split("\n")[:-1] or [(cdir / "mutate").read_text().strip()])
    args = shlex.split((cdir / "args").read_text()) if (cdir / "args").is_file() else []
    env = _env(cdir / "plan.env")
    outputs, stdouts = {}, {}
    codes = set()
    for fmt, name in (("text", "expected.txt"), ("json", "expected.json"), ("markdown", "expected.md")):
        r = run_cli("-C", str(root), "plan", "--detailed-exitcode", "--format", fmt, *args, env=env)
        sc = case == "secret_rotated"
        out = normalise(r.stdout, root, sc) + (f"--- stderr ---\n{normalise(r.stderr, root, sc)}" if r.stderr else "")
        assert "Traceback" not in out
        outputs[name] = out
        stdouts[name] = r.stdout
        codes.add(r.returncode)
    assert len(codes) == 1, f"exit codes differ between formats: {codes}"
    code = codes.pop()
    for name, out in outputs.items():
        _check(cdir / name, out)
    _check(cdir / "expected_exit", f"{code}\n")
    # the plan JSON is valid against the published plan schema
    if code in (0, 2):
        from jsonschema import Draft202012Validator

        schema = json.loads((Path(__file__).parents[1] / "schemas" / "plan.schema.json").read_text())
        errors = list(Draft202012Validator(schema).iter_errors(json.loads(stdouts["expected.json"])))
        assert not errors, errors[0].message
    # a saved plan renders the same through `mlspec show`
    if code in (0, 2):
        r = run_cli("-C", str(root), "plan", *args, "-o", str(tmp_path / "plan.json"), env=env)
        shown = run_cli("-C", str(root), "show", str(tmp_path / "plan.json"))
        assert normalise(shown.stdout, root) == normalise(run_cli("-C", str(root), "plan", *args, env=env).stdout, root)
    # secrets never reach any output or file
    everything = "".join(outputs.values())
    for p in root.rglob("*"):
        if p.is_file():
            everything += p.read_bytes().decode("utf-8", "replace")
    for p in tmp_path.glob("*.json"):
        everything += p.read_text()
    if case == "secret_rotated":
        assert SECRET_MARK not in everything
