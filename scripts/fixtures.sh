#!/usr/bin/env bash
# Regenerates collector/tests/fixtures/stats_cases.json from SciPy and
# Evidently, and sequential_cases.json from gbstats, in throwaway virtual
# environments (never needed by CI).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/pyfix
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q 'evidently==0.7.23' 'pandas<3' scipy numpy pyarrow
"$venv/bin/python" collector/tests/fixtures/generate.py collector/tests/fixtures/stats_cases.json
# The sequential-test fixtures from GrowthBook's gbstats, in a venv of its
# own (its pins need not agree with Evidently's).
gbvenv=.cache/pyfix-gbstats
[ -x "$gbvenv/bin/python" ] || python3 -m venv "$gbvenv"
"$gbvenv/bin/pip" install -q 'gbstats==0.8.0'
"$gbvenv/bin/python" collector/tests/fixtures/generate_sequential.py collector/tests/fixtures/sequential_cases.json
# NannyML's calibration step (NumPy's legacy RandomState, scikit-learn's
# stratified splits and isotonic regression, NannyML 0.13.1's
# needs_calibration) in a venv of its own; NannyML imports statsmodels
# without declaring it, and would report usage without the variable.
nmlvenv=.cache/pyfix-nannyml
[ -x "$nmlvenv/bin/python" ] || python3 -m venv "$nmlvenv"
"$nmlvenv/bin/pip" install -q 'nannyml==0.13.1' statsmodels
NML_DISABLE_USAGE_LOGGING=1 "$nmlvenv/bin/python" collector/tests/fixtures/generate_calibration.py collector/tests/fixtures/calibration_cases.json
# DLE: the example script's nanny models (LightGBM 4.5.0, exported with
# onnxmltools) against NannyML's own, and NannyML's DLE estimates.
"$nmlvenv/bin/pip" install -q 'lightgbm==4.5.0' onnxmltools onnx 'onnxruntime==1.31.1'
NML_DISABLE_USAGE_LOGGING=1 "$nmlvenv/bin/python" -W ignore collector/tests/fixtures/generate_dle.py collector/tests/fixtures/dle
