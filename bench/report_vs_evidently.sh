#!/usr/bin/env bash
# driftwatch report against Evidently's DataDriftPreset on the same seeded
# 1M-row x 15-column Parquet files, in one run: median wall times over RUNS
# runs each, peak memory, the ratios, and whether the verdicts agree. Then
# driftwatch alone on 100k rows x 1000 numeric columns. Data goes to
# bench/data (ignored); Evidently runs from a throwaway venv.
#   usage: bench/report_vs_evidently.sh [ROWS] [WIDE_ROWS] [WIDE_COLS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
wide_rows=${2:-100000}
wide_cols=${3:-1000}
runs=${4:-3}
venv=.cache/pyfix
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import evidently, pyarrow' 2>/dev/null || "$venv/bin/pip" install -q 'evidently==0.7.23' 'pandas<3' scipy numpy pyarrow
cargo build --release -q -p driftwatch-collector --bin driftwatch
py="$venv/bin/python"
data=bench/data/mixed-$rows
[ -f "$data/current.parquet" ] || "$py" bench/gen_data.py mixed "$rows" "$data"
echo "mixed: $rows rows x 15 columns, $(nproc) cores, $runs runs each"
dw=$("$py" bench/measure.py "$runs" target/release/driftwatch report --reference "$data/reference.parquet" --current "$data/current.parquet" --out "$data/driftwatch.json")
echo "  driftwatch report (all tests): $dw"
ev=$("$py" bench/measure.py "$runs" "$py" bench/evidently_report.py "$data/reference.parquet" "$data/current.parquet" "$data/evidently.json")
echo "  evidently DataDriftPreset:     $ev"
"$py" - "$dw" "$ev" <<'PY'
import json, sys
d, e = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"  driftwatch is {e['median_wall_s'] / d['median_wall_s']:.1f}x faster (median wall time) "
      f"and peaks at {d['peak_rss_mb'] / e['peak_rss_mb']:.2f} of Evidently's memory")
PY
"$py" bench/compare_verdicts.py "$data/driftwatch.json" "$data/evidently.json"
wide=bench/data/wide-$wide_rows-$wide_cols
[ -f "$wide/current.parquet" ] || "$py" bench/gen_data.py wide "$wide_rows" "$wide_cols" "$wide"
w=$("$py" bench/measure.py "$runs" target/release/driftwatch report --reference "$wide/reference.parquet" --current "$wide/current.parquet" --out "$wide/driftwatch.json")
echo "wide: $wide_rows rows x $wide_cols numeric columns: driftwatch report $w"
