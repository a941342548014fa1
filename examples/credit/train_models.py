"""Trains the example credit-risk model pair and exports it to ONNX.

Run in a throwaway virtual environment (nothing here is a runtime
dependency of driftwatch):

    python3 -m venv /tmp/trainenv
    /tmp/trainenv/bin/pip install scikit-learn skl2onnx onnxruntime==1.31.1 numpy
    cd examples/credit && /tmp/trainenv/bin/python train_models.py

Writes (all committed, all small):
  train.csv        reference.csv plus the `default` label the models learnt
                   (a seeded synthetic ground truth)
  champion.onnx    imputer + scaler + logistic regression (production model)
  challenger.onnx  imputer + gradient boosting (the shadow candidate)
  employment.onnx  a multiclass classifier with string labels, and
  loan.onnx        a regressor, both on the five other columns (the
                   agent's tests read every kind of output)
  expected.json    onnxruntime's own outputs of both models on the first 32
                   rows (a missing value is null), which the agent's tests
                   compare with

Both models take one input `features`: float32 [N, 6] with the columns
FEATURES below (has_card as 0/1, a missing bureau score as NaN), and give
`label` (int64 [N]) and `probabilities` (float32 [N, 2]).
"""

import csv
import json
import math
import random

import numpy as np
import onnxruntime as ort

FEATURES = ["age", "income", "loan_amount", "bureau_score", "dependents", "has_card"]


def matrix(rows):
    def num(v):
        return float("nan") if v == "" else float(v)

    return np.array(
        [
            [
                num(r["age"]),
                num(r["income"]),
                num(r["loan_amount"]),
                num(r["bureau_score"]),
                num(r["dependents"]),
                1.0 if r["has_card"] == "true" else 0.0,
            ]
            for r in rows
        ],
        dtype=np.float32,
    )


def default_label(r, rng):
    """A plausible ground truth: heavier loans relative to income, low
    bureau scores, dependents and youth raise the risk of default."""
    bureau = float(r["bureau_score"]) if r["bureau_score"] else 620.0
    z = (
        -2.2
        + 2.5 * float(r["loan_amount"]) / float(r["income"])
        - 0.012 * (bureau - 620.0)
        + 0.25 * float(r["dependents"])
        - 0.3 * (r["has_card"] == "true")
        + 0.6 * (float(r["age"]) < 25)
    )
    return 1 if rng.random() < 1.0 / (1.0 + math.exp(-z)) else 0


def main():
    # Here, so that score_reference.py can use matrix() without them.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    with open("reference.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(11)
    y = np.array([default_label(r, rng) for r in rows], dtype=np.int64)
    with open("train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) + ["default"])
        w.writeheader()
        for r, label in zip(rows, y):
            w.writerow({**r, "default": int(label)})
    x = matrix(rows)
    models = {
        "champion": Pipeline(
            [
                ("impute", SimpleImputer(strategy="median")),
                ("scale", StandardScaler()),
                ("model", LogisticRegression(max_iter=1000)),
            ]
        ),
        "challenger": Pipeline(
            [
                ("impute", SimpleImputer(strategy="median")),
                ("model", GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=3)),
            ]
        ),
    }
    # JSON has no NaN: a missing value is null.
    rows32 = [[None if v != v else v for v in r] for r in x[:32].tolist()]
    expected = {"features": FEATURES, "rows": rows32, "models": {}}
    for name, pipe in models.items():
        pipe.fit(x, y)
        onx = convert_sklearn(
            pipe,
            initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
            options={id(pipe.steps[-1][1]): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        path = f"{name}.onnx"
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        label, proba = sess.run(None, {"features": x[:32]})
        expected["models"][name] = {
            "label": label.tolist(),
            "probabilities": proba.tolist(),
            "outputs": [o.name for o in sess.get_outputs()],
        }
        print(f"{name}: training accuracy {pipe.score(x, y):.3f}, {len(onx.SerializeToString())} bytes")
    # Two more shapes of output for the agent's tests: a multiclass
    # classifier with string labels (employment) and a regressor (loan amount).
    employment = np.array([r["employment"] for r in rows])
    others = {
        "employment": (
            Pipeline([("impute", SimpleImputer(strategy="median")), ("model", LogisticRegression(max_iter=1000))]),
            employment,
        ),
        "loan": (
            Pipeline([("impute", SimpleImputer(strategy="median")), ("model", LinearRegression())]),
            x[:, 2].astype(np.float64),
        ),
    }
    for name, (pipe, target) in others.items():
        cols = [0, 1, 3, 4, 5]  # every feature but the loan amount
        pipe.fit(x[:, cols], target)
        options = {id(pipe.steps[-1][1]): {"zipmap": False}} if name == "employment" else None
        onx = convert_sklearn(
            pipe,
            initial_types=[("features", FloatTensorType([None, len(cols)]))],
            options=options,
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        path = f"{name}.onnx"
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"features": x[:32][:, cols]})
        expected["models"][name] = {
            "inputs": [FEATURES[c] for c in cols],
            "outputs": [o.name for o in sess.get_outputs()],
            "values": [o.tolist() for o in outs],
        }
        print(f"{name}: {len(onx.SerializeToString())} bytes")
    with open("expected.json", "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
