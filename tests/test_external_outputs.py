"""An output that resolves outside the project (a returned absolute path, a symlink) is refused unless the
step declares its directory under `external_paths`: nothing of it reaches the artifact store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

STEPS = '''
from pathlib import Path


def give(path: str):
    return {"out": Path(path)}


def give_str(path: str):
    return {"out": path}
'''


def _stored_blobs(project) -> list[bytes]:
    objects = project.root / ".mlspec/artifacts/objects"
    return [p.read_bytes() for p in objects.rglob("*") if p.is_file()] if objects.exists() else []


def _setup(project, steps_yaml: str):
    project.write("src/demo/ext.py", STEPS)
    project.write("mlspec.yaml", "project: ext\nsteps:\n" + steps_yaml)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A file outside the project, with content no other file has."""
    d = tmp_path / "outside"
    d.mkdir()
    f = d / "secret.txt"
    f.write_text("outside-the-project 7f3a\n")
    return f


def _assert_refused(project, r, output: str, path: Path, step: str, content: bytes):
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "Traceback" not in text
    real = os.path.realpath(path)
    assert (f"output '{output}' resolves to {real}, outside the project; declare its directory under "
            f"steps.{step}.external_paths to allow it") in text, text
    assert content not in _stored_blobs(project)  # nothing of it was stored
    st = project.run("state", "list", "--format", "json")
    assert f"step.{step}" not in st.stdout


def test_returned_absolute_path_outside_the_project_is_refused(project):
    _setup(project, "  leak: {run: demo.ext:give, outputs: [out], params: {path: /etc/passwd}}\n")
    r = project.apply()
    _assert_refused(project, r, "out", Path("/etc/passwd"), "leak", Path("/etc/passwd").read_bytes())


def test_returned_string_path_and_matrix_step_name(project, outside):
    _setup(project, f"  leak:\n    run: demo.ext:give_str\n    outputs: [out]\n"
                    f"    matrix: {{path: ['{outside}']}}\n")
    r = project.apply()
    _assert_refused(project, r, "out", outside, "leak", outside.read_bytes())


def test_symlink_in_the_project_pointing_outside_is_refused(project, outside):
    link = project.root / "data" / "innocent.txt"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    _setup(project, "  leak: {run: demo.ext:give, outputs: [out], params: {path: data/innocent.txt}}\n")
    r = project.apply()
    _assert_refused(project, r, "out", outside, "leak", outside.read_bytes())


def test_cmd_output_symlink_pointing_outside_is_refused(project, outside):
    _setup(project, f"  leak: {{cmd: 'ln -s {outside} ${{outputs.out}}', outputs: [out]}}\n")
    r = project.apply()
    _assert_refused(project, r, "out", outside, "leak", outside.read_bytes())


def test_declared_external_path_is_allowed(project, outside):
    _setup(project, f"""  ok:
    run: demo.ext:give
    outputs: [out]
    params: {{path: '{outside}'}}
    external_paths: ['{outside.parent}']
  viacmd:
    cmd: 'ln -s {outside} ${{outputs.out}}'
    outputs: [out]
    external_paths: ['{outside.parent}']
""")
    r = project.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    assert outside.read_bytes() in _stored_blobs(project)
    st = json.loads(project.run("state", "list", "--format", "json").stdout)
    assert {"step.ok", "step.viacmd"} <= set(st["resources"])


def test_declared_directory_is_a_directory_prefix_not_a_string_prefix(project, tmp_path):
    sibling = tmp_path / "outside-more"
    sibling.mkdir()
    f = sibling / "f.txt"
    f.write_text("sibling dir 91c2\n")
    _setup(project, f"  leak: {{run: demo.ext:give, outputs: [out], params: {{path: '{f}'}}, "
                    f"external_paths: ['{tmp_path / 'outside'}']}}\n")
    r = project.apply()
    _assert_refused(project, r, "out", f, "leak", f.read_bytes())


def test_paths_inside_the_project_and_passed_through_inputs_still_work(project, tmp_path, outside):
    """Inputs are declared in the spec: passing one through is no leak, even from a store or a dataset
    outside the project."""
    project.write("src/demo/ext2.py", '''
from pathlib import Path


def write():
    p = Path("build/table.csv")
    p.parent.mkdir(exist_ok=True)
    p.write_text("a,b\\n1,2\\n")
    return {"out": p}


def passthrough(inp: Path):
    return {"out": inp}
''')
    store = tmp_path / "store"
    project.write("mlspec.yaml", f"""
project: ext
storage: {{artifacts: '{store}'}}
datasets:
  ext: {{uri: '{outside}'}}
steps:
  write: {{run: demo.ext2:write, outputs: [out]}}
  same: {{run: demo.ext2:passthrough, inputs: {{inp: step.write.out}}, outputs: [out]}}
  data: {{run: demo.ext2:passthrough, inputs: {{inp: dataset.ext}}, outputs: [out]}}
""")
    r = project.apply()
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(project.run("state", "list", "--format", "json").stdout)
    assert {"step.write", "step.same", "step.data"} <= set(st["resources"])
    assert outside.read_bytes() in [p.read_bytes() for p in (store / "objects").rglob("*") if p.is_file()]
