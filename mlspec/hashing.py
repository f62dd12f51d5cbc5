"""Content hashing: streaming xxh3-128, directory manifests, and a stat-keyed cache.

Why xxh3-128: it hashes a page-cached file at ~10 GB/s here (BLAKE3 4-5.7, sha256 1.5, md5 0.7), faster
than `cat` reads it, and 128 bits make accidental collisions irrelevant for content addressing. We need
change detection and deduplication, not a defence against an adversary who can write to the store; for
that the store's own access control is the boundary. Hashes are written as ``xxh128:<32 hex>`` so a
later format can change the algorithm without ambiguity.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import xxhash

ALGO = "xxh128"
CHUNK = 4 << 20  # 4 MiB reads: big enough to amortise syscalls, small enough to stay in cache


def hash_bytes(data: bytes) -> str:
    return f"{ALGO}:{xxhash.xxh3_128_hexdigest(data)}"


def hash_json(obj) -> str:
    """Hash of canonical JSON (sorted keys, no spaces): the fingerprint of plain data."""
    return hash_bytes(canonical_json(obj))


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def checksum_ok(doc: dict) -> bool:
    """Whether a record's "checksum" is the hash of the canonical JSON of the rest of it."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return doc.get("checksum") == hash_bytes(canonical_json(body))


def copy_hashing(src, dst) -> tuple[str, int]:
    """Copy one open binary file to another, hashing what passes: (hash, size) of the bytes written."""
    h = xxhash.xxh3_128()
    size = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return f"{ALGO}:{h.hexdigest()}", size


def hash_stream(fh) -> tuple[str, int]:
    h = xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    readinto = getattr(fh, "readinto", None)
    if readinto is None:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    else:
        while True:
            n = readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return f"{ALGO}:{h.hexdigest()}", size


def hash_file(path: str | os.PathLike) -> tuple[str, int]:
    with open(path, "rb", buffering=0) as fh:
        return hash_stream(fh)


class HashCache:
    """Remembers file hashes keyed by (path, size, mtime_ns, inode): unchanged files are never re-read.

    Stored as one JSON file (default ``.mlspec/cache/hashes.json``); written atomically, and only when
    something new was hashed. ``bytes_read`` counts what was actually read, for tests and benchmarks.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.entries: dict = {}
        self.dirty = False
        self.bytes_read = 0
        if self.path and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (ValueError, OSError):
                self.entries = {}  # a damaged cache is only a cache: start again

    def file(self, path: str | os.PathLike) -> tuple[str, int]:
        p = os.path.abspath(path)
        st = os.stat(p)
        key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        hit = self.entries.get(p)
        if hit and hit[0] == key:
            return hit[1], st.st_size
        digest, size = hash_file(p)
        self.bytes_read += size
        self.entries[p] = [key, digest]
        self.dirty = True
        return digest, size

    def remember(self, path: str | os.PathLike, digest: str) -> None:
        """Record the hash of a file mlspec just wrote (and verified), so it is not read again."""
        p = os.path.abspath(path)
        st = os.stat(p)
        self.entries[p] = [f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}", digest]
        self.dirty = True

    def directory(self, root: str | os.PathLike) -> tuple[str, int]:
        """A directory's hash: the hash of its sorted manifest of (relative path, file hash)."""
        root = Path(root)
        manifest, total = [], 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                digest, size = self.file(full)
                manifest.append([full.relative_to(root).as_posix(), digest])
                total += size
        manifest.sort()
        return hash_json({"manifest": manifest}), total

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        from mlspec.storage import atomic_write_local

        atomic_write_local(self.path, json.dumps(self.entries, separators=(",", ":")).encode())
        self.dirty = False


def manifest_hash(entries: Mapping[str, str]) -> str:
    return hash_json({"manifest": sorted([k, v] for k, v in entries.items())})
