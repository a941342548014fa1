"""Runs Evidently 0.7's DataDriftPreset on two Parquet files (the comparison side of the benchmark)."""

import json
import sys
import warnings

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

warnings.filterwarnings("ignore")
ref = pd.read_parquet(sys.argv[1])
cur = pd.read_parquet(sys.argv[2])
snapshot = Report([DataDriftPreset()]).run(
    Dataset.from_pandas(cur, data_definition=DataDefinition()),
    Dataset.from_pandas(ref, data_definition=DataDefinition()),
)
with open(sys.argv[3], "w") as f:
    json.dump(snapshot.dict(), f, default=str)
