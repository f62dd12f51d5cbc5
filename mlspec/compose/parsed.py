"""Parsed spec files remembered by their bytes: an unchanged 50,000-step spec loads in 0.1 s, not 2 s.

YAML parsing is most of composing a large spec (libyaml calls back into Python for every node). A file of
at least MIN_BYTES that parsed cleanly is kept in `.mlspec/cache/parsed/` as the data PyYAML built, in
``marshal`` form, under a key made of its exact text, this module's format, the mlspec and PyYAML versions
and the parser's own source. Any change to any of them is a miss, and a miss parses the file as before.

What is stored is the file's own parse: never a composed value, never a value an interpolation or a
resolver produced (``${...}`` stays text). And nothing at all is stored for a spec that holds anything
sensitive (a ``secrets:`` entry, a ``{value, secret: true}`` param, a credential-named option, an
environment resolver, a secret override): :meth:`ParseCache.save` is given the composed spec's
sensitivity and writes only when it is empty. Entries are 0600 files, one per source file (an edit
replaces it); an unreadable, corrupt or foreign entry is a miss, never an error.
"""

from __future__ import annotations

import gc
import marshal
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlspec.yamlsrc import YamlSource, check_root, parse_yaml, read_yaml_text

FORMAT = b"mlspec-parsed 1"
MIN_BYTES = 64 * 1024  # about 450 steps; smaller files parse in a few milliseconds


def _key(text: str) -> str:
    import xxhash
    import yaml

    from mlspec import __version__, yamlplain, yamlsrc

    h = xxhash.xxh3_128()
    h.update(FORMAT + b"\0" + __version__.encode() + b"\0" + yaml.__version__.encode() + b"\0")
    for module in (yamlsrc, yamlplain):  # the parsers' own code: an upgrade or a developer's edit is a miss
        try:
            h.update(Path(module.__file__).read_bytes())
        except OSError:
            h.update(b"?")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _entry(cache_dir: Path, shown: str) -> Path:
    import xxhash

    return cache_dir / f"{xxhash.xxh3_64_hexdigest(shown.encode('utf-8', 'surrogatepass'))}.bin"


_MISS = object()


def _read(entry: Path, key: str):
    """The data stored under ``key`` at ``entry``, or _MISS."""
    import xxhash

    try:
        blob = entry.read_bytes()
    except OSError:
        return _MISS
    head, sep, payload = blob.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or b" ".join(parts[:2]) != FORMAT or parts[2] != key.encode():
        return _MISS
    if parts[3] != xxhash.xxh3_64_hexdigest(payload).encode():
        return _MISS
    gc_was_on = gc.isenabled()
    gc.disable()  # like parse_yaml: a collection per few hundred containers would rescan them all
    try:
        return marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return _MISS
    finally:
        if gc_was_on:
            gc.freeze()
            gc.enable()


@dataclass
class ParseCache:
    """Loads YAML files through the cache; remembers what it parsed until :meth:`save` decides."""

    cache_dir: Path
    pending: list = field(default_factory=list)  # (entry, header, payload) parsed this time
    hits: int = 0

    @classmethod
    def for_project(cls, project_dir: Path) -> "ParseCache":
        return cls(Path(project_dir) / ".mlspec" / "cache" / "parsed")

    def load(self, path: str | os.PathLike, shown: str, *, require_mapping: bool = True) -> YamlSource:
        """Like yamlsrc.load_yaml (same data, same diagnostics), from the cache when the text is known."""
        text = read_yaml_text(path, shown)
        if len(text) < MIN_BYTES:
            return parse_yaml(text, shown, require_mapping=require_mapping)
        key = _key(text)
        entry = _entry(self.cache_dir, shown)
        data = _read(entry, key)
        if data is not _MISS:
            src = YamlSource(file=shown, data=data, text=text)  # positions: parsed again if a message needs one
            check_root(src, require_mapping)
            self.hits += 1
            return src
        src = parse_yaml(text, shown, require_mapping=require_mapping)
        try:
            # the bytes now: composition shares (and overrides may change) these very dicts
            payload = marshal.dumps(src.data)
        except ValueError:  # a value marshal cannot hold (e.g. an explicit !!timestamp): not cached
            return src
        import xxhash

        header = b" ".join([FORMAT, key.encode(), xxhash.xxh3_64_hexdigest(payload).encode()])
        self.pending.append((entry, header + b"\n" + payload))
        return src

    def save(self, sensitivity) -> None:
        """Write what was parsed, unless the composed spec holds anything sensitive (then write nothing)."""
        pending, self.pending = self.pending, []
        if sensitivity.paths or sensitivity.values:
            return
        from mlspec.storage import atomic_write_local

        for entry, blob in pending:
            try:
                atomic_write_local(entry, blob, durable=False)  # a cache: a lost entry is only a miss
            except OSError:
                pass  # a read-only project still works, only slower
