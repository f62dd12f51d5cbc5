"""`mlspec fmt`: canonical key order and style for spec files, `--check` for CI; never changes a value."""

from __future__ import annotations

import shutil
import yaml

from conftest import REPO, run_cli

MESSY = """\
# the team's pipeline
project: demo
steps:
  train:
    outputs: [model]   # the fitted model
    params: {C: 1.0}
    run: demo.steps:train
    inputs: {clean: step.prepare.clean}

  prepare:
    params: {scale: 2.0}
    inputs: {raw: dataset.nums}
    run: demo.steps:prepare
    outputs: [clean]
datasets:
  nums: {uri: data/nums.csv}
"""

CANONICAL = """\
# the team's pipeline
project: demo
datasets:
  nums: {uri: data/nums.csv}
steps:
  train:
    run: demo.steps:train
    inputs: {clean: step.prepare.clean}
    outputs: [model]   # the fitted model
    params: {C: 1.0}

  prepare:
    run: demo.steps:prepare
    inputs: {raw: dataset.nums}
    outputs: [clean]
    params: {scale: 2.0}
"""


def test_fmt_puts_keys_in_the_canonical_order_keeping_comments_names_and_values(tmp_path):
    (tmp_path / "mlspec.yaml").write_text(MESSY)
    r = run_cli("-C", str(tmp_path), "fmt", "--check")
    assert r.returncode == 1 and "would reformat" in r.stderr and "mlspec.yaml" in r.stderr
    assert (tmp_path / "mlspec.yaml").read_text() == MESSY  # --check changes nothing
    d = run_cli("-C", str(tmp_path), "fmt", "--diff")
    assert d.returncode == 1 and "-    run: demo.steps:prepare" in d.stdout
    r = run_cli("-C", str(tmp_path), "fmt")
    assert r.returncode == 0 and "1 file(s) reformatted" in r.stdout
    assert (tmp_path / "mlspec.yaml").read_text() == CANONICAL
    assert yaml.safe_load(CANONICAL) == yaml.safe_load(MESSY)
    r = run_cli("-C", str(tmp_path), "fmt", "--check")
    assert r.returncode == 0 and "already formatted" in r.stdout


def test_config_group_files_are_ordered_at_their_package(tmp_path):
    (tmp_path / "mlspec.yaml").write_text("project: demo\ndefaults:\n  - _self_\n  - env: dev\n")
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "dev.yaml").write_text(
        "# @package _global_\nstorage:\n  workspace: dev\n  state: .mlspec/dev\n")
    r = run_cli("-C", str(tmp_path), "fmt")
    assert r.returncode == 0, r.stderr
    # root: `defaults` first; the group file's storage keys in the schema's order
    assert (tmp_path / "mlspec.yaml").read_text().startswith("defaults:\n  - _self_\n  - env: dev\nproject: demo")
    assert (tmp_path / "env" / "dev.yaml").read_text() == \
        "# @package _global_\nstorage:\n  state: .mlspec/dev\n  workspace: dev\n"


def test_fmt_is_idempotent_over_every_example(tmp_path):
    work = tmp_path / "examples"
    shutil.copytree(REPO / "examples", work, ignore=shutil.ignore_patterns(".mlspec", "__pycache__"))
    before = {p: yaml.safe_load(p.read_text()) for p in work.rglob("mlspec.yaml")}
    assert len(before) >= 4
    r = run_cli("fmt", str(work))
    assert r.returncode == 0, r.stderr
    r = run_cli("fmt", "--check", str(work))
    assert r.returncode == 0, r.stderr
    for p, data in before.items():  # the same data, and each example still validates
        assert yaml.safe_load(p.read_text()) == data
        v = run_cli("-C", str(p.parent), "validate")
        assert v.returncode == 0, v.stdout + v.stderr


def test_a_file_that_is_not_yaml_is_one_error(tmp_path):
    (tmp_path / "mlspec.yaml").write_text("project: [unclosed\n")
    r = run_cli("-C", str(tmp_path), "fmt")
    assert r.returncode == 1 and "Error: cannot format" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("-C", str(tmp_path), "fmt", "missing.yaml")
    assert r.returncode == 1 and "no such file or directory: missing.yaml" in r.stderr

