"""A large spec is validated in a forked child while `mlspec plan` builds its graph (mlspec.load.Verdict).

What a user must not be able to tell, apart from the time: an invalid spec gives exactly the errors
`mlspec validate` gives (never what building its graph ran into), nothing is written for it, and a
valid one is remembered as validated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO, run_cli

from mlspec.load import PARALLEL_MIN_STEPS

N = PARALLEL_MIN_STEPS + 50


def write_chain(root, n: int = N, extra: dict | None = None, src: dict | None = None) -> None:
    """n steps, each reading the one before (or ``src[i]``); ``extra`` maps a step index to text appended."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "seed.txt").write_text("1\n")
    (root / "bench").mkdir(exist_ok=True)
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "steps.py").write_text("def step(src, i=0):\n    return {'out': src}\n")
    lines = ["project: big", "datasets:", "  seed:", "    uri: data/seed.txt", "    format: text", "steps:"]
    for i in range(n):
        ref = (src or {}).get(i) or ("dataset.seed" if i == 0 else f"step.s{i - 1:05d}.out")
        lines += [f"  s{i:05d}:", "    run: bench.steps:step", "    inputs:", f"      src: {ref}",
                  "    outputs: [out]", "    params:", f"      i: {i}"]
        if extra and i in extra:
            lines += ["    " + x for x in textwrap.dedent(extra[i]).strip().splitlines()]
    (root / "mlspec.yaml").write_text("\n".join(lines) + "\n")


def test_an_invalid_large_spec_reports_what_validate_reports_and_writes_nothing(tmp_path):
    # a bad value far down the file, and an input naming a step that does not exist: building the graph of
    # this spec fails on its own (a KeyError deep in expand), the plan must still say what validate says
    write_chain(tmp_path, extra={1500: "retries: lots"}, src={1800: "step.nope.out"})
    validate = run_cli("validate", cwd=tmp_path)
    plan = run_cli("plan", cwd=tmp_path)
    assert validate.returncode == 1 and plan.returncode == 1, (validate.stderr, plan.stderr)
    assert "internal error" not in plan.stderr and "Traceback" not in plan.stderr
    assert "steps.s01500.retries" in validate.stderr and "nope" in validate.stderr
    assert plan.stderr == validate.stderr
    apply = run_cli("apply", "--auto-approve", cwd=tmp_path)
    assert apply.returncode == 1 and apply.stderr == validate.stderr  # before any lock, run record or step
    assert not (tmp_path / ".mlspec" / "state").exists()
    assert not (tmp_path / ".mlspec" / "cache" / "validated.json").exists()


def test_a_valid_large_spec_plans_and_is_remembered_as_validated(tmp_path):
    write_chain(tmp_path)
    first = run_cli("plan", "--format", "json", "--no-preflight", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    plan = json.loads(first.stdout)
    assert len(plan["resource_changes"]) == N + 1  # the steps and the dataset
    remembered = json.loads((tmp_path / ".mlspec" / "cache" / "validated.json").read_text())
    assert len(remembered) == 1
    again = run_cli("plan", "--format", "json", "--no-preflight", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["resource_changes"] == plan["resource_changes"]
    # an edit that breaks it is caught on the next plan (the remembered verdict was for the old text)
    text = (tmp_path / "mlspec.yaml").read_text().replace("      i: 7\n", "      i: 7\n    timeout: soon\n", 1)
    (tmp_path / "mlspec.yaml").write_text(text)
    broken = run_cli("plan", cwd=tmp_path)
    assert broken.returncode == 1 and "steps.s00007.timeout" in broken.stderr


CHILD = r'''
import sys
from mlspec.compose import compose
from mlspec.errors import SpecError
from mlspec.load import Verdict, validate_composed
c = compose(sys.argv[1], None, [])
v = Verdict.start(c)
assert v.pid > 0 and v.diags is None, "a spec this large is checked in a child process"
try:
    v.wait()
except SpecError as exc:
    assert list(exc.diagnostics) == validate_composed(c), "the child's answer is the in-process one"
    print(len(exc.diagnostics), "problems")
else:
    print("valid")
'''


def test_the_child_answers_what_validation_in_process_answers(tmp_path):
    write_chain(tmp_path, extra={3: "retries: lots", 2000: "cache: maybe"})
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 problems"


def test_a_number_as_a_key_is_an_error_not_a_crash(tmp_path, cli):
    """`env: {1: x}`: the validation key (sorted JSON) cannot be computed; plan used to crash on it."""
    for n in (3, N):  # checked in-process, and in the child
        write_chain(tmp_path, n=n, extra={1: "env: {1: one}"})
        for command in ("validate", "plan"):
            out = cli(command, cwd=tmp_path)
            assert out.returncode == 1 and "internal error" not in out.stderr, out.stderr
            assert "steps.s00001.env.1: key 1 is a number, not text" in out.stderr
