"""One package per Kedro pipeline; each nodes.py holds its nodes, the spec (mlspec.yaml) wires them."""
