"""`mlspec graph`: the resource graph, datasets to monitors, as text, Mermaid or Graphviz dot."""

from __future__ import annotations

from mlspec.console import Console
from mlspec.graph import expand
from mlspec.load import load_spec


def edges_of(spec) -> tuple[list[str], list[tuple[str, str]]]:
    nodes: list[str] = [f"dataset.{n}" for n in sorted(spec.datasets)]
    edges: set = set()
    instances = expand(spec)
    for inst in instances:
        nodes.append(inst.address)
        for r in inst.inputs:
            edges.add((r.resource, inst.address))
    by_step: dict = {}
    for inst in instances:
        by_step.setdefault(inst.step.name, []).append(inst.address)
    for name, m in sorted(spec.models.items()):
        addr = f"model.{name}"
        nodes.append(addr)
        for src in (m.source, m.metrics):
            if src:
                base = src.split("[", 1)[0].split(".")
                step = base[1] if len(base) > 1 else ""
                for inst_addr in by_step.get(step, []):
                    edges.add((inst_addr, addr))
    for name, d in sorted(spec.deployments.items()):
        addr = f"deployment.{name}"
        nodes.append(addr)
        edges.add((f"model.{d.model.split('@', 1)[0]}", addr))
    for name, m in sorted(spec.monitors.items()):
        addr = f"monitor.{name}"
        nodes.append(addr)
        edges.add((f"deployment.{m.deployment}", addr))
        ref = m.reference.split(".")
        src = m.reference if ref[0] == "dataset" else None
        if src:
            edges.add((src, addr))
        else:
            for inst_addr in by_step.get(ref[1].split("[", 1)[0], []):
                edges.add((inst_addr, addr))
    for name, t in sorted(spec.triggers.items()):
        addr = f"trigger.{name}"
        nodes.append(addr)
        if t.monitor:
            edges.add((f"monitor.{t.monitor}", addr))
        if t.dataset:
            edges.add((t.dataset, addr))
        for target in t.apply:
            tb = target.split(".")
            for inst_addr in (by_step.get(tb[1].split("[", 1)[0], []) if tb[0] == "step" else [target]):
                edges.add((addr, inst_addr))
    return nodes, sorted(edges)


def run(args, console: Console) -> int:
    spec = load_spec(args.project_dir, args.file, args.overrides)
    nodes, edges = edges_of(spec)
    if args.format == "mermaid":
        ids = {n: f"n{i}" for i, n in enumerate(nodes)}
        out = ["graph LR"] + [f'  {ids[n]}["{n}"]' for n in nodes]
        out += [f"  {ids[a]} --> {ids[b]}" for a, b in edges if a in ids and b in ids]
        console.print("\n".join(out))
    elif args.format == "dot":
        out = [f'digraph "{spec.project}" {{', "  rankdir=LR;"] + [f'  "{n}";' for n in nodes]
        out += [f'  "{a}" -> "{b}";' for a, b in edges]
        console.print("\n".join(out + ["}"]))
    else:
        incoming: dict = {}
        for a, b in edges:
            incoming.setdefault(b, []).append(a)
        for n in nodes:
            ups = incoming.get(n)
            console.print(f"{n}" + (f"  <- {', '.join(sorted(ups))}" if ups else ""))
    return 0
