"""The parse cache (.mlspec/cache/parsed/): large spec files are parsed once per content, never hold a secret."""

from __future__ import annotations

import json
import marshal
import stat
from pathlib import Path

import pytest

from conftest import run_cli
from mlspec.compose import parsed


def write_big(root: Path, n: int = 600, *, run: str = "bench.steps:step", extra: str = "") -> Path:
    """A chain of n steps: well above parsed.MIN_BYTES."""
    lines = ["project: big", "datasets:", "  seed: {uri: data/seed.txt, format: text}", "steps:"]
    for i in range(n):
        src = f"step.s{i - 1:04d}.out" if i else "dataset.seed"
        lines += [f"  s{i:04d}:", f"    run: {run}", "    inputs:", f"      src: {src}", "    outputs: [out]",
                  "    params:", f"      i: {i}", "      scale: 1.0"]
    (root / "bench").mkdir(parents=True, exist_ok=True)
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "steps.py").write_text("def step(src, i=0, scale=1.0):\n    return {'out': b'x'}\n")
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "seed.txt").write_text("seed\n")
    spec = root / "mlspec.yaml"
    spec.write_text("\n".join(lines) + "\n" + extra)
    assert spec.stat().st_size > parsed.MIN_BYTES
    return spec


def entries(root: Path) -> list[Path]:
    d = root / ".mlspec" / "cache" / "parsed"
    return sorted(d.iterdir()) if d.is_dir() else []


def plan_params(root: Path, address: str, *overrides: str) -> dict:
    r = run_cli("plan", "--format", "json", *overrides, cwd=root)
    assert r.returncode == 0, r.stderr
    change, = [c for c in json.loads(r.stdout)["resource_changes"] if c["address"] == address]
    return change["after"]["params"]


def test_a_large_spec_is_cached_privately_and_messages_still_point_at_its_lines(tmp_path):
    write_big(tmp_path, run="nosuchmodule.steps:step")
    r = run_cli("validate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    entry, = entries(tmp_path)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    # read from the cache now; a message about the file still has its line and column (parsed on demand)
    r = run_cli("validate", "--check-imports", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith("mlspec.yaml:6:10: error: steps.s0000.run: cannot import module")
    assert "mlspec.yaml:14:10: error: steps.s0001.run:" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_cache_is_what_is_read_and_any_edit_of_the_file_is_a_miss(tmp_path):
    spec = write_big(tmp_path)
    assert run_cli("validate", cwd=tmp_path).returncode == 0
    entry, = entries(tmp_path)
    # an entry for these exact bytes with other data (only the cache can make `validate` say "tampered")
    text = spec.read_text()
    data = marshal.loads(entry.read_bytes().partition(b"\n")[2])
    data["project"] = "tampered"
    import xxhash

    payload = marshal.dumps(data)
    entry.write_bytes(b" ".join([parsed.FORMAT, parsed._key(text).encode(),
                                 xxhash.xxh3_64_hexdigest(payload).encode()]) + b"\n" + payload)
    assert "project 'tampered'" in run_cli("validate", cwd=tmp_path).stdout
    spec.write_text(text + "# a comment changes the bytes\n")
    assert "project 'big'" in run_cli("validate", cwd=tmp_path).stdout


def test_an_override_never_reaches_the_cache(tmp_path):
    """Composition shares the parsed dicts and an override changes them: the entry is the file's own parse."""
    write_big(tmp_path)
    assert plan_params(tmp_path, "step.s0001", "steps.s0001.params.scale=7.5")["scale"] == 7.5
    assert entries(tmp_path)
    assert plan_params(tmp_path, "step.s0001")["scale"] == 1.0  # from the cache: the file's value


@pytest.mark.parametrize("how", ["secret-param", "secret-override"])
def test_a_spec_with_a_sensitive_value_is_never_cached(tmp_path, how):
    secret = "hunter2-very-secret-value"
    if how == "secret-param":
        write_big(tmp_path, extra=f"  leaf:\n    run: bench.steps:step\n    params:\n"
                                  f"      token: {{value: {secret}, secret: true}}\n")
        overrides = []
    else:
        write_big(tmp_path)
        overrides = [f"+secrets.api={secret}"]
    r = run_cli("validate", *overrides, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert entries(tmp_path) == []
    for f in (tmp_path / ".mlspec").rglob("*"):
        assert not f.is_file() or secret.encode() not in f.read_bytes(), f


def test_a_corrupt_or_foreign_entry_is_a_miss_and_is_replaced(tmp_path):
    write_big(tmp_path)
    assert run_cli("validate", cwd=tmp_path).returncode == 0
    entry, = entries(tmp_path)
    good = entry.read_bytes()
    for bad in (b"", b"garbage", good[:-100], good.replace(b"mlspec-parsed 1", b"mlspec-parsed 9", 1),
                good[:200] + bytes([good[200] ^ 1]) + good[201:]):
        entry.write_bytes(bad)
        r = run_cli("validate", cwd=tmp_path)
        assert r.returncode == 0 and "project 'big', 1 dataset, 600 steps" in r.stdout, r.stderr
        assert entry.read_bytes() == good
