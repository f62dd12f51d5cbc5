"""The error a backend raises for a user-fixable problem (mlspec.backends.api.BackendError when present)."""

from __future__ import annotations

try:  # mlspec >= the release that added it: the CLI prints it as a user error (exit 1), not a crash
    from mlspec.backends.api import BackendError
except ImportError:  # pragma: no cover - older mlspec
    class BackendError(RuntimeError):
        def __init__(self, message: str, *, hint: str = ""):
            super().__init__(message)
            self.message, self.hint = message, hint


def one_line(exc: BackendError) -> str:
    """The error as one preflight line: message, then the hint in parentheses."""
    return exc.message + (f" ({exc.hint})" if getattr(exc, "hint", "") else "")
