#!/usr/bin/env bash
# Regenerates collector/tests/fixtures/stats_cases.json from SciPy and
# Evidently in a throwaway virtual environment (never needed by CI).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/pyfix
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q 'evidently==0.7.23' 'pandas<3' scipy numpy pyarrow
"$venv/bin/python" collector/tests/fixtures/generate.py collector/tests/fixtures/stats_cases.json
