"""Outputs in the project: an output with a ``path:`` is kept in the project as well as in the store.

After every apply (a step ran, was restored from the run-cache, or was up to date) the project's copy holds
exactly the recorded content; ``mlspec checkout`` puts it back on demand; the plan reports a copy that was
edited or deleted by hand (``drift``) and the apply puts the recorded content back. Like DVC's cache types,
the copy is made by the first link type that works, in the order of ``storage.link`` (default: a reflink,
else a copy): a reflink is instant and independent of the store; hard and symbolic links are instant but
share the store's read-only file. Every placement is verified against the recorded hash, and the stat-keyed
hash cache learns the new file, so the next plan checks it with a ``stat``.

The project's ``.gitignore`` keeps one block, managed here, listing every declared path: outputs live in
the store and are put back by mlspec, not committed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

from mlspec.errors import MlspecError

FICLONE = 0x40049409  # ioctl(dest, FICLONE, src): a copy-on-write clone (Linux: btrfs, XFS, bcachefs)
GITIGNORE_BEGIN = "# >>> mlspec outputs (kept by mlspec from the spec's `path:` entries; edit the spec, not this block)"
GITIGNORE_END = "# <<< mlspec outputs"


def declared_paths(spec) -> list[tuple[str, str, str]]:
    """(step name, output name, project path) of every output that declares a path."""
    return [(s.name, out, o.path) for s in spec.steps.values() for out, o in s.output_opts.items() if o.path]


# --- drift ----------------------------------------------------------------------------------------
def drift(project_dir: Path, path: str, out: Mapping, store, cache) -> tuple[str, str]:
    """('', path) when the project's copy at ``path`` holds the recorded output; else ('modified' or
    'missing', what to name: the path, or for a directory the one file that differs, or the count)."""
    dest = project_dir / path
    if out.get("format") == "dir":
        if not dest.is_dir():
            return ("modified" if dest.exists() else "missing"), path
        try:
            want = {rel: h for rel, h, _s in store.read_tree(out["hash"])}
        except (MlspecError, FileNotFoundError):
            return "", path  # the store's problem, reported by the output check, not drift
        have = _tree_now(dest, cache)
        differ = sorted(rel for rel in set(want) | set(have) if want.get(rel) != have.get(rel))
        if not differ:
            return "", path
        if len(differ) == 1:
            return ("missing" if differ[0] not in have else "modified"), f"{path}/{differ[0]}"
        return "modified", f"{path} ({len(differ)} files)"
    if not dest.is_file():
        return ("modified" if dest.exists() else "missing"), path
    return ("" if cache.file(dest)[0] == out["hash"] else "modified"), path


def _tree_now(root: Path, cache) -> dict:
    have = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            full = Path(dirpath) / fn
            if full.is_file():
                have[full.relative_to(root).as_posix()] = cache.file(full)[0]
    return have


# --- placing --------------------------------------------------------------------------------------
def materialise(project_dir: Path, path: str, out: Mapping, store, cache, links: Iterable[str],
                produced_by: str = "") -> bool:
    """Make ``path`` in the project hold exactly the recorded output; True when anything was written."""
    dest = project_dir / path
    if out.get("format") == "dir":
        return _place_tree(dest, out["hash"], store, cache, tuple(links), produced_by)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.is_file() and cache.file(dest)[0] == out["hash"]:
        return False
    _place_file(dest, out["hash"], store, cache, tuple(links), produced_by)
    return True


def _place_tree(dest: Path, digest: str, store, cache, links: tuple, produced_by: str) -> bool:
    if dest.exists() and not dest.is_dir() or dest.is_symlink():
        dest.unlink()
    files = store.read_tree(digest, produced_by)
    want = {rel: h for rel, h, _s in files}
    have = _tree_now(dest, cache) if dest.is_dir() else {}
    wrote = False
    for rel, h in sorted(want.items()):
        if have.get(rel) != h:
            target = dest / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            _place_file(target, h, store, cache, links, f"{produced_by}/{rel}")
            wrote = True
    for rel in sorted(set(have) - set(want)):  # files the recorded tree does not have
        (dest / rel).unlink()
        wrote = True
    for dirpath, dirnames, filenames in sorted(os.walk(dest, topdown=False)) if wrote else ():
        if dirpath != str(dest) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    dest.mkdir(parents=True, exist_ok=True)  # an empty recorded tree is an empty directory
    return wrote


def _place_file(dest: Path, digest: str, store, cache, links: tuple, produced_by: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.mlspec-{os.getpid()}")
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        _link_or_copy(store, digest, tmp, links, produced_by)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    cache.remember(dest, digest)


def _link_or_copy(store, digest: str, tmp: Path, links: tuple, produced_by: str) -> str:
    """Place the object at ``tmp`` by the first link type that works; returns the one used."""
    if store.loc.local:
        src = store.local_path(digest, produced_by=produced_by)  # verified: never link a corrupt object
        for how in links:
            try:
                if how == "reflink":
                    import fcntl

                    with open(src, "rb") as s, open(tmp, "wb") as d:
                        fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
                    os.chmod(tmp, 0o644)
                elif how == "hardlink":
                    os.link(src, tmp)
                elif how == "symlink":
                    os.symlink(os.path.abspath(src), tmp)
                else:
                    break
                return how
            except OSError:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
    store.get(digest, tmp, produced_by=produced_by)  # copies, checking the hash as it goes
    return "copy"


# --- .gitignore -----------------------------------------------------------------------------------
def paths_list(paths) -> list:
    return [p for p in paths if p]


def sync_gitignore(project_dir: Path, paths: Iterable[str]) -> bool:
    """Keep the managed block of the project's .gitignore equal to ``paths``; True when the file changed.
    Lines outside the block are the user's and are never touched; no block is added when there is nothing
    to list."""
    paths = paths_list(paths)
    gi = project_dir / ".gitignore"
    try:
        text = gi.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    lines = text.splitlines()
    if GITIGNORE_BEGIN in lines and GITIGNORE_END in lines[lines.index(GITIGNORE_BEGIN):]:
        b = lines.index(GITIGNORE_BEGIN)
        e = lines.index(GITIGNORE_END, b)
        before, after = lines[:b], lines[e + 1:]
    else:
        if not paths_list(paths):
            return False  # nothing to list and no block to remove: the user's file stays as it is
        before, after = lines, []
    entries = sorted({"/" + p.strip("/") for p in paths})
    block = [GITIGNORE_BEGIN, *entries, GITIGNORE_END] if entries else []
    if block and before and before[-1].strip():
        block = [""] + block
    new_lines = before + block + after
    while new_lines and not new_lines[-1].strip() and not block:
        new_lines.pop()
    new = "\n".join(new_lines) + ("\n" if new_lines else "")
    if new == text:
        return False
    if not new.strip() and not gi.exists():
        return False
    from mlspec.storage import atomic_write_local

    atomic_write_local(gi, new.encode(), durable=False)
    os.chmod(gi, 0o644)
    return True
