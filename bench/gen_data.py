"""Writes seeded benchmark datasets as Parquet (never committed).

usage: gen_data.py mixed ROWS OUTDIR      -> reference.parquet, current.parquet (~15 mixed columns)
       gen_data.py wide ROWS COLS OUTDIR  -> wide numeric reference/current
"""

import os
import sys

import numpy as np
import pandas as pd


def mixed(n, rng, drift):
    d = {
        "age": rng.normal(41 + (2 if drift else 0), 11, n),
        "income": rng.lognormal(10.6 - (0.1 if drift else 0), 0.45, n),
        "loan_amount": rng.gamma(2.0, 4000.0, n),
        "bureau_score": np.where(rng.random(n) < 0.03, np.nan, rng.normal(620, 70, n)),
        "utilisation": rng.beta(2, 5, n),
        "tenure_months": rng.exponential(40, n),
        "balance": rng.standard_t(3, n) * 1000,
        "rate": np.round(rng.normal(4.5, 0.8, n), 2),
        "num_accounts": rng.integers(0, 40, n),
        "days_since_last": rng.integers(0, 365, n),
        "dependents": rng.integers(0, 6, n),
        "region_code": rng.integers(1, 9, n),
        "country": rng.choice(["DE", "FR", "IT", "NL", "ES"] if drift else ["DE", "FR", "IT", "NL"], n),
        "employment": rng.choice(["salaried", "self-employed", "retired", "student", "other"], n),
        "has_card": rng.random(n) < (0.55 if drift else 0.62),
    }
    return pd.DataFrame(d)


def main():
    kind = sys.argv[1]
    if kind == "mixed":
        n, out = int(sys.argv[2]), sys.argv[3]
        os.makedirs(out, exist_ok=True)
        mixed(n, np.random.default_rng(1), False).to_parquet(f"{out}/reference.parquet")
        mixed(n, np.random.default_rng(2), True).to_parquet(f"{out}/current.parquet")
    elif kind == "wide":
        n, cols, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        os.makedirs(out, exist_ok=True)
        for name, seed, shift in [("reference", 3, 0.0), ("current", 4, 0.02)]:
            rng = np.random.default_rng(seed)
            data = {f"f{i:04d}": rng.normal(shift * (i % 5), 1.0, n) for i in range(cols)}
            pd.DataFrame(data).to_parquet(f"{out}/{name}.parquet")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
