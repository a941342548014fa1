"""NannyML 0.13.1's CBPE on the benchmark's files, as `driftwatch
performance` runs it: fit on the reference, estimate the analysis, the
six binary metrics, chunks of CHUNK_SIZE rows; writes the estimates as
JSON (chunk key → metric → value) for the comparison.

usage: nannyml_cbpe.py REFERENCE ANALYSIS CHUNK_SIZE OUT.json
"""

import json
import os
import sys

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import nannyml  # noqa: E402
import pandas as pd  # noqa: E402

METRICS = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"]


def main(reference, analysis, chunk_size, out):
    est = nannyml.CBPE(y_pred_proba="p", y_pred="yhat", y_true="y", problem_type="classification_binary",
                       metrics=METRICS, chunk_size=chunk_size)
    est.fit(pd.read_parquet(reference))
    res = est.estimate(pd.read_parquet(analysis)).to_df()
    values = {}
    for _, r in res.iterrows():
        if r[("chunk", "period")] == "analysis":
            values[r[("chunk", "key")]] = {m: float(r[(m, "value")]) for m in METRICS}
    with open(out, "w") as f:
        json.dump(values, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
