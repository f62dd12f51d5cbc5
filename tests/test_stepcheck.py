"""The step check (mlspec/stepcheck.py): what used to fail only at apply is an error at plan.

A typo in the function name, a module importing a package that is not installed, a signature that does
not take the step's inputs and params: each is reproduced here through the CLI, as it failed at apply
before, and must now stop `plan` (and `apply` before it runs anything) with one line naming the step, the
file and what to do.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from mlspec.testing import process_alive, wait_until


def _errors(r) -> list[str]:
    """The problem lines of a failed preflight."""
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "Error: preflight failed: the plan cannot run as it stands", r.stderr
    return [ln.strip()[2:] for ln in lines[1:]]


def _spec(project) -> str:
    return (project.root / "mlspec.yaml").read_text()


def test_function_typo_is_an_error_at_plan_not_at_apply(project):
    assert project.run("validate", "steps.train.run=demo.steps:trian").returncode == 0  # validate imports nothing
    r = project.run("plan", "steps.train.run=demo.steps:trian")
    assert _errors(r) == ["step.train: src/demo/steps.py has no function 'trian' (did you mean 'train'?): "
                          "fix its `run:`"]
    r = project.apply("steps.train.run=demo.steps:trian")
    assert _errors(r)[0].startswith("step.train: src/demo/steps.py has no function 'trian'")
    assert not (project.root / ".mlspec/state/runs").exists()  # nothing ran, no run record


def test_missing_third_party_import_names_file_line_and_package(project, tmp_path):
    steps = project.root / "src/demo/steps.py"
    steps.write_text(steps.read_text().replace("import pandas as pd\n", "import pandas as pd\nimport fancylib_mlspec_test\n"))
    r = project.run("plan")
    assert _errors(r) == ["step.evaluate, step.prepare, step.side and 1 more step: src/demo/steps.py:4 imports "
                          "'fancylib_mlspec_test', which is not installed: install the package that provides it, "
                          "or fix the import"]
    # installing it is seen by the next plan (failures are never cached)
    site = tmp_path / "site"
    site.mkdir()
    (site / "fancylib_mlspec_test.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    r = project.run("plan", env=env)
    assert r.returncode == 0, r.stderr


def test_signature_that_does_not_take_the_inputs_and_params(project):
    steps = project.root / "src/demo/steps.py"
    src = steps.read_text()
    src = src.replace("def side(raw: pd.DataFrame):", "def side(raw: pd.DataFrame, /, limit, *, mode):")
    steps.write_text(src)
    r = project.run("plan", "+steps.prepare.params.shift=1", "+steps.prepare.inputs.extra=dataset.nums")
    assert _errors(r) == [
        "step.prepare: prepare() (src/demo/steps.py:6) does not accept input 'extra' and param 'shift': add "
        "keyword parameters (or **kwargs), or remove them from its `inputs:` or its `params:`",
        "step.side: side() (src/demo/steps.py:19) requires 'limit' and 'mode', which the step does not pass: "
        "declare them under the step's `params:` or `inputs:`, or give them a default",
        "step.side: side() (src/demo/steps.py:19) takes 'raw' positionally only (before '/'), but the input is "
        "passed by name: move it after the '/'",
    ]


def test_what_the_runner_accepts_passes(project):
    """Matrix keys arrive as keyword arguments; **kwargs takes anything; defaults need not be passed."""
    steps = project.root / "src/demo/steps.py"
    steps.write_text(steps.read_text().replace("def evaluate(model: dict):", "def evaluate(model: dict, **extra):"))
    r = project.run("plan", "+steps.evaluate.params.anything=1", "+steps.train.matrix.seed=[1,2]",
                    "steps.train.run=demo.steps:boom")
    assert _errors(r) == ["step.train: boom() (src/demo/steps.py:23) does not accept matrix key 'seed': add a "
                          "keyword parameter (or **kwargs), or remove it from its `matrix:`"]
    r = project.run("plan", "+steps.evaluate.params.anything=1", "steps.train.run=demo.steps:boom")
    assert r.returncode == 0, r.stderr  # boom(clean, C=1.0) takes the input and the matrix key C


def test_a_project_module_typo_is_an_error_with_a_suggestion(project):
    r = project.run("plan", "steps.side.run=demo.stepz:side")
    assert _errors(r) == ["step.side: there is no module 'demo.stepz' in the project (did you mean 'demo.steps'?): "
                          "fix its `run:`"]


def test_import_time_exceptions_and_syntax_errors_are_located(project):
    project.write("src/demo/broken.py", "def f(raw):\n    return {}\n\nx = 1 +\n")
    project.write("src/demo/raises.py", "import os\n\nVALUE = int(os.environ['MLSPEC_TEST_UNSET_VAR'])\n\n"
                                        "def f(raw):\n    return {}\n")
    r = project.run("plan", "steps.side.run=demo.broken:f", "steps.prepare.run=demo.raises:f",
                    env={"MLSPEC_TEST_UNSET_VAR": ""})
    errors = _errors(r)
    assert "step.side: src/demo/broken.py:4: invalid syntax (SyntaxError): fix the code" in errors
    assert ("step.prepare: importing demo.raises raised ValueError: invalid literal for int() with base 10: '' "
            "(src/demo/raises.py:3): fix the module (its top-level code runs when the step starts)") in errors


def test_every_problem_of_a_plan_at_once_and_no_run_for_unchanged_steps(project):
    assert project.apply().returncode == 0
    project.write("src/demo/extra.py", "import fancylib_mlspec_test\n\n\ndef evaluate(model):\n    return {}\n")
    r = project.run("plan", "steps.side.run=demo.steps:sidee", "+steps.prepare.params.k=1",
                    "steps.evaluate.run=demo.extra:evaluate")
    errors = _errors(r)  # and nothing about train, which would run too, but can be called as it is
    assert len(errors) == 3, errors
    assert errors[0].startswith("step.evaluate: src/demo/extra.py:1 imports 'fancylib_mlspec_test'")
    assert errors[1].startswith("step.prepare: prepare() (src/demo/steps.py:6) does not accept param 'k'")
    assert errors[2].startswith("step.side: src/demo/steps.py has no function 'sidee'")
    r = project.run("plan", "--no-preflight", "steps.side.run=demo.steps:sidee")
    assert r.returncode == 0, r.stderr  # the escape hatch: no import at all


def _counting_project(project):
    """Each import of demo.steps appends the importing process's pid to imports.log."""
    steps = project.root / "src/demo/steps.py"
    steps.write_text("import os as _os\nwith open(_os.path.join(_os.path.dirname(__file__), '..', '..', "
                     "'imports.log'), 'a') as _fh:\n    _fh.write(f'{_os.getpid()}\\n')\n" + steps.read_text())
    return project.root / "imports.log"


def test_one_process_for_all_steps_and_none_when_the_code_did_not_change(project):
    log = _counting_project(project)
    project.write("src/demo/other.py", "import os\nfrom demo import steps\n\n"
                                       "def side(raw):\n    return {'summary': {'pid': os.getpid()}}\n")
    r = project.run("plan", "steps.side.run=demo.other:side")
    assert r.returncode == 0, r.stderr
    assert len(log.read_text().split()) == 1  # one process imported it, for four steps and two modules
    cache = project.root / ".mlspec/cache/stepcheck.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert len(json.loads(cache.read_text())["passed"]) == 4  # a step's matrix instances are checked once
    r = project.run("plan", "steps.side.run=demo.other:side")
    assert r.returncode == 0 and len(log.read_text().split()) == 1  # cached: nothing imported
    # a new param is a new question
    assert project.run("plan", "+steps.prepare.params.scale2=1").returncode == 1
    assert len(log.read_text().split()) == 2
    # changed code is checked again (code that runs on import: a comment alone changes no code fact)
    helpers = project.root / "src/demo/helpers.py"
    helpers.write_text(helpers.read_text() + "\nprint(end='')\n")
    assert project.run("plan").returncode == 0
    assert len(log.read_text().split()) == 3


def test_apply_after_plan_checks_nothing_again(project):
    log = _counting_project(project)
    assert project.run("plan").returncode == 0
    assert project.apply().returncode == 0
    pids = log.read_text().split()
    # the plan's check imported it; the apply imported it only in its workers, not in a check process
    assert len(pids) >= 2 and pids.count(pids[0]) == 1


def test_an_apply_checks_in_the_worker_that_then_runs_the_steps(project):
    """No check process in an apply: the local backend's first worker imports the steps' module once, for the
    check and for every step (one parallel slot: one worker), and the verdict is cached as at plan."""
    log = _counting_project(project)
    r = project.apply("--parallelism", "1")
    assert r.returncode == 0, r.stderr
    assert len(log.read_text().split()) == 1, log.read_text()  # imported once: check and steps in one process
    assert len(json.loads((project.root / ".mlspec/cache/stepcheck.json").read_text())["passed"]) == 4
    assert project.last_run()["status"] == "succeeded"
    # an edited function: checked again before anything runs, in the new apply's worker
    steps = project.root / "src/demo/steps.py"
    steps.write_text(steps.read_text().replace("def side(raw: pd.DataFrame):", "def side(raw: pd.DataFrame, n):"))
    r = project.apply("--parallelism", "1")
    assert _errors(r) == ["step.side: side() (src/demo/steps.py:22) requires 'n', which the step does not pass: "
                          "declare it under the step's `params:` or `inputs:`, or give it a default"]
    assert len(project.runs()) == 1  # nothing ran


def test_at_apply_a_module_that_ends_the_worker_is_named_and_the_rest_is_still_checked(project):
    project.write("src/demo/quits.py", "import os\nprint('leaving')\nos._exit(7)\n")
    r = project.apply("steps.side.run=demo.quits:side", "steps.train.run=demo.steps:trian")
    assert _errors(r) == ["step.side: the check process ended (exit code 7) while importing demo.quits: leaving",
                          "step.train: src/demo/steps.py has no function 'trian' (did you mean 'train'?): fix its "
                          "`run:`"]
    assert not (project.root / ".mlspec/state/runs").exists()


def test_at_apply_a_hanging_import_is_stopped_and_the_apply_goes_on(project):
    """The check's worker is killed with what its import started (a warning, as at plan); a new worker runs
    the step (the module hangs only on its first import here)."""
    project.write("src/demo/hang.py", """
        import os, subprocess, time
        here = os.path.dirname(__file__)
        if not os.path.exists(os.path.join(here, "pids")):
            kids = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)]
            with open(os.path.join(here, "pids"), "w") as fh:
                fh.write(" ".join(str(p) for p in [os.getpid()] + [k.pid for k in kids]))
            time.sleep(300)

        def side(raw):
            return {"summary": {"pid": os.getpid()}}
    """)
    r = project.apply("steps.side.run=demo.hang:side", env={"MLSPEC_STEP_CHECK_TIMEOUT": "3"}, timeout=90)
    assert r.returncode == 0, r.stderr
    assert "Warning: step.side: importing demo.hang did not finish within 3s (set MLSPEC_STEP_CHECK_TIMEOUT to " \
           "wait longer)" in r.stderr.strip().splitlines()
    pids = [int(p) for p in (project.root / "src/demo/pids").read_text().split()]
    assert wait_until(lambda: not any(process_alive(p) for p in pids), 10), \
        f"left running: {[p for p in pids if process_alive(p)]}"
    assert project.last_run()["status"] == "succeeded"
    assert "step.side" in project.state()["resources"]


BACKEND = '''
from mlspec.backends.api import Backend


class FarBackend(Backend):
    """Runs nowhere: only what plan needs (settings, preflight)."""

    type = "far"
'''


def _far_backend(tmp_path) -> dict:
    site = tmp_path / "site"
    dist = site / "mlspec_far-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlspec-far\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mlspec.backends]\nfar = mlspec_far:FarBackend\n")
    (site / "mlspec_far.py").write_text(BACKEND)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_on_another_backend_a_package_missing_here_is_a_warning(project, tmp_path):
    env = _far_backend(tmp_path)
    project.write("src/demo/remote.py", "import gpu_only_lib_mlspec_test\n\n\ndef side(raw):\n    return {}\n")
    spec = _spec(project).replace("run: demo.steps:side", "run: demo.remote:side\n    backend: far")
    project.write("mlspec.yaml", spec)
    r = project.run("plan", env=env)
    assert r.returncode == 0, r.stderr
    assert ("Warning: step.side: src/demo/remote.py:1 imports 'gpu_only_lib_mlspec_test', which is not installed "
            "(on this machine; the step runs on the far backend, whose environment may have it): install the package "
            "that provides it, or fix the import") in r.stderr.splitlines()
    assert "+ step.side" in r.stdout
    # a missing function or a signature mismatch is an error wherever the step runs
    project.write("src/demo/remote.py", "def side(raw, n):\n    return {}\n")
    r = project.run("plan", env=env)
    assert _errors(r) == ["step.side: side() (src/demo/remote.py:1) requires 'n', which the step does not pass: "
                          "declare it under the step's `params:` or `inputs:`, or give it a default"]
    # the local backend would fail on it: an error there
    project.write("src/demo/remote.py", "import gpu_only_lib_mlspec_test\n\n\ndef side(raw):\n    return {}\n")
    r = project.run("plan", "steps.side.backend=local", env=env)
    assert _errors(r)[0].startswith("step.side: src/demo/remote.py:1 imports 'gpu_only_lib_mlspec_test', which "
                                    "is not installed: ")


def test_a_hanging_import_is_stopped_with_everything_it_started(project):
    project.write("src/demo/hang.py", """
        import os, subprocess, time
        here = os.path.dirname(__file__)
        kids = [subprocess.Popen(["sleep", "300"]), subprocess.Popen(["sleep", "300"], start_new_session=True)]
        with open(os.path.join(here, "pids"), "w") as fh:
            fh.write(" ".join(str(p) for p in [os.getpid()] + [k.pid for k in kids]))
        time.sleep(300)

        def side(raw):
            return {}
    """)
    r = project.run("plan", "steps.side.run=demo.hang:side", env={"MLSPEC_STEP_CHECK_TIMEOUT": "3"}, timeout=60)
    assert r.returncode == 0, r.stderr  # a timeout says nothing certain about the step: a warning
    lines = r.stderr.strip().splitlines()
    assert "Warning: step.side: importing demo.hang did not finish within 3s (set MLSPEC_STEP_CHECK_TIMEOUT to " \
           "wait longer)" in lines
    pids = [int(p) for p in (project.root / "src/demo/pids").read_text().split()]
    assert wait_until(lambda: not any(process_alive(p) for p in pids), 10), \
        f"left running: {[p for p in pids if process_alive(p)]}"


def test_a_module_that_ends_the_process_is_an_error_and_the_rest_is_still_checked(project):
    project.write("src/demo/quits.py", "import os\nprint('leaving')\nos._exit(7)\n")
    r = project.run("plan", "steps.side.run=demo.quits:side", "steps.train.run=demo.steps:trian")
    assert _errors(r) == ["step.side: the check process ended (exit code 7) while importing demo.quits: leaving",
                          "step.train: src/demo/steps.py has no function 'trian' (did you mean 'train'?): fix its "
                          "`run:`"]


def test_a_bad_timeout_setting_is_one_line(project):
    r = project.run("plan", env={"MLSPEC_STEP_CHECK_TIMEOUT": "soon"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: MLSPEC_STEP_CHECK_TIMEOUT='soon' is not a number of seconds")


def test_an_interpreter_without_mlspec_is_a_warning_not_a_module_problem(project, tmp_path):
    """The local backend's `python:` runs the check; one that cannot (mlspec missing there) says so once."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'No module named mlspec' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = project.run("plan", f"+backend.python={fake}")
    lines = r.stderr.strip().splitlines()
    assert lines[0] == (f"Warning: step.evaluate, step.prepare, step.side and 1 more step: could not be checked: "
                        f"{fake} -m mlspec.stepcheck exited with code 1: No module named mlspec"), r.stderr
    missing = project.run("plan", f"+backend.python={tmp_path}/nowhere/python")
    assert _errors(missing)[0] == (f"step.evaluate, step.prepare, step.side and 1 more step: the local backend's "
                                   f"python '{tmp_path}/nowhere/python' does not exist: fix the backend's `python:` "
                                   "setting")


def test_installing_or_removing_a_package_is_seen_after_a_check_passed(project, tmp_path):
    """A passing verdict is keyed by the interpreter's site-packages too: `pip uninstall` is seen at plan."""
    import subprocess
    import sys
    import venv

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "fancylib_mlspec_test.py").write_text("")
    import mlspec  # the check runs `python -m mlspec.stepcheck` with the step's interpreter: give it this mlspec

    (Path(site) / "mlspec_under_test.pth").write_text(str(Path(mlspec.__file__).resolve().parents[1]) + "\n")
    project.write("src/demo/extra.py", "import os\nimport fancylib_mlspec_test\n"
                                       "open(os.path.join(os.path.dirname(__file__), 'imported'), 'a').write('x')\n\n"
                                       "def side(raw):\n    return {}\n")
    args = ("plan", "steps.side.run=demo.extra:side", f"+backend.python={python}", "--target", "step.side")
    assert project.run(*args).returncode == 0
    assert project.run(*args).returncode == 0
    assert (project.root / "src/demo/imported").read_text() == "x"  # the second plan trusted the first
    (Path(site) / "fancylib_mlspec_test.py").unlink()
    assert _errors(project.run(*args)) == [f"step.side: src/demo/extra.py:2 imports 'fancylib_mlspec_test', which is "
                                           f"not installed for {python}: install the package that provides it, or "
                                           "fix the import"]
    assert sys.executable != str(python)
