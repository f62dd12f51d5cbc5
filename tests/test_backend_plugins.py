"""Backends are plugins: a missing or broken one is a one-line error with the install command."""

from __future__ import annotations



def test_missing_backend_plugin_names_the_install_command(project):
    spec = (project.root / "mlspec.yaml").read_text()
    spec = spec.replace("run: demo.steps:side", "run: demo.steps:side\n    backend: containers")
    project.write("mlspec.yaml", spec + "backends:\n  containers: {type: podman}\n")
    r = project.run("plan")
    assert r.returncode == 1
    assert "backend 'podman' is not installed (installed: " in r.stderr
    assert "install it: install the package that provides the 'podman' backend" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3


def test_install_hints_of_the_builtin_backends_name_their_packages():
    from mlspec.backends.registry import INSTALL_HINTS

    assert INSTALL_HINTS["docker"].startswith("pip install -e backends/docker")
    assert INSTALL_HINTS["ray"].startswith("pip install -e backends/ray")


def test_broken_backend_plugin_is_reported_not_raised(project, tmp_path):
    site = tmp_path / "site"
    dist = site / "mlspec_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlspec-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mlspec.backends]\nbroken = mlspec_broken_missing_module:Backend\n")
    spec = (project.root / "mlspec.yaml").read_text()
    project.write("mlspec.yaml", spec.replace("run: demo.steps:side", "run: demo.steps:side\n    backend: broken"))
    env = {"PYTHONPATH": str(site)}
    listed = project.run("backends", env=env)
    assert listed.returncode == 0 and "broken" in listed.stdout and "mlspec-broken" in listed.stdout
    r = project.run("plan", env=env)
    assert r.returncode == 1
    assert "backend 'broken' is installed but failed to load" in r.stderr
    assert "ModuleNotFoundError" in r.stderr and "Traceback" not in r.stderr
