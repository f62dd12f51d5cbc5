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


def validate_cached(c: Composed) -> list[Diagnostic]:
    """validate_composed(), remembering specs that passed: re-planning an unchanged large spec skips the
    schema and semantic checks (half of a no-op plan at 2,000 steps). `mlspec validate` always checks."""
    import json

    key = _validation_key(c)
    path = _validated_cache(c)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = []
    if key in known:
        return []
    diags = validate_composed(c)
    if not diags:
        from mlspec.storage import atomic_write_local

        try:
            atomic_write_local(path, json.dumps(([key] + [k for k in known if k != key])[:VALIDATED_KEEP]).encode(),
                               durable=False)
        except OSError:
            pass  # a read-only project still works, only slower
    return diags


def load_spec(project_dir: str | Path = ".", spec_file: str | None = None, overrides: Sequence[str] = (),
              *, check_imports: bool = False) -> Spec:
    """Compose, validate and build the Spec; raises SpecError listing every problem."""
    c = compose(project_dir, spec_file, overrides)
    diags = validate_cached(c) + sensitive_diagnostics(c)
    if diags:
        raise SpecError(diags)
    spec = build_spec(c.data, project_dir=c.sources.project_dir, spec_file=c.spec_file,
                      sensitive=c.sensitive, choices=c.choices, canonical=masked_canonical(c))
    import gc

    gc.freeze()  # the spec lives as long as the command: the cyclic collector need not rescan it
    if check_imports:
        diags = import_diagnostics(spec, c)
        if diags:
            raise SpecError(diags)
    return spec


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
