"""Backends: where steps run. The core knows only :mod:`mlspec.backends.api`."""
