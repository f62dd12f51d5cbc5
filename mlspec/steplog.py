"""A step's ``logging`` records go to its log, like its prints, without the step configuring logging.

Every backend captures a step's prints by pointing ``sys.stdout``/``sys.stderr`` (file descriptors 1 and 2)
at the step's log while :func:`mlspec.runner.execute` runs. Python's ``logging`` unconfigured drops INFO
records and writes WARNING and above through ``logging.lastResort``. While the step's function runs,
:func:`captured` makes an unconfigured process behave like ``logging.basicConfig(level=INFO)`` did, but
without adding a handler, so a step (or its module) that configures logging itself still can and keeps
what it configured:

- ``logging.lastResort`` (the handler used when no handler is found) becomes one that writes INFO and above
  to whatever ``sys.stderr`` is at that moment (the step's log), as ``LEVEL logger: message``;
- the root logger's level goes from the default WARNING to INFO, when nothing has configured it (no
  handler on the root logger), and back afterwards unless the step set a level of its own.

A worker runs many steps: both are undone after each one.
"""

from __future__ import annotations

import contextlib
import logging
import sys


class _StderrNow(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (backends swap it per step)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns it; the current sys.stderr always wins
        pass


_HANDLER = _StderrNow()


@contextlib.contextmanager
def captured(level: int = logging.INFO):
    """Route ``logging`` records of ``level`` and above to the step's log while the block runs."""
    root = logging.getLogger()
    old_last_resort = logging.lastResort
    _HANDLER.setLevel(level)
    logging.lastResort = _HANDLER
    lowered = not root.handlers and root.level == logging.WARNING
    if lowered:
        root.setLevel(level)
    try:
        yield
    finally:
        logging.lastResort = old_last_resort
        if lowered and root.level == level:
            root.setLevel(logging.WARNING)
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
