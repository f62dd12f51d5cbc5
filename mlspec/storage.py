"""fsspec access for state, records and artifacts: atomic writes, exclusive creates, local fast paths.

Local paths use the OS directly (temp file + fsync + rename; O_EXCL for exclusive create). Object stores
use a single PUT (atomic by nature) and conditional create (If-None-Match) for locks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from mlspec.errors import MlspecError


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def atomic_write_local(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write via a temp file and rename; ``durable`` also fsyncs the file and its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class Location:
    """A directory-like place (local path or fsspec URL) with the few operations mlspec needs."""

    def __init__(self, url: str, options: Mapping | None = None, base: str | os.PathLike | None = None):
        self.options = dict(options or {})
        if is_local(url):
            p = Path(local_path(url))
            if not p.is_absolute() and base is not None:
                p = Path(base) / p
            self.url = str(p)
            self.local = True
            self._fs = None
        else:
            self.url = url.rstrip("/")
            self.local = False
            self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            if self.local:
                self._fs = fsspec.filesystem("file")
            else:
                try:
                    self._fs, _ = fsspec.core.url_to_fs(self.url, **self.options)
                except (ImportError, ValueError) as exc:
                    raise MlspecError(f"cannot open storage {self.url}: {exc}",
                                      hint="install the fsspec implementation for this scheme (e.g. s3fs, gcsfs)"
                                      ) from None
        return self._fs

    def join(self, *parts: str) -> str:
        if self.local:
            return str(Path(self.url, *parts))
        return "/".join([self.url, *parts])

    def child(self, *parts: str) -> "Location":
        loc = Location.__new__(Location)
        loc.options, loc.local, loc._fs = self.options, self.local, self._fs
        loc.url = self.join(*parts)
        return loc

    def read_bytes(self, name: str) -> bytes | None:
        path = self.join(name)
        if self.local:
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except FileNotFoundError:
                return None
        try:
            with self.fs.open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, name: str, data: bytes, durable: bool = True) -> None:
        path = self.join(name)
        if self.local:
            atomic_write_local(path, data, durable)
        else:
            with self.fs.open(path, "wb") as fh:  # one PUT: atomic on object stores
                fh.write(data)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create ``name`` only if absent; False when it already exists."""
        path = self.join(name)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
        try:
            with self.fs.open(path, "xb") as fh:  # conditional create (If-None-Match: *) on s3fs
                fh.write(data)
            return True
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise

    def delete(self, name: str) -> None:
        path = self.join(name)
        if self.local:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            try:
                self.fs.rm(path)
            except FileNotFoundError:
                pass

    def exists(self, name: str) -> bool:
        path = self.join(name)
        return os.path.exists(path) if self.local else self.fs.exists(path)

    def list(self, prefix: str = "") -> list[str]:
        """Names (relative) of files directly under ``prefix``."""
        path = self.join(prefix) if prefix else self.url
        if self.local:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
