"""Content-addressed artifact store at ``storage.artifacts`` (any fsspec URL).

    objects/<2 hex>/<30 hex>      file contents, named by their xxh3-128 hash: deduplicated across runs
                                  and workspaces that share the store
    runcache/<32 hex>.json        step fingerprint -> outputs and metrics of a successful run, with a
                                  checksum of its own
    quarantine/<32 hex>.<time>    objects whose content no longer matched their name, moved aside

A directory output is a *tree*: each file is an object of its own and the tree is one more object, its
manifest (canonical JSON ``{"tree": 1, "files": [[relative path, hash, size], ...]}``), whose hash is the
output's hash. An unchanged file is stored once however many trees hold it, so a one-file change to a
directory stores one file object and one manifest.

Every read verifies content against the name (the hash is the name, so this costs one xxh3 pass, ~10 GB/s):
a byte-flipped or truncated object is never handed to a step, never restored, never copied out. It is
reported with the step that produced it (when known) and moved to quarantine/, so the next plan sees the
output as missing and re-runs the step that produces it.

The store is used from the mlspec process and from step processes (possibly on another machine), so it
holds no state in memory beyond an fsspec filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from mlspec.errors import MlspecError
from mlspec.hashing import canonical_json, checksum_ok, copy_hashing, hash_bytes, hash_file, hash_stream
from mlspec.storage import Location

TEMP_MAX_AGE = 600.0  # a `.obj.*` temp file untouched this long belongs to a dead writer


class CorruptArtifact(MlspecError):
    """An object's content does not match its name; it has been quarantined."""

    def __init__(self, digest: str, detail: str, produced_by: str = "", url: str = ""):
        self.digest, self.detail, self.produced_by = digest, detail, produced_by
        who = f" (output {produced_by})" if produced_by else ""
        super().__init__(f"artifact {digest}{who} is corrupt: {detail}; it was moved to quarantine",
                         hint="the next `mlspec plan` shows the step that produces it re-running; "
                              "`mlspec artifacts verify` checks every object the state references")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


class ArtifactStore:
    def __init__(self, url: str, options: Mapping | None = None, base: str | os.PathLike | None = None):
        self.loc = Location(url, options, base)

    @property
    def url(self) -> str:
        return self.loc.url

    def object_name(self, digest: str) -> str:
        h = _hex(digest)
        return f"objects/{h[:2]}/{h[2:]}"

    def has(self, digest: str) -> bool:
        return self.loc.exists(self.object_name(digest))

    def put_file(self, path: str | os.PathLike, digest: str | None = None) -> tuple[str, int]:
        """Store a file by content; returns (hash, size). Content already stored is not copied again, unless
        the stored object has the wrong size (an emptied or truncated object is replaced)."""
        if self.loc.local and digest is None:
            return self._put_local_hashing(path)
        if digest is None:
            digest, size = hash_file(path)
        else:
            size = os.path.getsize(path)
        name = self.object_name(digest)
        if self.loc.local:
            dest = Path(self.loc.join(name))
            if self.quick_check(digest, size):
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".obj.", dir=dest.parent)
                os.close(fd)
                try:
                    shutil.copyfile(path, tmp)
                    os.chmod(tmp, 0o444)
                    os.replace(tmp, dest)
                except BaseException:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise
        elif self.quick_check(digest, size):
            self.loc.fs.put_file(str(path), self.loc.join(name))
        return digest, size

    def _put_local_hashing(self, path: str | os.PathLike) -> tuple[str, int]:
        """Copy into the store while hashing (one read), then name the copy by what was actually copied: the
        object's name always matches its content, even if the source changes meanwhile."""
        root = Path(self.loc.join("objects"))
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".obj.", dir=root)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
                digest, size = copy_hashing(src, out)
            dest = Path(self.loc.join(self.object_name(digest)))
            if self.quick_check(digest, size):
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
            else:
                os.unlink(tmp)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(data)
        try:
            return self.put_file(fh.name)
        finally:
            os.unlink(fh.name)

    def local_path(self, digest: str, cache_dir: str | os.PathLike | None = None, *, verify: bool = True,
                   produced_by: str = "") -> str:
        """A local path holding the object (the object itself on disk, else a downloaded copy), its content
        checked against its name unless ``verify`` is False."""
        name = self.object_name(digest)
        if self.loc.local:
            p = self.loc.join(name)
            if not os.path.exists(p):
                raise FileNotFoundError(f"artifact {digest} is missing from {self.url}")
            if verify:
                self._check_file(digest, p, produced_by)
            return p
        cache = Path(cache_dir or tempfile.gettempdir()) / "mlspec-objects"
        dest = cache / _hex(digest)
        if dest.exists() and verify:
            got, _ = hash_file(dest)
            if got != digest:  # the local copy rotted, not necessarily the store: fetch again
                dest.unlink()
        if not dest.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(f".part{os.getpid()}")
            self.loc.fs.get_file(self.loc.join(name), str(tmp))
            if verify:
                got, size = hash_file(tmp)
                if got != digest:
                    tmp.unlink()
                    raise self._corrupt(digest, got, size, produced_by)
            os.replace(tmp, dest)
        return str(dest)

    def _corrupt(self, digest: str, got: str, size: int, produced_by: str) -> CorruptArtifact:
        """Quarantine an object whose content hashes to ``got``; the error to raise about it."""
        self.quarantine(digest)
        return CorruptArtifact(digest, f"its content hashes to {got} ({size} bytes)", produced_by, self.url)

    def _check_file(self, digest: str, path: str, produced_by: str = "") -> None:
        got, size = hash_file(path)
        if got != digest:
            raise self._corrupt(digest, got, size, produced_by)

    def verify(self, digest: str, size: int | None = None) -> str:
        """'' when the object is there and its content matches its name; else what is wrong."""
        name = self.object_name(digest)
        try:
            if self.loc.local:
                got, n = hash_file(self.loc.join(name))
            else:
                with self.loc.fs.open(self.loc.join(name), "rb") as fh:
                    got, n = hash_stream(fh)
        except FileNotFoundError:
            return "missing"
        if got != digest:
            return f"corrupt: its content hashes to {got} ({n} bytes)"
        if size is not None and n != size:
            return f"corrupt: {n} bytes, the record says {size}"
        return ""

    def quick_check(self, digest: str, size: int | None) -> str:
        """'' when the object exists with the recorded size (a stat, no read): for planning."""
        name = self.object_name(digest)
        try:
            if self.loc.local:
                n = os.stat(self.loc.join(name)).st_size
            else:
                n = self.loc.fs.size(self.loc.join(name))
        except FileNotFoundError:
            return "missing"
        if size is not None and n != size:
            return f"{n} bytes, the record says {size}"
        return ""

    def quarantine(self, digest: str) -> str:
        """Move an object aside (never delete: it is evidence); returns where it went."""
        import time as _time

        src = self.loc.join(self.object_name(digest))
        dest_name = f"quarantine/{_hex(digest)}.{int(_time.time())}"
        dest = self.loc.join(dest_name)
        try:
            if self.loc.local:
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
            else:
                self.loc.fs.mv(src, dest)
        except FileNotFoundError:
            return ""
        return dest

    def read_bytes(self, digest: str, produced_by: str = "") -> bytes:
        data = self.loc.read_bytes(self.object_name(digest))
        if data is None:
            raise FileNotFoundError(f"artifact {digest} is missing from {self.url}")
        got = hash_bytes(data)
        if got != digest:
            raise self._corrupt(digest, got, len(data), produced_by)
        return data

    def get(self, digest: str, dest: str | os.PathLike, produced_by: str = "") -> int:
        """Copy an object out, hashing what is written; returns the bytes written. A mismatch removes the
        copy, quarantines the object and raises CorruptArtifact."""
        name = self.loc.join(self.object_name(digest))
        opener = (lambda: open(name, "rb")) if self.loc.local else (lambda: self.loc.fs.open(name, "rb"))
        tmp = f"{dest}.part{os.getpid()}"
        try:
            with opener() as src, open(tmp, "wb") as out:
                got, size = copy_hashing(src, out)
        except FileNotFoundError:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise FileNotFoundError(f"artifact {digest} is missing from {self.url}") from None
        if got != digest:
            os.unlink(tmp)
            raise self._corrupt(digest, got, size, produced_by)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return size

    def clean_temp(self, max_age: float = TEMP_MAX_AGE) -> int:
        """Remove `.obj.*` temp files that killed writers left in a local store; returns how many. A file
        being written is touched on every chunk, so one untouched for ``max_age`` seconds is abandoned."""
        if not self.loc.local:
            return 0
        import time as _time

        root = Path(self.loc.join("objects"))
        if not root.is_dir():
            return 0
        now, removed = _time.time(), 0
        dirs = [root] + [Path(e.path) for e in os.scandir(root) if e.is_dir()]
        for d in dirs:
            for e in os.scandir(d):
                if not e.name.startswith(".obj."):
                    continue
                try:
                    if now - e.stat().st_mtime > max_age:
                        os.unlink(e.path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    # --- trees (directory outputs) ---------------------------------------------------------------
    def put_tree(self, root: str | os.PathLike) -> tuple[str, int, int]:
        """Store a directory file by file, then its manifest; returns (manifest hash, total bytes, files).
        Symlinks are followed (the content is stored); empty directories are not kept."""
        files, total = [], 0
        root = Path(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                digest, size = self.put_file(full)
                files.append([full.relative_to(root).as_posix(), digest, size])
                total += size
        files.sort()
        digest, _ = self.put_bytes(tree_manifest(files))
        return digest, total, len(files)

    def read_tree(self, digest: str, produced_by: str = "") -> list:
        """The verified manifest of a tree: [[relative path, hash, size], ...]."""
        data = self.read_bytes(digest, produced_by)
        try:
            doc = json.loads(data)
            files = doc["files"]
            if doc.get("tree") != 1 or not all(isinstance(f, list) and len(f) == 3 for f in files):
                raise ValueError("not a tree manifest")
        except (ValueError, KeyError, TypeError):
            raise MlspecError(f"artifact {digest}{f' ({produced_by})' if produced_by else ''} is not a directory "
                              "manifest", hint="`mlspec artifacts verify` checks the store") from None
        for rel, _h, _s in files:
            if rel.startswith("/") or ".." in rel.split("/"):
                raise MlspecError(f"directory manifest {digest} names {rel!r}, outside its directory",
                                  hint="the store was written by something other than mlspec; verify it")
        return files

    def tree_problem(self, digest: str, *, deep: bool) -> str:
        """'' when a tree and every file it lists are intact (``deep``: content read; else sizes only)."""
        problem = self.verify(digest) if deep else self.quick_check(digest, None)
        if problem:
            return problem
        try:
            files = self.read_tree(digest)
        except (MlspecError, FileNotFoundError) as exc:
            return str(exc)
        for rel, h, size in files:
            p = self.verify(h, size) if deep else self.quick_check(h, size)
            if p:
                return f"file {rel} ({h}) is {p}"
        return ""

    def output_problem(self, out: Mapping, *, deep: bool) -> str:
        """'' when a recorded output ({"hash", "size", "format"}) is intact: a file, or a tree and its files
        (``deep`` reads and hashes the content; otherwise sizes are checked with a stat)."""
        if out.get("format") == "dir":
            return self.tree_problem(out["hash"], deep=deep)
        return self.verify(out["hash"], out.get("size")) if deep else self.quick_check(out["hash"], out.get("size"))

    def get_tree(self, digest: str, dest: str | os.PathLike, produced_by: str = "") -> int:
        """Write a tree out as a directory (files checked as they are copied); returns total bytes."""
        total = 0
        dest = Path(dest)
        for rel, h, _size in self.read_tree(digest, produced_by):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            total += self.get(h, target, produced_by=f"{produced_by}/{rel}" if produced_by else rel)
        return total

    # --- run-cache ------------------------------------------------------------------------------
    def runcache_get(self, fingerprint: str) -> dict | None:
        """The entry for a fingerprint, or None. An entry is trusted only when its checksum holds, it names this
        fingerprint, its outputs have the right shape, and every output is in the store with its size."""
        raw = self.loc.read_bytes(f"runcache/{_hex(fingerprint)}.json")
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        if not runcache_entry_ok(entry, fingerprint):
            return None
        for o in entry["outputs"].values():
            if self.output_problem(o, deep=False):
                return None
        return entry

    def runcache_put(self, fingerprint: str, entry: Mapping) -> None:
        # a cache entry: atomic (never half-written) but not fsynced; losing one in a power cut costs a re-run
        from mlspec.state import json_safe

        body = json_safe(dict(entry, fingerprint=fingerprint))  # NaN metrics as "nan": valid JSON
        body.pop("checksum", None)
        body["checksum"] = hash_bytes(canonical_json(body))
        self.loc.write_bytes(f"runcache/{_hex(fingerprint)}.json", canonical_json(body), durable=False)

    def runcache_drop(self, fingerprint: str) -> None:
        self.loc.delete(f"runcache/{_hex(fingerprint)}.json")


def tree_manifest(files: list) -> bytes:
    """The canonical bytes of a tree manifest (sorted [path, hash, size] entries)."""
    return canonical_json({"tree": 1, "files": sorted(files)})


def runcache_entry_ok(entry, fingerprint: str) -> bool:
    if not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint:
        return False
    if not checksum_ok(entry):
        return False
    outs = entry.get("outputs")
    if not isinstance(outs, dict):
        return False
    for o in outs.values():
        if not isinstance(o, dict) or not isinstance(o.get("hash"), str) or not isinstance(o.get("size", 0), int):
            return False
    if not isinstance(entry.get("metrics", {}), dict):
        return False
    from mlspec import records

    return not records.problem(records.RUNCACHE_ENTRY, entry)


class RunCacheView(Mapping):
    """A read-only, lazily loaded view of the run-cache, for the planner (``facts.runcache``)."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._memo: dict = {}
        self._listing: set | None = None

    def __getitem__(self, fp):
        v = self.get(fp)
        if v is None:
            raise KeyError(fp)
        return v

    def get(self, fp, default=None):
        if fp not in self._memo:
            names = self._names()
            if names is not None and f"{_hex(fp)}.json" not in names:
                self._memo[fp] = None  # a miss answered by one directory listing, not a failed open per step
            else:
                self._memo[fp] = self.store.runcache_get(fp)
        return self._memo[fp] if self._memo[fp] is not None else default

    def _names(self) -> set | None:
        """The entries of a local run-cache, listed once (None for object stores: a listing can be large)."""
        if not self.store.loc.local:
            return None
        if self._listing is None:
            try:
                self._listing = set(os.listdir(self.store.loc.join("runcache")))
            except FileNotFoundError:
                self._listing = set()
        return self._listing

    def seen(self) -> list:
        """The entries read so far (the planner's hits): a model finds its candidate's metrics among them."""
        return [e for e in self._memo.values() if e is not None]

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0
