"""Counts the columns on which driftwatch's and Evidently's default test and verdict agree."""

import json
import sys

NAMES = {"K-S p_value": "ks", "Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon",
         "chi-square p_value": "chisquare", "Z-test p_value": "ztest"}


def drifted(test, value, threshold):
    if test in ("ks", "cramer_von_mises"):
        return value <= threshold
    if test in ("chisquare", "ztest", "anderson"):
        return value < threshold
    return value >= threshold


dw = {c["name"]: c for c in json.load(open(sys.argv[1]))["columns"]}
agree, total = 0, 0
for m in json.load(open(sys.argv[2]))["metrics"]:
    cfg = m["config"]
    if not cfg["type"].endswith("ValueDrift"):
        continue
    total += 1
    test = NAMES[cfg["method"]]
    c = dw[cfg["column"]]
    same = c["default_test"] == test and c["drift"] == drifted(test, m["value"], cfg["threshold"])
    agree += same
    if not same:
        print(f"  differs on {cfg['column']}: evidently {test} {m['value']}, driftwatch {c['default_test']} drift={c['drift']}")
print(f"  default test and verdict agree on {agree} of {total} columns")
