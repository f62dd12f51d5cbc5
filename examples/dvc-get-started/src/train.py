"""Fit a random forest on data/features/train.pkl and pickle it to model.pkl.

Usage: python src/train.py FEATURES_DIR OUTPUT_MODEL
       (reads train.seed, train.n_est and train.min_split from params.yaml)
"""

import os
import pickle
import sys

import yaml
from sklearn.ensemble import RandomForestClassifier


def main() -> None:
    features, out = sys.argv[1], sys.argv[2]
    with open("params.yaml") as fh:
        params = yaml.safe_load(fh)["train"]
    with open(os.path.join(features, "train.pkl"), "rb") as fh:
        train = pickle.load(fh)
    clf = RandomForestClassifier(n_estimators=params["n_est"], min_samples_split=params["min_split"],
                                 random_state=params["seed"], n_jobs=1)
    clf.fit(train["X"], train["labels"])
    with open(out, "wb") as fh:
        pickle.dump(clf, fh)


if __name__ == "__main__":
    main()
