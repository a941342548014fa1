#!/usr/bin/env bash
# driftwatch report against Evidently's DataDriftPreset on the same seeded
# 1M-row x 15-column Parquet files, in one run; prints wall times, peak
# memory and the ratios. Also times driftwatch alone on 100k rows x 1000
# numeric columns. Data goes to bench/data (ignored), Evidently into a venv.
#   usage: bench/report_vs_evidently.sh [ROWS] [WIDE_ROWS] [WIDE_COLS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
wide_rows=${2:-100000}
wide_cols=${3:-1000}
venv=.cache/pyfix
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import evidently, pyarrow' 2>/dev/null || "$venv/bin/pip" install -q 'evidently==0.7.23' 'pandas<3' scipy numpy pyarrow
cargo build --release -q -p driftwatch-collector --bin driftwatch
py="$venv/bin/python"
data=bench/data/mixed-$rows
[ -f "$data/current.parquet" ] || "$py" bench/gen_data.py mixed "$rows" "$data"
echo "mixed: $rows rows x 15 columns ($(nproc) cores)"
dw=$("$py" bench/measure.py target/release/driftwatch report --reference "$data/reference.parquet" --current "$data/current.parquet" --out "$data/driftwatch.json")
echo "  driftwatch report (all tests): $dw"
ev=$("$py" bench/measure.py "$py" bench/evidently_report.py "$data/reference.parquet" "$data/current.parquet" "$data/evidently.json")
echo "  evidently DataDriftPreset:     $ev"
"$py" - "$dw" "$ev" <<'PY'
import json, sys
d, e = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"  speed-up {e['wall_s'] / d['wall_s']:.1f}x wall time, memory {d['peak_rss_mb'] / e['peak_rss_mb']:.2f} of Evidently's peak")
PY
wide=bench/data/wide-$wide_rows-$wide_cols
[ -f "$wide/current.parquet" ] || "$py" bench/gen_data.py wide "$wide_rows" "$wide_cols" "$wide"
w=$("$py" bench/measure.py target/release/driftwatch report --reference "$wide/reference.parquet" --current "$wide/current.parquet" --out "$wide/driftwatch.json")
echo "wide: $wide_rows rows x $wide_cols numeric columns: driftwatch report $w"
