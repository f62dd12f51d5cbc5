"""Pause the cyclic garbage collector while a large, long-lived object graph is built.

Planning a 50,000-step spec allocates millions of objects that all live until the command ends (the
spec, its instances, the plan's changes). With the collector on, every 100,000 allocations it scans the
young objects, and every one of them survives: 0.3 s of a cold plan at 50,000 steps did nothing else.
``paused()`` turns it off for the block, then freezes what the block left alive (moved out of the
collector's generations: it is still freed by reference counting) and turns it back on. Used as a
decorator on the functions that build such graphs; nested uses are cheap (only the outermost freezes).
"""

from __future__ import annotations

import functools
import gc


def paused(func):
    """Run ``func`` with the cyclic collector off; what it built is frozen afterwards (see the module)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if not gc.isenabled():  # nested, or the caller manages the collector itself
            return func(*args, **kwargs)
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.freeze()
            gc.enable()

    return wrapper


# --- the end of the process -------------------------------------------------------------------------
# Freeing a 50,000-step plan object by object when a command's locals go out of scope costs 0.3-0.5 s of
# CPU (millions of deallocations, and the memory handed back to the system page by page); the operating
# system reclaims the whole process at exit for nothing. The console script (mlspec.cli.main with no argv)
# turns this on; a caller that runs commands in-process (the tests) keeps the default, so nothing outlives
# the call that made it.
_kept: list | None = None


def keep_until_exit() -> None:
    """From now on, :func:`outlive` keeps what it is given for the life of the process."""
    global _kept
    if _kept is None:
        _kept = []


def outlive(*objs) -> None:
    """Let large, command-long objects be reclaimed with the process instead of one by one (see above)."""
    if _kept is not None:
        _kept.append(objs)
