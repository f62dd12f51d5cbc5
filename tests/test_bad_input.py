"""Bad input limits, through the CLI: YAML alias bombs, command-line usage errors, storage failures.

Each test runs `mlspec` in a subprocess and checks the exit code and the one-line error; none asserts on
time (the 50,000-step speed is benchmarks/bench_large.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import run_cli


# --- YAML alias expansion ------------------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    prev = "a"
    for name in "bcdefghijklmnop"[:levels - 1]:
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_with_a_located_error(project):
    bomb = billion_laughs()
    assert len(bomb) < 600
    project.write("mlspec.yaml", "project: lol\nsteps: {}\n" + bomb)
    for cmd in (["validate"], ["plan"], ["validate", "--format", "json"]):
        r = project.run(*cmd, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "[alias-limit]" in out or '"alias-limit"' in out, out
        assert "1,000,000" in out and "internal error" not in out and "Traceback" not in out
    r = project.run("validate")
    # located at the first alias of the anchor that repeats the most (*h on the `i:` line)
    assert r.stderr.splitlines()[0].startswith("mlspec.yaml:11:"), r.stderr
    assert "*h" in r.stderr.splitlines()[0]


def test_alias_bomb_in_a_config_group_file_is_refused(project):
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", "defaults:\n  - env: bomb\n  - _self_\n" + spec)
    project.write("env/bomb.yaml", "extra:\n" + "".join("  " + ln + "\n" for ln in billion_laughs().splitlines()))
    r = project.run("validate", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "env/bomb.yaml:" in r.stderr and "[alias-limit]" in r.stderr, r.stderr


def test_recursive_alias_is_refused(project):
    project.write("mlspec.yaml", "project: rec\nsteps: {}\nloop: &loop [1, *loop]\n")
    r = project.run("validate", timeout=60)
    assert r.returncode == 1
    assert "mlspec.yaml:3:7: error: " in r.stderr and "[recursive-alias]" in r.stderr, r.stderr


def test_ordinary_anchors_and_merge_keys_still_work(project):
    spec = (project.root / "mlspec.yaml").read_text()
    spec = spec.replace("    params: {scale: 2.0}", "    params: &p {scale: 2.0}")
    spec = spec.replace("    outputs: [summary]", "    outputs: [summary]\n    params: {<<: *p, extra: 1}")
    project.write("mlspec.yaml", spec)
    r = project.run("validate")
    assert r.returncode == 0, r.stdout + r.stderr


# --- command-line usage errors ---------------------------------------------------------------------------
USAGE_ERRORS = [
    (["plan", "--detailed-exitcode", "--formt", "markdown"], "mlspec plan --help"),
    (["plan", "--format", "xml"], "mlspec plan --help"),
    (["validate", "--bogus"], "mlspec validate --help"),
    (["--bogus", "validate"], "mlspec validate --help"),
    (["nosuchcommand"], "mlspec --help"),
    (["show"], "mlspec show --help"),
    (["state", "show"], "mlspec state show --help"),
    (["state", "restore", "abc"], "mlspec state restore --help"),
    (["state", "list", "--zzz"], "mlspec state list --help"),
    (["apply", "--parallelism", "x"], "mlspec apply --help"),
    (["runs", "list", "-n"], "mlspec runs list --help"),
    (["artifacts", "get"], "mlspec artifacts get --help"),
    (["metrics", "diff", "--format", "csv"], "mlspec metrics diff --help"),
]


@pytest.mark.parametrize("args,hint", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_1_with_a_hint(project, args, hint):
    r = project.run(*args)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stdout == ""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, r.stderr
    assert f"`{hint}`" in r.stderr
    assert "KEY=VALUE" not in errors[0]  # argparse lists the optional overrides as required


def test_detailed_exitcode_typo_is_an_error_not_changes(project, tmp_path):
    out = tmp_path / "plan.md"
    with open(out, "w") as fh:
        r = subprocess.run([sys.executable, "-m", "mlspec", "plan", "--detailed-exitcode", "--formt", "markdown"],
                           cwd=project.root, stdout=fh, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, NO_COLOR="1"))
    assert r.returncode == 1 and out.read_text() == ""
    assert "unrecognized arguments: --formt" in r.stderr
    ok = project.run("plan", "--detailed-exitcode", "--format", "markdown")
    assert ok.returncode == 2, ok.stderr  # the README's CI recipe: 2 means changes


def test_help_and_version_still_exit_0():
    assert run_cli("--help").returncode == 0
    assert run_cli("plan", "--help").returncode == 0
    assert run_cli("--version").returncode == 0


# --- storage failures -----------------------------------------------------------------------------------------
def _no_aws(tmp_path) -> dict:
    """An environment with no AWS credentials anywhere (env, shared files, instance metadata)."""
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_CONFIG_FILE=str(empty), AWS_EC2_METADATA_DISABLED="true",
               AWS_DEFAULT_REGION="us-east-1", NO_COLOR="1")
    return env


def _run(project, env, *args):
    return subprocess.run([sys.executable, "-m", "mlspec", *args], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=120)


FAST_FAIL = "config_kwargs: {connect_timeout: 1, read_timeout: 5, retries: {max_attempts: 1}}"


def _storage(project, url: str, endpoint: str, extra: str = "") -> None:
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec + f"""
storage:
  state: {url}
  options: {{endpoint_url: "{endpoint}", {FAST_FAIL}{extra}}}
""")


def _one_line_error(r) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_missing_credentials(project, s3, tmp_path):
    env = _no_aws(tmp_path)
    r = _run(project, env, "plan", "++storage.state=s3://team/churn/state", "--no-preflight")
    line = _one_line_error(r)
    assert "s3://team/churn/state" in line and "no credentials" in line, line
    assert "AWS_ACCESS_KEY_ID" in r.stderr and "storage.options.key" in r.stderr
    # the same with a custom endpoint, and for `state list`
    _storage(project, "s3://team/churn/state", s3)
    line = _one_line_error(_run(project, env, "state", "list"))
    assert "s3://team/churn/state" in line and "no credentials" in line, line


def test_missing_bucket(project, s3, tmp_path):
    env = dict(_no_aws(tmp_path), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    _storage(project, "s3://nosuchbucket/churn/state", s3)
    for args in (["plan", "--no-preflight"], ["state", "list"], ["apply", "--auto-approve"]):
        line = _one_line_error(_run(project, env, *args))
        assert "s3://nosuchbucket/churn/state" in line and "bucket 'nosuchbucket' does not exist" in line, line


def test_unreachable_endpoint(project, tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(_no_aws(tmp_path), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    _storage(project, "s3://team/churn/state", f"http://127.0.0.1:{port}")
    r = _run(project, env, "plan", "--no-preflight")
    line = _one_line_error(r)
    assert "s3://team/churn/state" in line and f"127.0.0.1:{port} is unreachable" in line, line
    assert "storage.options.endpoint_url" in r.stderr


@pytest.fixture(scope="module")
def s3_auth(tmp_path_factory):
    """A moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT), in its own process: a user
    allowed everything on S3, its real keys, and a bucket."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from moto.server import main; "
                             f"main(['-H', '127.0.0.1', '-p', '{port}'])"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import time

        import boto3

        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap",
                  aws_secret_access_key="bootstrap")
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="ci")
        iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument='{"Version": "2012-10-17", '
                            '"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}')
        key = iam.create_access_key(UserName="ci")["AccessKey"]
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket="team")
        yield url, key
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_wrong_credentials(project, s3_auth, tmp_path):
    url, key = s3_auth
    _storage(project, "s3://team/churn/state", url)
    good = dict(_no_aws(tmp_path), AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    r = _run(project, good, "plan", "--no-preflight")
    assert r.returncode == 0, r.stderr  # the server accepts the right keys
    bad = dict(good, AWS_SECRET_ACCESS_KEY="wrong-secret")
    line = _one_line_error(_run(project, bad, "plan", "--no-preflight"))
    assert "s3://team/churn/state" in line and "access denied" in line, line
    unknown = dict(good, AWS_ACCESS_KEY_ID="AKIANOBODY", AWS_SECRET_ACCESS_KEY="x")
    line = _one_line_error(_run(project, unknown, "state", "list"))
    assert "s3://team/churn/state" in line and "access denied" in line, line
