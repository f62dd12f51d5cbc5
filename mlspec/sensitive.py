"""Sensitive values: which parts of a composed spec are secret, and the redaction that keeps them in.

A value is sensitive when it comes from

* ``secrets.*`` (in the spec, a config group or a ``secrets.X=...`` override),
* ``{value: ..., secret: true}``,
* any environment resolver (``${oc.env:VAR}``, ``${env:VAR}``), or
* a key under ``storage.options`` or a backend's settings whose name looks like a credential
  (``key``, ``secret``, ``token``, ``password``, ...).

Sensitivity follows the *value*: any string in the spec that contains a sensitive value (an
interpolation of it, a ``cmd`` that concatenates it, an item of a list, a leaf of a nested mapping) is
itself sensitive. That is what makes it propagate through interpolation and containers without
re-implementing OmegaConf's resolver graph.

Two layers use this:

1. **Structure.** :func:`mask` replaces sensitive leaves of plain data before it is persisted or
   shown (the spec's ``config``, step facts through keyed fingerprints, overrides).
2. **A last line of defence.** :data:`REDACTOR` holds every sensitive value this process has seen; the
   CLI's output streams, metadata writes (state, journal, run records, plan files, crash logs) and
   step logs pass through it, so a value that slipped past the structural layer (an error message
   quoting it, a step printing it) is replaced by ``(sensitive)`` instead of being written. It is
   process-wide on purpose: output anywhere in the process must be covered, like a CI system's log
   masking.

Values shorter than :data:`MIN_FREE_TEXT` characters are masked where they appear as whole values in
structured data, but cannot be searched for in free text (a one-character secret would blank out every
occurrence of that letter); docs/security.md says so.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

MASK = "(sensitive)"
MIN_FREE_TEXT = 4

# a key whose name looks like a credential (storage.options, backend settings)
CREDENTIAL_NAME = re.compile(
    r"(^|[_\-.])(key|keys|secret|secrets|token|tokens|password|passwd|passphrase|pass|pwd|credential|credentials|"
    r"auth|authorization|session|private|signature|cert|certificate|sas|apikey|api_key|access_key|secret_key)"
    r"($|[_\-.])|secret|token|passw|credential|apikey|private_key",
    re.IGNORECASE)
# names that every plan and message shows by design: an environment variable may choose them (the workspace
# from the CI branch) without making them sensitive. A `${secrets.X}` there is still sensitive.
PUBLIC_PATHS = frozenset({("project",), ("storage", "workspace")})
_ENV_RESOLVER = re.compile(r"\$\{\s*(oc\.env|env)\s*:")
_SECRET_REF = re.compile(r"\$\{\s*secrets\.")


_ENV_NAME = re.compile(r"\$\{\s*(?:oc\.env|env)\s*:\s*([A-Za-z_][A-Za-z0-9_]*)")


def _from_environment(text: str) -> bool:
    """Whether an interpolation takes a value from the environment (a default written in the spec is not)."""
    if not _ENV_RESOLVER.search(text):
        return False
    import os

    names = _ENV_NAME.findall(text)
    return not names or any(n in os.environ for n in names)


def looks_like_credential(name: str) -> bool:
    return bool(CREDENTIAL_NAME.search(str(name)))


@dataclass(frozen=True)
class Sensitivity:
    paths: frozenset = frozenset()  # key paths (tuples) whose values are sensitive
    values: frozenset = frozenset()  # the sensitive scalars, as text

    def __repr__(self) -> str:  # never print the values
        return f"Sensitivity({len(self.paths)} paths, {len(self.values)} values)"

    def __bool__(self) -> bool:
        return bool(self.values)


def _leaves(node: Any, path: tuple) -> Iterable[tuple[tuple, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    else:
        yield path, node


def _scalar_text(v: Any) -> str | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return str(v)
    return None


def find(data: Mapping, interpolations: Iterable[tuple[tuple, str]] = ()) -> Sensitivity:
    """The sensitive paths and values of composed, resolved data.

    ``interpolations`` are (key path, raw text) of the spec's ``${...}`` values before resolution: an
    environment resolver or a ``${secrets.X}`` makes the resolved value at that path sensitive.
    """
    sources: set = set()  # paths of values that are sensitive by origin
    secrets = data.get("secrets") if isinstance(data, Mapping) else None
    if isinstance(secrets, dict):
        sources.update(("secrets", k) for k in secrets)
    for path, text in interpolations:
        if _SECRET_REF.search(text) or (_from_environment(text) and tuple(path) not in PUBLIC_PATHS):
            sources.add(tuple(path))
    storage = data.get("storage") if isinstance(data, Mapping) else None
    if isinstance(storage, dict) and isinstance(storage.get("options"), dict):
        _credential_keys(storage["options"], ("storage", "options"), sources)
    backend = data.get("backend") if isinstance(data, Mapping) else None
    if isinstance(backend, dict):
        _credential_keys(backend, ("backend",), sources)
    backends = data.get("backends") if isinstance(data, Mapping) else None
    if isinstance(backends, dict):
        for name, b in backends.items():
            if isinstance(b, dict):
                _credential_keys(b, ("backends", name), sources)
    for name, step in ((data.get("steps") or {}).items() if isinstance(data.get("steps"), dict) else ()):
        if isinstance(step, dict) and isinstance(step.get("params"), dict):  # {value, secret: true} lives here
            _secret_objects(step["params"], ("steps", name, "params"), sources)

    values: set = set()
    for p in sources:
        node = _get(data, p)
        for _lp, leaf in _leaves(node, ()):
            t = _scalar_text(leaf)
            if t:
                values.add(t)
    if not values:
        return Sensitivity(frozenset(sources), frozenset())
    paths = set(sources)
    finder = Redactor(values)
    for p, leaf in _leaves(data, ()):
        if finder.matches(leaf):
            paths.add(p)
    return Sensitivity(frozenset(paths), frozenset(values))


def _get(data: Any, path: tuple) -> Any:
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _credential_keys(node: dict, path: tuple, out: set) -> None:
    for k, v in node.items():
        if looks_like_credential(k):
            out.add(path + (k,))
        elif isinstance(v, dict):
            _credential_keys(v, path + (k,), out)


def _secret_objects(node: Any, path: tuple, out: set) -> None:
    if isinstance(node, dict):
        if set(node) == {"value", "secret"} and node.get("secret") is True:
            out.add(path + ("value",))
            return
        for k, v in node.items():
            _secret_objects(v, path + (k,), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _secret_objects(v, path + (i,), out)


class Redactor:
    """Finds and replaces sensitive values in data and text. Thread-safe to add to and to use."""

    def __init__(self, values: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._exact: frozenset = frozenset()
        self._pattern: re.Pattern | None = None
        self._bytes_pattern: re.Pattern | None = None
        self.add(values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._exact)} values)"

    def __bool__(self) -> bool:
        return bool(self._exact)

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if isinstance(v, str) and v}
        if not new or new <= self._exact:
            return
        with self._lock:
            exact = self._exact | new
            needles = set()
            for v in exact:
                if len(v) < MIN_FREE_TEXT:
                    continue
                needles.add(v)
                # the forms a value takes inside JSON text (escaped, ASCII-escaped) and in repr()
                needles.add(json.dumps(v)[1:-1])
                needles.add(json.dumps(v, ensure_ascii=False)[1:-1])
                needles.add(repr(v)[1:-1])
            ordered = tuple(sorted(needles, key=lambda s: (-len(s), s)))
            self._exact = frozenset(exact)
            if ordered:
                self._pattern = re.compile("|".join(re.escape(n) for n in ordered))
                self._bytes_pattern = re.compile(b"|".join(re.escape(n.encode("utf-8", "surrogatepass"))
                                                           for n in ordered))

    @property
    def values(self) -> frozenset:
        return self._exact

    def matches(self, leaf: Any) -> bool:
        """Whether a scalar is, or contains, a sensitive value."""
        t = _scalar_text(leaf)
        if t is None or not self._exact:
            return False
        if t in self._exact:
            return True
        return isinstance(leaf, str) and self._pattern is not None and self._pattern.search(t) is not None

    def text(self, s: str) -> str:
        if not s or self._pattern is None:
            return s
        return self._pattern.sub(MASK, s)

    def bytes(self, b: bytes) -> bytes:
        if not b or self._bytes_pattern is None:
            return b
        return self._bytes_pattern.sub(MASK.encode(), b)

    def data(self, node: Any, replace: Callable[[Any], Any] | None = None) -> Any:
        """A copy of plain data with every sensitive scalar replaced (by MASK, or by ``replace(leaf)``)."""
        if not self._exact:
            return node
        if isinstance(node, dict):
            return {k: self.data(v, replace) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [self.data(v, replace) for v in node]
        if self.matches(node):
            return replace(node) if replace else MASK
        return node


def mask(data: Any, sensitivity: Sensitivity) -> Any:
    """Plain data with every sensitive path and every value containing a sensitive value masked."""
    paths = sensitivity.paths
    if not paths and not sensitivity.values:
        return data

    def walk(node: Any, path: tuple) -> Any:
        if path in paths:
            if isinstance(node, dict):
                return {k: walk(v, path + (k,)) if isinstance(v, (dict, list)) else MASK for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v, path + (i,)) if isinstance(v, (dict, list)) else MASK for i, v in enumerate(node)]
            return MASK
        if isinstance(node, dict):
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path + (i,)) for i, v in enumerate(node)]
        return node

    return Redactor(sensitivity.values).data(walk(data, ()))


def is_sensitive_key(key: str) -> bool:
    """Whether an override's key names a sensitive place by itself (``secrets.X``, a credential option)."""
    bare = key.lstrip("+~")
    if bare.startswith("secrets."):
        return True
    return bare.startswith(("storage.options.", "backend.", "backends.")) and looks_like_credential(
        bare.rsplit(".", 1)[-1])


def mask_overrides(overrides: Iterable[str], sensitivity: Sensitivity | None = None) -> list[str]:
    """Overrides as they may be stored or shown: a sensitive one keeps its key, its value is masked."""
    r = Redactor(sensitivity.values) if sensitivity else REDACTOR
    out = []
    for text in overrides:
        key, eq, value = text.partition("=")
        bare = key.lstrip("+~")
        if eq and (is_sensitive_key(bare) or r.matches(value) or (sensitivity and tuple(bare.split(".")) in sensitivity.paths)):
            out.append(f"{key}={MASK}")
        else:
            out.append(r.text(text))
    return out


def is_masked_override(text: str) -> bool:
    return text.endswith("=" + MASK)


# The process-wide last line of defence: every value a composed spec marked sensitive.
REDACTOR = Redactor()


def register(sensitivity: Sensitivity) -> None:
    REDACTOR.add(sensitivity.values)


def scrub(node: Any, redactor: Redactor | None = None) -> Any:
    """The last line of defence for a record about to be written: every string (keys included) with each
    sensitive value replaced by ``(sensitive)``. Numbers are left alone (they are masked structurally)."""
    r = redactor if redactor is not None else REDACTOR
    if not r:
        return node
    if isinstance(node, str):
        return r.text(node)
    if isinstance(node, dict):
        return {r.text(k) if isinstance(k, str) else k: scrub(v, r) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [scrub(v, r) for v in node]
    return node


class RedactingStream:
    """Wraps a text stream (stdout, stderr, a log file) so nothing sensitive is written through it."""

    def __init__(self, stream, redactor: Redactor = REDACTOR):
        self._stream = stream
        self._redactor = redactor

    def write(self, s: str) -> int:
        self._stream.write(self._redactor.text(s) if self._redactor else s)
        return len(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
