"""The built-in resource kinds, one module each, registered on import (see mlspec.core.kind).

A kind module imports mlspec.core.types and mlspec.core.kind, and what its own work needs (a step needs
the backends and the artifact store); never mlspec.commands or the views.
"""

from mlspec.kinds import dataset, deployment, lifecycle, model, step  # noqa: F401
