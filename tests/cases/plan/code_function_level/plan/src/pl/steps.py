from pl import util


def load(raw: str):
    """Read the events, one per line."""  # a docstring and a comment: not a change
    with open(raw) as fh:
        return {"table": {"rows": [ln.strip() for ln in fh if ln.strip()]}}


def features(table: dict, window: int):
    return {"feats": {"n": len(table["rows"]) + 1, "window": window}}


def train(feats: dict, C: float, **extra):
    return {"model": {"w": util.weight(feats["n"], C)}}


def report(model: dict):
    return {"quality": model["w"] / 10}
