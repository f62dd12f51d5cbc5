"""The core: resource kinds, planning and applying over them, and the vocabulary they share.

    types.py   actions, verdicts, reasons, statuses, events (below everything else here)
    kind.py    the ResourceKind protocol, nodes and the kind registry
    apply.py   apply(plan, ...) -> ApplyResult: the whole apply but the lock and the confirmation
"""
