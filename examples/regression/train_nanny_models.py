"""Trains DLE nanny models the way NannyML 0.13.1's DLE does and exports
each to ONNX for `driftwatch performance --task regression` and a model's
`estimation:` block.

NannyML's DLE fits, per metric, a LightGBM regressor with its default
hyperparameters on the reference's features and prediction, learning the
per-row loss: |y - p| (mae), |y - p| / max(eps, |y|) (mape), (y - p)^2
(mse, rmse), (log1p(y) - log1p(p))^2 (msle, rmsle). Text, category and
boolean features are categorical: missing values become the text
"NML_missing_value", the values are coded by their sorted order from 1
(0 for a value the reference never had) and LightGBM splits on them as
categories. mse and rmse learn the same loss, as msle and rmsle do, so
one model serves both (`--metrics` names the metrics; one file per loss).

Each ONNX file carries what driftwatch needs to feed it, as the metadata
property `driftwatch.nanny`: the metric, the input columns in order
(features, then the prediction) and each categorical column's categories.
Any model that maps those inputs (one float32 tensor [N, F]) to the
per-row loss can be used with the same metadata.

Run in a throwaway venv (never a runtime dependency of driftwatch):
    pip install 'lightgbm==4.5.0' onnxmltools onnx packaging pandas scikit-learn
    (onnxmltools imports packaging without declaring it)
    python train_nanny_models.py --reference R.csv --features a,b,c \
        --target y --prediction y_pred --out-dir nanny/
"""

import argparse
import json
import os

import numpy as np
import pandas as pd
from lightgbm import LGBMRegressor
from sklearn.preprocessing import OrdinalEncoder

MISSING = "NML_missing_value"
LOSSES = {"mae": "mae", "mape": "mape", "mse": "mse", "rmse": "mse", "msle": "msle", "rmsle": "msle"}


def is_categorical(column: pd.Series) -> bool:
    # NannyML's test (nannyml.base._column_is_categorical), and pandas 3's text dtype.
    return column.dtype in ["object", "string", "category", "bool"] or pd.api.types.is_string_dtype(column)


def fit_encoding(reference: pd.DataFrame, features):
    """Each categorical feature's categories, sorted, as OrdinalEncoder fits them."""
    categories = {}
    for name in sorted(features):
        if is_categorical(reference[name]):
            values = reference[name].astype("object").where(reference[name].notna(), MISSING)
            encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
            encoder.fit(values.to_numpy().reshape(-1, 1))
            categories[name] = [str(c) for c in encoder.categories_[0]]
    return categories


def encode(data: pd.DataFrame, features, prediction, categories) -> pd.DataFrame:
    """The nanny model's inputs: features then the prediction, categories coded from 1."""
    out = pd.DataFrame(index=data.index)
    for name in list(features) + [prediction]:
        if name in categories:
            values = data[name].astype("object").where(data[name].notna(), MISSING).map(str)
            codes = {c: float(i + 1) for i, c in enumerate(categories[name])}
            out[name] = values.map(lambda v: codes.get(v, 0.0)).astype("float64")
        else:
            out[name] = data[name].astype("float64")
    return out


def loss(metric: str, y_true: pd.Series, y_pred: pd.Series) -> pd.Series:
    if metric == "mae":
        return abs(y_true - y_pred)
    if metric == "mape":
        return abs(y_true - y_pred) / np.maximum(np.finfo(np.float64).eps, abs(y_true))
    if metric == "mse":
        return np.square(y_true - y_pred)
    if metric == "msle":
        return np.square(np.log1p(y_true) - np.log1p(y_pred))
    raise ValueError(f"unknown metric {metric!r}")


def train(reference: pd.DataFrame, features, target, prediction, metric, categories):
    """A nanny model for one loss, on the reference's rows whose target and prediction are known."""
    known = reference.dropna(subset=[target, prediction])
    x = encode(known, features, prediction, categories)
    model = LGBMRegressor()
    model.fit(x, loss(metric, known[target], known[prediction]),
              categorical_feature=[c for c in x.columns if c in categories])
    return model


def export(model, features, prediction, metric, categories, path):
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    columns = list(features) + [prediction]
    onx = convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, len(columns)]))],
                           target_opset=15, zipmap=False)
    meta = {
        "metric": metric,
        "inputs": [dict(name=c, **({"categories": categories[c]} if c in categories else {}))
                   for c in columns],
        "prediction": prediction,
    }
    prop = onx.metadata_props.add()
    prop.key = "driftwatch.nanny"
    prop.value = json.dumps(meta)
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True)
    ap.add_argument("--features", required=True, help="comma separated")
    ap.add_argument("--target", required=True)
    ap.add_argument("--prediction", required=True)
    ap.add_argument("--metrics", default="mae,mape,mse,msle")
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    reference = pd.read_csv(a.reference) if a.reference.endswith(".csv") else pd.read_parquet(a.reference)
    features = a.features.split(",")
    categories = fit_encoding(reference, features)
    os.makedirs(a.out_dir, exist_ok=True)
    for metric in sorted({LOSSES[m] for m in a.metrics.split(",")}):
        model = train(reference, features, a.target, a.prediction, metric, categories)
        path = os.path.join(a.out_dir, f"{metric}.onnx")
        export(model, features, a.prediction, metric, categories, path)
        print(path)


if __name__ == "__main__":
    main()
