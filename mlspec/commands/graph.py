"""`mlspec graph`: the resource graph, datasets to triggers, as text, Mermaid or Graphviz dot.

Every registered resource kind contributes its nodes and edges (mlspec.core.kind); nothing here names one.
"""

from __future__ import annotations

from mlspec.console import Console
from mlspec.core.kind import kinds
from mlspec.load import load_spec


def edges_of(spec) -> tuple[list[str], list[tuple[str, str]]]:
    nodes_by_kind = [(k, k.nodes(spec)) for k in kinds()]
    names: list[str] = [n.address for _k, ns in nodes_by_kind for n in ns]
    by_addr = {n.address: n for _k, ns in nodes_by_kind for n in ns}
    edges: set = set()
    for k, ns in nodes_by_kind:
        for n in ns:
            edges.update((u, n.address) for u in n.upstream)
        edges.update(k.edges_for_graph(spec, by_addr))
    return names, sorted(edges)


def run(args, console: Console) -> int:
    spec = load_spec(args.project_dir, args.file, args.overrides)
    nodes, edges = edges_of(spec)
    if args.format == "json":
        from mlspec.views.formats import to_json

        console.print(to_json({"project": spec.project, "nodes": nodes, "edges": [list(e) for e in edges]}))
    elif args.format == "mermaid":
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
