"""Score model.pkl on both splits: nested metrics, precision-recall and ROC curves, confusion matrices and
the forest's feature importances.

Usage:
  python src/evaluate.py MODEL FEATURES_DIR --metrics METRICS_JSON
      --prc TRAIN_JSON TEST_JSON --roc TRAIN_JSON TEST_JSON --confusion TRAIN_CSV TEST_CSV
      --importance IMPORTANCE_CSV

The metrics are written dvclive-style, nested by split: {"avg_prec": {"train": ..., "test": ...},
"roc_auc": {...}}. When run by mlspec, the same object also goes to $MLSPEC_METRICS_FILE, which is how a
command reports metrics to mlspec (recorded as avg_prec.train, avg_prec.test, ...).
"""

import argparse
import json
import os
import pickle

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, \
    roc_curve

MAX_POINTS = 200  # curves are thinned to at most this many points, to keep the plot files small


def thin(rows: list[dict]) -> list[dict]:
    step = max(1, -(-len(rows) // MAX_POINTS))
    return rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])


def write_json(path: str, doc) -> None:
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("features")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--prc", nargs=2, required=True, metavar=("TRAIN", "TEST"))
    ap.add_argument("--roc", nargs=2, required=True, metavar=("TRAIN", "TEST"))
    ap.add_argument("--confusion", nargs=2, required=True, metavar=("TRAIN", "TEST"))
    ap.add_argument("--importance", required=True)
    args = ap.parse_args()

    with open(args.model, "rb") as fh:
        model = pickle.load(fh)
    metrics: dict = {"avg_prec": {}, "roc_auc": {}}
    for i, split in enumerate(("train", "test")):
        with open(os.path.join(args.features, f"{split}.pkl"), "rb") as fh:
            data = pickle.load(fh)
        y, score = data["labels"], model.predict_proba(data["X"])[:, 1]
        metrics["avg_prec"][split] = round(float(average_precision_score(y, score)), 6)
        metrics["roc_auc"][split] = round(float(roc_auc_score(y, score)), 6)

        precision, recall, thresholds = precision_recall_curve(y, score)
        write_json(args.prc[i], {"prc": thin([
            {"recall": round(float(r), 6), "precision": round(float(p), 6), "threshold": round(float(t), 6)}
            for p, r, t in zip(precision, recall, thresholds)])})
        fpr, tpr, thresholds = roc_curve(y, score)
        write_json(args.roc[i], {"roc": thin([
            {"fpr": round(float(f), 6), "tpr": round(float(t), 6), "threshold": round(float(th), 6)}
            for f, t, th in zip(fpr, tpr, np.minimum(thresholds, 1.0))])})
        cm = confusion_matrix(y, model.predict(data["X"]), labels=[0, 1])
        with open(args.confusion[i], "w") as fh:
            fh.write("cell,count\n")
            for actual in (0, 1):
                for predicted in (0, 1):
                    fh.write(f"actual {actual} / predicted {predicted},{int(cm[actual, predicted])}\n")

    # DVC's example draws eval/importance.png with matplotlib; this one writes the bars as a CSV series
    # (the 20 most important words) and lets `mlspec plots show` draw them.
    order = np.argsort(model.feature_importances_)[::-1][:20]
    with open(args.importance, "w") as fh:
        fh.write("feature,importance\n")
        for j in order:
            fh.write(f"{data['features'][j]},{model.feature_importances_[j]:.6f}\n")

    write_json(args.metrics, metrics)
    if os.environ.get("MLSPEC_METRICS_FILE"):
        write_json(os.environ["MLSPEC_METRICS_FILE"], metrics)


if __name__ == "__main__":
    main()
