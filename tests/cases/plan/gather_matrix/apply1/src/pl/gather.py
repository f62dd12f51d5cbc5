def pick(models: dict):
    """models maps each matrix value of C to that instance's model: keep the heaviest."""
    best = max(models, key=lambda c: models[c]["w"])
    return {"best": {"C": best, **models[best]}}
