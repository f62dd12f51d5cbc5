"""Backend discovery through the ``mlspec.backends`` entry-point group (local registers there too).

A broken plugin never crashes mlspec: it is reported in one line with the command that fixes it.
"""

from __future__ import annotations

from functools import lru_cache

from mlspec.errors import MlspecError

GROUP = "mlspec.backends"
INSTALL_HINTS = {
    "ray": "pip install -e backends/ray   (from the mlspec repository)",
    "docker": "pip install -e backends/docker   (from the mlspec repository)",
}


@lru_cache(maxsize=None)
def _entry_points() -> dict:
    from mlspec.plugins import entry_points_of

    return {ep.name: ep for ep in entry_points_of(GROUP)}


def available_backend_names() -> list[str]:
    return sorted(_entry_points())


def backend_distribution(name: str) -> tuple[str, str]:
    ep = _entry_points().get(name)
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist else ("?", "?")


def load_backend_class(name: str):
    """The backend class for a type name; MlspecError with the install command when missing or broken."""
    ep = _entry_points().get(name)
    if ep is None:
        hint = INSTALL_HINTS.get(name, f"install the package that provides the '{name}' backend")
        installed = ", ".join(available_backend_names()) or "none"
        raise MlspecError(f"backend '{name}' is not installed (installed: {installed})", hint=f"install it: {hint}")
    try:
        return ep.load()
    except Exception as exc:  # a plugin may fail to import in any way
        hint = INSTALL_HINTS.get(name, f"reinstall the package providing '{name}'")
        raise MlspecError(f"backend '{name}' is installed but failed to load ({type(exc).__name__}: {exc})",
                          hint=f"reinstall it: {hint}") from None
