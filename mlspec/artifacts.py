"""Content-addressed artifact store at ``storage.artifacts`` (any fsspec URL).

    objects/<2 hex>/<30 hex>      file contents, named by their xxh3-128 hash: deduplicated across runs
                                  and workspaces that share the store
    runcache/<32 hex>.json        step fingerprint -> outputs and metrics of a successful run

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

from mlspec.hashing import canonical_json, hash_file
from mlspec.storage import Location


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
        """Store a file by content; returns (hash, size). Existing content is not copied again."""
        if digest is None:
            digest, size = hash_file(path)
        else:
            size = os.path.getsize(path)
        name = self.object_name(digest)
        if self.loc.local:
            dest = Path(self.loc.join(name))
            if not dest.exists():
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
        elif not self.loc.exists(name):
            self.loc.fs.put_file(str(path), self.loc.join(name))
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(data)
        try:
            return self.put_file(fh.name)
        finally:
            os.unlink(fh.name)

    def local_path(self, digest: str, cache_dir: str | os.PathLike | None = None) -> str:
        """A local path holding the object: the object itself on disk, else a downloaded copy."""
        name = self.object_name(digest)
        if self.loc.local:
            p = self.loc.join(name)
            if not os.path.exists(p):
                raise FileNotFoundError(f"artifact {digest} is missing from {self.url}")
            return p
        cache = Path(cache_dir or tempfile.gettempdir()) / "mlspec-objects"
        dest = cache / _hex(digest)
        if not dest.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".part")
            self.loc.fs.get_file(self.loc.join(name), str(tmp))
            os.replace(tmp, dest)
        return str(dest)

    def read_bytes(self, digest: str) -> bytes:
        data = self.loc.read_bytes(self.object_name(digest))
        if data is None:
            raise FileNotFoundError(f"artifact {digest} is missing from {self.url}")
        return data

    def get(self, digest: str, dest: str | os.PathLike) -> None:
        if self.loc.local:
            shutil.copyfile(self.local_path(digest), dest)
            os.chmod(dest, 0o644)
        else:
            self.loc.fs.get_file(self.loc.join(self.object_name(digest)), str(dest))

    # --- run-cache ------------------------------------------------------------------------------
    def runcache_get(self, fingerprint: str) -> dict | None:
        raw = self.loc.read_bytes(f"runcache/{_hex(fingerprint)}.json")
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        # only trust an entry whose outputs are all still in the store
        if all(self.has(o["hash"]) for o in entry.get("outputs", {}).values()):
            return entry
        return None

    def runcache_put(self, fingerprint: str, entry: Mapping) -> None:
        # a cache entry: atomic (never half-written) but not fsynced; losing one in a power cut costs a re-run
        self.loc.write_bytes(f"runcache/{_hex(fingerprint)}.json", canonical_json(dict(entry)), durable=False)


class RunCacheView(Mapping):
    """A read-only, lazily loaded view of the run-cache, for the planner (``facts.runcache``)."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._memo: dict = {}

    def __getitem__(self, fp):
        v = self.get(fp)
        if v is None:
            raise KeyError(fp)
        return v

    def get(self, fp, default=None):
        if fp not in self._memo:
            self._memo[fp] = self.store.runcache_get(fp)
        return self._memo[fp] if self._memo[fp] is not None else default

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0
