from pl import util


def load(raw: str):
    with open(raw) as fh:
        return {"table": {"rows": [ln.strip() for ln in fh if ln.strip()]}}


def features(table: dict, window: int):
    return {"feats": {"n": len(table["rows"]), "window": window}}


def train(feats: dict, C: float, **extra):
    return {"model": {"w": util.weight(feats["n"], C)}}


def report(model: dict):
    return {"quality": model["w"] / 10}
