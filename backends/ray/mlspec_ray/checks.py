"""Resource checks of preflight: can any node of the cluster run a task asking for these resources?"""

from __future__ import annotations

from typing import Mapping


def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}{'' if n == 1 else 's'}"


def resource_issues(resources: Mapping, nodes: list, where: str) -> list[str]:
    """Why no node of the cluster can run a task with these resources (an empty list when one can)."""
    def most(key):
        return max((float(n.get(key, 0)) for n in nodes), default=0.0)

    out = []
    cpus, gpus = float(resources.get("cpus") or 1), float(resources.get("gpus") or 0)
    if cpus > most("CPU"):
        out.append(f"asks for {_plural(cpus, 'CPU')}; the largest node of {where} has {most('CPU'):g}")
    if gpus > 0:
        if most("GPU") == 0:
            out.append(f"asks for {_plural(gpus, 'GPU')}; {where} has none")
        elif gpus > most("GPU"):
            out.append(f"asks for {_plural(gpus, 'GPU')}; the largest node of {where} has {most('GPU'):g}")
    mem = resources.get("memory")
    if mem and "memory" in (nodes[0] if nodes else {}) and float(mem) > most("memory"):
        out.append(f"asks for {float(mem) / 2**30:.1f} GiB of memory; the largest node of {where} has "
                   f"{most('memory') / 2**30:.1f} GiB")
    for name, amount in sorted((resources.get("custom") or {}).items()):
        have = most(name)
        if have == 0:
            out.append(f"asks for custom resource '{name}' ({float(amount):g}); {where} has none")
        elif float(amount) > have:
            out.append(f"asks for custom resource '{name}' ({float(amount):g}); the largest node of {where} "
                       f"has {have:g}")
    return out


def group_by_step(issues: list) -> list[str]:
    """One message per step and problem: matrix instances with the same problem are named once."""
    by_key: dict = {}
    for address, text in issues:
        by_key.setdefault((address.split("[", 1)[0], text), []).append(address)
    out = []
    for (base, text), addrs in by_key.items():
        who = addrs[0] if len(addrs) == 1 else f"{base} ({len(addrs)} instances)"
        out.append(f"{who} {text}")
    return out
