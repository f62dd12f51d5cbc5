"""Turn data/prepared/{train,test}.tsv into TF-IDF matrices: data/features/{train,test}.pkl.

Each pickle holds {"ids", "labels", "X" (a scipy sparse matrix), "features" (the vocabulary, in column
order)}. The vocabulary and the IDF weights are fitted on the train split only.

Usage: python src/featurization.py PREPARED_DIR OUTPUT_DIR
       (reads featurize.max_features and featurize.ngrams from params.yaml)
"""

import os
import pickle
import sys

import numpy as np
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer


def read(path: str):
    ids, labels, texts = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            pid, label, text = line.rstrip("\n").split("\t", 2)
            ids.append(int(pid))
            labels.append(int(label))
            texts.append(text)
    return np.array(ids), np.array(labels), texts


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    with open("params.yaml") as fh:
        params = yaml.safe_load(fh)["featurize"]
    vec = TfidfVectorizer(max_features=params["max_features"], ngram_range=(1, params["ngrams"]),
                          token_pattern=r"(?u)\b\w[\w#+]*")
    os.makedirs(out, exist_ok=True)
    for split in ("train", "test"):
        ids, labels, texts = read(os.path.join(src, f"{split}.tsv"))
        X = vec.fit_transform(texts) if split == "train" else vec.transform(texts)
        with open(os.path.join(out, f"{split}.pkl"), "wb") as fh:
            pickle.dump({"ids": ids, "labels": labels, "X": X.tocsr(),
                         "features": list(vec.get_feature_names_out())}, fh)


if __name__ == "__main__":
    main()
