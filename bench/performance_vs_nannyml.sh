#!/usr/bin/env bash
# driftwatch performance against NannyML 0.13.1's CBPE on the same seeded
# binary classifier (100k reference rows, 1M analysis rows by default,
# Parquet, chunks of 10,000 rows, the six binary metrics), in one run:
# median wall times over RUNS runs each, peak memory, the ratios, and the
# largest difference between their estimates. Data goes to bench/data
# (ignored); NannyML runs from a throwaway venv.
#   usage: bench/performance_vs_nannyml.sh [REFERENCE_ROWS] [ANALYSIS_ROWS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
n_ref=${1:-100000}
n_ana=${2:-1000000}
runs=${3:-3}
chunk=10000
venv=.cache/pyfix-nannyml
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import nannyml, statsmodels, pyarrow' 2>/dev/null || "$venv/bin/pip" install -q 'nannyml==0.13.1' statsmodels pyarrow
export NML_DISABLE_USAGE_LOGGING=1
cargo build --release -q -p driftwatch-collector --bin driftwatch
py="$venv/bin/python"
data=bench/data/cbpe-$n_ref-$n_ana
[ -f "$data/analysis.parquet" ] || "$py" bench/gen_cbpe.py "$n_ref" "$n_ana" "$data"
echo "CBPE: $n_ref reference rows, $n_ana analysis rows, chunks of $chunk, $(nproc) cores, $runs runs each"
dw=$("$py" bench/measure.py "$runs" target/release/driftwatch performance --reference "$data/reference.parquet" \
    --analysis "$data/analysis.parquet" --task binary --target y --prediction yhat --score p \
    --chunk-size "$chunk" --out "$data/driftwatch.json")
echo "  driftwatch performance: $dw"
nml=$("$py" bench/measure.py "$runs" "$py" bench/nannyml_cbpe.py "$data/reference.parquet" "$data/analysis.parquet" "$chunk" "$data/nannyml.json")
echo "  nannyml CBPE:           $nml"
"$py" - "$dw" "$nml" "$data/driftwatch.json" "$data/nannyml.json" <<'PY'
import json, sys
d, n = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"  driftwatch is {n['median_wall_s'] / d['median_wall_s']:.1f}x faster (median wall time) "
      f"and peaks at {d['peak_rss_mb'] / n['peak_rss_mb']:.3f} of NannyML's memory")
ours = json.load(open(sys.argv[3]))
theirs = json.load(open(sys.argv[4]))
worst, compared = 0.0, 0
for c in ours["chunks"]:
    if c["period"] != "analysis":
        continue
    for m, v in theirs[c["key"]].items():
        a = c["metrics"][m]["value"]
        worst = max(worst, abs(a - v) / max(abs(v), 1e-12))
        compared += 1
print(f"  estimates compared: {compared}, largest relative difference {worst:.2e}")
PY
