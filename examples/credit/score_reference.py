"""Writes estimation.csv: the champion's outputs on the reference rows
beside their ground truth (train.csv's `default`), which the collector's
performance estimation (NannyML's CBPE) is fitted on: `default` (the
actual class), `label` (the champion's predicted class) and `score` (its
probability of default, float32 as the agent reads it).

Run in a throwaway virtual environment with onnxruntime and numpy (the
one scripts/setup-ort makes will do):

    cd examples/credit && ../../.cache/ort/bin/python score_reference.py
"""

import csv

import numpy as np
import onnxruntime as ort

from train_models import matrix


def main():
    with open("train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    session = ort.InferenceSession("champion.onnx", providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {"features": matrix(rows)})
    with open("estimation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["default", "label", "score"])
        for r, l, p in zip(rows, label.tolist(), proba[:, 1].tolist()):
            w.writerow([r["default"], int(l), repr(float(np.float32(p)))])


if __name__ == "__main__":
    main()
