"""compose -> validate -> Spec: the one entry point commands use to read a project's spec."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Sequence

from mlspec.compose import Composed, compose
from mlspec.errors import Diagnostic, SpecError
from mlspec.schema import schema_diagnostics
from mlspec.semantic import semantic_diagnostics
from mlspec.spec import Spec, build_spec


def backend_types() -> tuple:
    """Backend types a spec may name: built-in config groups plus installed plugins."""
    from mlspec.backends.registry import available_backend_names

    return tuple(sorted(set(available_backend_names()) | {"local", "ray", "docker"}))


def format_names() -> tuple:
    """Data formats a spec may name: built-ins plus installed plugins (their names only: nothing is imported)."""
    from mlspec.formats import names

    return tuple(names())


def validate_composed(c: Composed) -> list[Diagnostic]:
    schema = schema_diagnostics(c.data, c.sources)
    semantic = semantic_diagnostics(c.data, c.sources, backend_types(), format_names())
    # where both speak about one key, the semantic check says it better (it knows the grammar)
    covered = {d.path for d in semantic}
    found = set(semantic) | {d for d in schema if d.path not in covered}
    # a key whose interpolation failed holds None: its own diagnostic says why, drop the echoes
    failed = [d.path for d in c.diagnostics]

    def echoes(d: Diagnostic) -> bool:
        return any(d.path == p or d.path.startswith((p + ".", p + "[")) for p in failed)

    return sorted(set(c.diagnostics) | {d for d in found if not echoes(d)})


VALIDATED_KEEP = 32


def masked_canonical(c: Composed) -> bytes:
    """Canonical JSON of the composed spec with sensitive values masked: the validation key and the spec
    digest both hash it, so it is made once (0.3 s at 50,000 steps)."""
    cached = getattr(c, "_masked_canonical", None)
    if cached is None:
        from mlspec.sensitive import mask
        from mlspec.spec import _canonical

        cached = c._masked_canonical = _canonical(mask(c.data, c.sensitive) if c.sensitive.paths else c.data)
    return cached


def _validation_key(c: Composed) -> str:
    """What a validation verdict depends on: the composed spec (secrets masked), mlspec, schema, backends."""
    import xxhash

    from mlspec import __version__
    from mlspec.schema import load_schema
    from mlspec.spec import _canonical

    h = xxhash.xxh3_128()
    h.update(masked_canonical(c))
    h.update(_canonical([__version__, load_schema(), backend_types(), format_names()]))
    return h.hexdigest()


def _validated_cache(c: Composed) -> Path:
    return c.sources.project_dir / ".mlspec" / "cache" / "validated.json"


def _known_valid(c: Composed) -> tuple[bool, str, list]:
    """(whether this composed spec passed validation before, its validation key, the remembered keys)."""
    import json

    try:
        key = _validation_key(c)
    except TypeError:  # keys JSON cannot sort (a number next to names): invalid, and not remembered
        return False, "", []
    try:
        known = json.loads(_validated_cache(c).read_text())
    except (OSError, ValueError):
        known = []
    if not isinstance(known, list):
        known = []
    return key in known, key, known


def _remember_valid(c: Composed, key: str, known: list) -> None:
    import json

    from mlspec.storage import atomic_write_local

    try:
        atomic_write_local(_validated_cache(c), json.dumps(([key] + [k for k in known if k != key])[:VALIDATED_KEEP]
                                                           ).encode(), durable=False)
    except OSError:
        pass  # a read-only project still works, only slower


def validate_cached(c: Composed) -> list[Diagnostic]:
    """validate_composed(), remembering specs that passed: re-planning an unchanged large spec skips the
    schema and semantic checks (half of a no-op plan at 2,000 steps). `mlspec validate` always checks."""
    valid, key, known = _known_valid(c)
    if valid:
        return []
    diags = validate_composed(c)
    if not diags and key:
        _remember_valid(c, key, known)
    return diags


# A spec this large is validated in a child process while the caller builds the Spec and its graph from
# the same data (both take about 1 s at 50,000 steps; the machines mlspec runs on have two cores or more).
PARALLEL_MIN_STEPS = 2_000


class Verdict:
    """Whether the composed spec is valid: known at once (remembered, or checked here), or being checked
    by a forked child (Linux) while the caller goes on. :meth:`wait` raises SpecError for an invalid spec.

    Nothing the caller does before :meth:`wait` may act on the spec (no file written for it, no process
    started, nothing printed): a spec found invalid is reported exactly as if validation had come first.
    The child only computes; it writes nothing but its answer to a pipe and ends with ``os._exit``.
    """

    def __init__(self, c: Composed, diags: list[Diagnostic] | None = None, remember: tuple | None = None):
        self.c = c
        self.diags = diags  # None while the child works
        self.remember = remember  # (key, known) to record a pass in .mlspec/cache/validated.json
        self.pid = 0
        self.fd = -1

    @classmethod
    def start(cls, c: Composed, *, recheck: bool = False) -> "Verdict":
        """The verdict on ``c``: remembered (unless ``recheck``), or checked (in a child for a large spec)."""
        valid, key, known = _known_valid(c)
        if valid and not recheck:
            return cls(c, [])
        v = cls(c, None, (key, known) if key else None)
        steps = c.data.get("steps") if isinstance(c.data, dict) else None
        if not (sys.platform.startswith("linux") and isinstance(steps, dict) and len(steps) >= PARALLEL_MIN_STEPS
                and v._fork()):
            v.diags = validate_composed(c)
        return v

    def _fork(self) -> bool:
        import os
        import threading

        if threading.active_count() > 1:  # a fork copies one thread: another one's locks could stay held
            return False
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return False
        if pid == 0:  # the child: check, answer, end without running anything of the parent's (no flush, no atexit)
            import gc
            import pickle

            code = 1
            try:
                os.close(r)
                gc.disable()
                answer = pickle.dumps(validate_composed(self.c), protocol=pickle.HIGHEST_PROTOCOL)
                view = memoryview(answer)
                while view:
                    view = view[os.write(w, view):]
                code = 0
            except BaseException:  # noqa: BLE001 - any failure: the parent validates in-process, and reports it
                pass
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self.fd = pid, r
        return True

    def _collect(self) -> None:
        import os
        import pickle

        chunks = []
        try:
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            self.fd = -1
            _pid, status = os.waitpid(self.pid, 0)
            self.pid = 0
        diags = None
        if os.waitstatus_to_exitcode(status) == 0:
            try:
                diags = pickle.loads(b"".join(chunks))
            except Exception:  # noqa: BLE001 - a torn answer: check here instead
                diags = None
        self.diags = diags if isinstance(diags, list) else validate_composed(self.c)

    def diagnostics(self) -> list[Diagnostic]:
        """Every problem found (waiting for the child if it still works); a pass is remembered."""
        if self.diags is None:
            self._collect()
        if self.remember is not None and not self.diags:
            _remember_valid(self.c, *self.remember)
            self.remember = None
        return self.diags

    def wait(self, extra: Sequence[Diagnostic] = ()) -> None:
        """Raise SpecError when the spec is invalid (with ``extra``, problems the caller found); else return."""
        diags = self.diagnostics()
        if diags or extra:
            raise SpecError(list(diags) + list(extra))  # the checks' problems, then the caller's (as validate)

    def abandon(self) -> None:
        """Stop the child (the caller is ending: an interrupt)."""
        import os
        import signal

        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load_spec(project_dir: str | Path = ".", spec_file: str | None = None, overrides: Sequence[str] = (),
              *, check_imports: bool = False) -> Spec:
    """Compose, validate and build the Spec; raises SpecError listing every problem."""
    return load_spec_deferred(project_dir, spec_file, overrides, check_imports=check_imports, defer=False)[0]


def load_spec_deferred(project_dir: str | Path = ".", spec_file: str | None = None, overrides: Sequence[str] = (),
                       *, check_imports: bool = False, defer: bool = True) -> tuple[Spec, Verdict]:
    """Compose and build the Spec while it is validated (see :class:`Verdict`): the caller must call
    ``verdict.wait()`` before acting on the spec. With ``defer=False``, validated first, as load_spec."""
    c = compose(project_dir, spec_file, overrides)
    early = sensitive_diagnostics(c)
    verdict = Verdict.start(c) if defer and not check_imports and not early else Verdict(c, validate_cached(c))
    if not defer or early or check_imports:
        verdict.wait(early)
    try:
        spec = build_spec(c.data, project_dir=c.sources.project_dir, spec_file=c.spec_file,
                          sensitive=c.sensitive, choices=c.choices, canonical=masked_canonical(c))
    except BaseException:
        settle(verdict)
        raise
    import gc

    gc.freeze()  # the spec lives as long as the command: the cyclic collector need not rescan it
    if check_imports:
        diags = import_diagnostics(spec, c)
        if diags:
            raise SpecError(diags)
    return spec, verdict


def settle(verdict: Verdict) -> None:
    """After a failure while the verdict was pending: an invalid spec explains it (SpecError); an interrupt
    stops the child; otherwise the failure stands."""
    if isinstance(sys.exc_info()[1], KeyboardInterrupt):
        verdict.abandon()
        return
    verdict.wait()


def sensitive_diagnostics(c: Composed) -> list[Diagnostic]:
    """Places a sensitive value may not go: a matrix value becomes part of an address, printed everywhere."""
    bad = sorted({p[:4] for p in c.sensitive.paths if len(p) >= 4 and p[0] == "steps" and p[2] == "matrix"})
    return [c.sources.diag(p, "sensitive-matrix",
                           "a matrix value may not be sensitive (it becomes part of the step's address, which "
                           "plans, logs and state show): pass the secret as a param instead") for p in bad]


def code_paths(project_dir: Path) -> list[str]:
    """Directories on the import path of `run:` targets: the project, and its src/ when present."""
    paths = [str(project_dir)]
    if (project_dir / "src").is_dir():
        paths.append(str(project_dir / "src"))
    return paths


def import_diagnostics(spec: Spec, c: Composed) -> list[Diagnostic]:
    """Import every `run:` target (runs module-level user code: only with --check-imports)."""
    diags = []
    added = [p for p in code_paths(spec.project_dir) if p not in sys.path]
    sys.path[:0] = added
    try:
        for name, step in spec.steps.items():
            if not step.run:
                continue
            mod_name, _, func = step.run.partition(":")
            try:
                mod = importlib.import_module(mod_name)
            except Exception as exc:  # user code may raise anything at import
                diags.append(c.sources.diag(("steps", name, "run"), "import-error",
                                            f"cannot import module '{mod_name}': {type(exc).__name__}: {exc}"))
                continue
            target = getattr(mod, func, None)
            if target is None:
                diags.append(c.sources.diag(("steps", name, "run"), "import-error",
                                            f"module '{mod_name}' has no attribute '{func}'"))
            elif not callable(target):
                diags.append(c.sources.diag(("steps", name, "run"), "import-error",
                                            f"'{step.run}' is not callable"))
    finally:
        for p in added:
            sys.path.remove(p)
    return diags
