"""Writes a seeded binary classifier's reference and analysis sets for the
CBPE benchmark: `p` (the model's score, over-confident so it needs
calibration), `yhat` (p >= 0.5) and `y` (the truth, drawn from the true
probability); the analysis drifts (the true probabilities shift).

usage: gen_cbpe.py REFERENCE_ROWS ANALYSIS_ROWS OUT_DIR
"""

import os
import sys

import numpy as np
import pandas as pd


def frame(gen, n, shift):
    truth = np.clip(gen.beta(2, 2, n) + shift, 0.001, 0.999)
    y = (gen.uniform(0, 1, n) < truth).astype(np.int64)
    p = 1 / (1 + np.exp(-2.5 * np.log(truth / (1 - truth))))
    return pd.DataFrame({"p": p, "yhat": (p >= 0.5).astype(np.int64), "y": y})


def main(n_ref, n_ana, out):
    os.makedirs(out, exist_ok=True)
    gen = np.random.RandomState(2026)
    frame(gen, n_ref, 0.0).to_parquet(os.path.join(out, "reference.parquet"), index=False)
    frame(gen, n_ana, 0.1).to_parquet(os.path.join(out, "analysis.parquet"), index=False)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
