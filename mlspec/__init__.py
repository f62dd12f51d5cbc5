"""mlspec: declare the ML lifecycle in versioned YAML, plan it, apply it anywhere."""

__version__ = "0.1.0"

SPEC_FORMAT_VERSION = 1
