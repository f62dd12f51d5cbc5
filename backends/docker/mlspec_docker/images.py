"""The images steps run in: found, pulled, or built by mlspec, each tagged by a hash of what went in.

Three sources, chosen by the settings (see backends/docker/README.md):

- ``image: NAME``: an image that has Python, mlspec and the steps' libraries. Looked up on the engine;
  pulled when missing (``pull: missing``, the default) or never (``pull: never``); a missing image that
  cannot be pulled is an error naming the image and how to build it.
- ``build:``: mlspec builds the project's step image, from the project's Dockerfile (``build.dockerfile``)
  or from its requirements file (``build.requirements`` on top of ``build.base``). The tag is
  ``mlspec-steps-PROJECT:HASH``, HASH a content hash of everything the build reads (the context's files,
  the Dockerfile, the base, the requirements, the mlspec sources put into it): an unchanged project is
  not rebuilt, a changed one gets a new tag.
- neither (the default): the *host environment*. mlspec imports a minimal root file system (directories
  and the ``/bin``, ``/lib`` links of a merged-/usr system, no files from any registry) with
  ``docker import`` as ``mlspec-host-root:HASH``, and every step container mounts this machine's ``/usr``,
  Python and mlspec read-only: the steps run with exactly the libraries of a local apply.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import tarfile
from pathlib import Path

from mlspec.backends.api import BackendError

HOST_ROOT_REPO = "mlspec-host-root"
STEPS_REPO = "mlspec-steps"
SKIP_DIRS = {".mlspec", ".git", "__pycache__", ".venv", "venv", "node_modules", ".pytest_cache"}


def _hasher():
    import xxhash

    return xxhash.xxh3_128()


def host_root_tar() -> bytes:
    """A minimal root file system as a tar archive, byte-identical on every run (hence one content tag)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name, kind, mode=0o755, link="", data=b""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for d in ("usr", "etc", "root", "home", "proc", "dev", "sys", "run", "var", "opt", "mnt", "srv"):
            add(d, tarfile.DIRTYPE)
        for d in ("tmp", "var/tmp"):
            add(d, tarfile.DIRTYPE, 0o1777)
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(link, tarfile.SYMTYPE, 0o777, target)
        add("etc/passwd", tarfile.REGTYPE, 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n"
                                                    b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        add("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\nnogroup:x:65534:\n")
        add("etc/nsswitch.conf", tarfile.REGTYPE, 0o644, data=b"passwd: files\ngroup: files\nhosts: files dns\n")
    return buf.getvalue()


def image_id(client, name: str) -> str:
    """The engine's id (``sha256:...``, a digest of the image's configuration) of a local image; '' if absent."""
    import docker.errors

    try:
        return client.api.inspect_image(name)["Id"]
    except docker.errors.ImageNotFound:
        return ""


def ensure_host_root(client) -> str:
    """The tag of the host-environment root image, imported now if this engine does not have it."""
    data = host_root_tar()
    h = _hasher()
    h.update(data)
    tag = f"{HOST_ROOT_REPO}:{h.hexdigest()[:16]}"
    if not image_id(client, tag):
        repo, _, version = tag.partition(":")
        client.api.import_image_from_data(data, repository=repo, tag=version)
        if not image_id(client, tag):
            raise BackendError(f"docker import of the host root image {tag} did not produce it")
    return tag


def ensure_image(client, name: str, pull: str, engine: str) -> str:
    """The image's id; pulled when missing (unless ``pull`` is ``never``). BackendError naming the image and
    how to build it when it is not there and cannot be pulled."""
    import docker.errors

    found = image_id(client, name) if pull != "always" else ""
    if found:
        return found
    why = f"it is not on the Docker engine at {engine}"
    if pull != "never":
        try:
            client.api.pull(name)
            found = image_id(client, name)
            if found:
                return found
        except docker.errors.DockerException as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            why += f" and pulling it failed ({first})"
    else:
        why += " (pull: never)"
    raise BackendError(f"image {name} is missing: {why}",
                       hint=f"build it where the engine runs (docker build -t {name} .), load it (docker load), "
                            "or let mlspec build the project's image: set backend.build.dockerfile or "
                            "backend.build.requirements (backends/docker/README.md, Images)")


# --- project images ---------------------------------------------------------------------------------
def _ignore_patterns(context: Path) -> list[str]:
    f = context / ".dockerignore"
    if not f.is_file():
        return []
    out = []
    for line in f.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("!"):
            out.append(line.strip("/"))
    return out


def _ignored(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or rel.startswith(p + "/") for p in patterns)


def context_files(context: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every file a build of ``context`` sends, in a stable order."""
    patterns = _ignore_patterns(context)
    out = []
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = os.path.relpath(dirpath, context)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                             and not _ignored(os.path.normpath(os.path.join(rel_dir, d)), patterns))
        for fn in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, fn))
            if not _ignored(rel, patterns):
                out.append((rel, Path(dirpath) / fn))
    return out


def _hash_files(h, files: list[tuple[str, Path]]) -> None:
    for rel, path in files:
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")


def project_tag(project_dir: Path, digest: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", project_dir.name.lower()).strip("-._") or "project"
    return f"{STEPS_REPO}-{name}:{digest[:16]}"


def mlspec_sources() -> list[tuple[str, Path]]:
    """The running mlspec's package files, to put into an image built from requirements."""
    import mlspec

    root = Path(mlspec.__file__).resolve().parent
    return [(os.path.join("mlspec", rel), p) for rel, p in context_files(root)
            if p.suffix in (".py", ".json", ".yaml", ".typed")]


def mlspec_requirements() -> list[str]:
    """mlspec's own runtime requirements (without extras), to install into an image built from requirements."""
    from importlib import metadata

    try:
        reqs = metadata.requires("mlspec") or []
    except metadata.PackageNotFoundError:
        return []
    return sorted(r.split(";")[0].strip() for r in reqs if "extra ==" not in r)


def requirements_dockerfile(base: str, python: str) -> str:
    reqs = " ".join(f"'{r}'" for r in mlspec_requirements())
    return (f"FROM {base}\n"
            "ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1\n"
            "COPY requirements.txt /opt/mlspec-build/requirements.txt\n"
            f"RUN {python} -m pip install {reqs} -r /opt/mlspec-build/requirements.txt\n"
            "COPY mlspec /opt/mlspec/mlspec\n"
            "ENV PYTHONPATH=/opt/mlspec\n"
            "LABEL mlspec.built=requirements\n")


def build_plan(project_dir: Path, build: dict, python: str) -> tuple[str, dict]:
    """(tag, how) of the project's step image: what the build reads, hashed; ``how`` says how to build it."""
    h = _hasher()
    if build.get("requirements"):
        req = project_dir / build["requirements"]
        if not req.is_file():
            raise BackendError(f"backend.build.requirements: {req} does not exist",
                               hint="point it at the project's requirements file (e.g. requirements.txt)")
        dockerfile = requirements_dockerfile(build.get("base") or "python:3.11-slim", python)
        h.update(b"requirements\0" + dockerfile.encode() + b"\0")
        files = [("requirements.txt", req)] + mlspec_sources()
        _hash_files(h, files)
        return project_tag(project_dir, h.hexdigest()), {"dockerfile_text": dockerfile, "files": files}
    context = (project_dir / (build.get("context") or ".")).resolve()
    dockerfile = build.get("dockerfile") or "Dockerfile"
    path = context / dockerfile
    if not path.is_file():
        raise BackendError(f"backend.build.dockerfile: {path} does not exist",
                           hint="write the project's Dockerfile there, or point build.dockerfile at it")
    h.update(b"dockerfile\0" + dockerfile.encode() + b"\0")
    files = context_files(context)
    if not any(p == path for _rel, p in files):
        files.append((dockerfile, path))
    _hash_files(h, files)
    return project_tag(project_dir, h.hexdigest()), {"context": str(context), "dockerfile": dockerfile}


def _context_tar(files: list[tuple[str, Path]], dockerfile_text: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        data = dockerfile_text.encode()
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for rel, path in files:
            tar.add(str(path), arcname=rel, recursive=False)
    buf.seek(0)
    return buf


def ensure_built(client, project_dir: Path, build: dict, python: str, network_mode: str, log=None) -> str:
    """The tag of the project's step image, built now unless an image with that content tag exists."""
    import docker.errors

    tag, how = build_plan(project_dir, build, python)
    if image_id(client, tag):
        return tag
    kwargs = dict(tag=tag, rm=True, forcerm=True, decode=True, network_mode=network_mode or None)
    if "dockerfile_text" in how:
        kwargs.update(fileobj=_context_tar(how["files"], how["dockerfile_text"]), custom_context=True)
    else:
        kwargs.update(path=how["context"], dockerfile=how["dockerfile"])
    lines: list[str] = []
    try:
        for chunk in client.api.build(**kwargs):
            if "stream" in chunk:
                lines.append(chunk["stream"].rstrip("\n"))
                if log:
                    log(chunk["stream"])
            if "error" in chunk:
                raise BackendError(f"building the step image {tag} failed: {chunk['error'].strip()}",
                                   hint="last lines of the build:\n    " + "\n    ".join(lines[-8:]))
    except docker.errors.DockerException as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise BackendError(f"building the step image {tag} failed: {first}",
                           hint="check the Dockerfile (docker build shows the same error)") from None
    if not image_id(client, tag):
        raise BackendError(f"building the step image {tag} ended without an image",
                           hint="last lines of the build:\n    " + "\n    ".join(lines[-8:]))
    return tag
